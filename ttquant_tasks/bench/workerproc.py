"""Child process: ``celery -A ttquant_tasks worker <args>``, plus one line on stderr when ready.

The same app and worker as the command line; the only addition is a ``worker_ready`` hook, so
the bench can run the worker at ``--loglevel WARNING`` (no per-task log lines costing CPU) and
still know when it consumes.
"""

from __future__ import annotations

import sys
from typing import Any

READY = "bench-worker-ready"


def main(argv: list[str]) -> None:
    from celery.signals import worker_ready

    import ttquant_tasks

    def ready(**_: Any) -> None:
        print(READY, file=sys.__stderr__, flush=True)

    worker_ready.connect(ready, weak=False)
    ttquant_tasks.app.worker_main(["worker", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
