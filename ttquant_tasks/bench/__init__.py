"""``ttquant bench``: the speed claims measured side by side in one run (see docs/benchmarks.md).

One module per measurement (``baseline``, ``pipeline``, ``hotpath``, ``orderflow``, ``queries``,
``outage``); ``env`` provides the private database/broker of a run, ``gate`` the loopback
fault injectors, ``procs`` the worker/feed subprocesses, ``report`` the pure table logic and
``runner`` ties them together.  Nothing here is imported by the production code.
"""
