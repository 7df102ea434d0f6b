"""The Procfile's entries, as honcho reads them: ``name: command`` per line."""

from __future__ import annotations

import re
from pathlib import Path

PROCFILE = Path(__file__).resolve().parents[2] / "Procfile"


def procfile() -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in PROCFILE.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, command = line.partition(":")
        assert sep and re.fullmatch(r"[a-z_]+", name), f"bad Procfile line {line!r}"
        assert name not in entries, f"{name} twice in the Procfile"
        entries[name] = command.strip()
    return entries
