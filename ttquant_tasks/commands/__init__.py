"""Subcommands of ``ttquant``: each module has ``register(subparsers)`` adding its parsers with
``set_defaults(handler=fn)``, where ``fn(args, settings) -> exit status``."""

from __future__ import annotations

import argparse
from importlib import import_module

MODULES = ("stack", "feed", "market", "gateway", "db", "ops", "bench")


def register_all(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name in MODULES:
        try:
            module = import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue  # a command module not written yet
        module.register(sub)
