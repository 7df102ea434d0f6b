"""Loopback fault injectors: a cuttable TCP forwarder (database outage), a hung listener, a closed port.

:class:`Gate` forwards 127.0.0.1:<port> to an upstream server.  ``down()`` closes the listener and
every forwarded connection (clients see resets, then refused connects: like a crashed server);
``up()`` listens again on the same port.  The real server is never touched.
"""

from __future__ import annotations

import socket
import threading
from contextlib import suppress


def closed_port() -> int:
    """A loopback port nothing listens on (connects are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HungListener:
    """Accepts TCP connections and never reads or answers (a hung broker)."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = int(self._sock.getsockname()[1])
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="bench-hung", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._held.append(conn)

    def close(self) -> None:
        with suppress(OSError):
            self._sock.close()
        for conn in self._held:
            with suppress(OSError):
                conn.close()


class Gate:
    """TCP forwarder to ``(host, port)`` that can be cut (``down``) and restored (``up``)."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = closed_port()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.up()

    def up(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", self.port))
            s.listen(128)
            self._listener = s
        threading.Thread(target=self._accept, args=(s,), name="bench-gate", daemon=True).start()

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        for sock in ([listener] if listener else []) + conns:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with suppress(OSError):
                sock.close()

    close = down

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut while we were connecting
                    client.close()
                    server.close()
                    return
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
