"""Machine facts recorded with every report (cpu count and model, python, load)."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from .report import Figure


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def info() -> dict[str, Figure]:
    load1, _, _ = os.getloadavg()
    return {
        "machine_cpu_count": os.cpu_count() or 0,
        "machine_cpu_model": cpu_model(),
        "machine_python": sys.version.split()[0],
        "machine_platform": platform.platform(),
        "machine_load1_at_start": round(load1, 2),
    }
