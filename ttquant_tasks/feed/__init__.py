"""The feed process: a tick source -> ZeroMQ PUB (best effort) + chunks -> broker (exactly once).

* ``sim`` / ``binance``: tick sources (iterators of :class:`~ttquant_tasks.models.Tick`).
* ``batching``: pure chunking by size and age.
* ``spool``: crash-safe on-disk FIFO of chunks the broker could not take.
* ``enqueuer``: the one thread that talks to the broker; the receive path never does.
* ``runner``: the receive loop tying them together; ``stats``: figures for ``ttquant status``.
"""
