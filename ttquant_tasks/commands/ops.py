"""``ttquant backup`` and ``ttquant restore``: the operator's side of :mod:`ttquant_tasks.ops`."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import TextIO

from ..settings import Settings, mask_url
from . import args as a


def _embedded_bin(embedded: bool) -> Path | None:
    if not embedded:
        return None
    from ..services.embedded import pg_bin_dir

    return pg_bin_dir()


def _tools_for_dump(file: Path) -> Path | None:
    """The embedded PostgreSQL tools when the dump was made by a newer pg_dump than the one on PATH
    (pg_restore cannot read archives of a newer pg_dump); None to use PATH."""
    from ..ops.backup import find_tool, tool_version
    from ..ops.restore import read_sidecar

    try:
        made_by = int(read_sidecar(file).get("pg_dump_version", 0))
        on_path = tool_version(find_tool("pg_restore", None))
    except Exception:  # no sidecar or no pg_restore on PATH: restore() reports that clearly
        return None
    if made_by <= on_path:
        return None
    try:
        return _embedded_bin(True)
    except Exception:  # the embedded extra is not installed
        return None


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    from ..ops.backup import backup

    resolved = a.resolved(settings, broker=False)
    assert resolved.db_uri is not None
    directory = args.dir or resolved.backups_path
    result = backup(resolved.db_uri, directory, args.keep or resolved.backup_keep,
                    pg_bin=_embedded_bin(settings.db_uri is None))
    print(json.dumps(result.as_dict(), indent=2))
    return 0


class Progress:
    """One status line per restored item: rewritten in place on a terminal, appended otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.width = shutil.get_terminal_size((100, 20)).columns - 1

    def __call__(self, line: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + line[: self.width])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    from ..ops.restore import restore

    if args.into:
        into, embedded = args.into, False
    else:
        resolved = a.resolved(settings, broker=False)
        assert resolved.db_uri is not None
        into, embedded = resolved.db_uri, settings.db_uri is None
    progress = Progress(sys.stderr)
    try:
        pg_bin = _embedded_bin(embedded) or _tools_for_dump(args.file)
        report = restore(args.file, into, force=args.force, progress=progress, pg_bin=pg_bin)
    finally:
        progress.done()
    print(json.dumps(report, indent=2, default=str))
    return 0


def _db_uri(raw: str) -> str:
    scheme = raw.split("://", 1)[0] if "://" in raw else ""
    if scheme not in ("postgresql", "postgresql+psycopg2", "postgres"):
        raise argparse.ArgumentTypeError(f"expected a postgresql:// URI, got {mask_url(raw)!r}")
    return raw


def register(sub: a.SubParsers) -> None:
    bk = sub.add_parser("backup", help="pg_dump -Fc to the backup directory, verified, keep N")
    bk.add_argument("--dir", type=Path, default=None, help="backup directory (default TTQUANT_BACKUP_DIR)")
    bk.add_argument("--keep", type=a.positive_int, default=None, help="backups kept (default TTQUANT_BACKUP_KEEP)")
    bk.set_defaults(handler=cmd_backup)

    rs = sub.add_parser("restore", help="restore a backup into an empty database and verify row counts")
    rs.add_argument("file", type=Path, metavar="FILE", help="a ttquant-*.dump file (with .sha256 and .json)")
    rs.add_argument("--into", type=_db_uri, default=None, metavar="DB_URI", help="target database (default DB_URI)")
    rs.add_argument("--force", action="store_true", help="replace existing tables (pg_restore --clean)")
    rs.set_defaults(handler=cmd_restore)
