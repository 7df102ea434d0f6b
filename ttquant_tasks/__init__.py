"""ttquant-tasks: TTQuant's persistence backend on Celery.

``celery -A ttquant_tasks worker`` finds :data:`app` here.  Importing the package is cheap: the
app's settings (and any embedded service) are resolved only when its configuration is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .tasks.app import TTQuantCelery

    app: TTQuantCelery

_app: Any = None


def __getattr__(name: str) -> Any:
    # Lazy, so `import ttquant_tasks` (the CLI, unit tests) does not import Celery.
    global _app
    if name in ("app", "celery"):
        if _app is None:
            from .tasks.app import make_app

            _app = make_app()
        return _app
    raise AttributeError(f"module 'ttquant_tasks' has no attribute {name!r}")
