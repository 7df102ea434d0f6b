"""Small file-system helpers shared by the spool, the gateway journal, backups and the archive."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file or a directory by path: its data, or (for a directory) its entries -- a rename or
    a new file is durable only once its directory has been synced."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
