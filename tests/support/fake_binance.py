"""A scriptable fake of Binance's combined trade stream and ``/api/v3/historicalTrades`` on 127.0.0.1.

One threaded TCP server on a random port speaks both HTTP (REST) and RFC 6455 websockets (handshake,
unmasked server text/ping/close frames, masked client frames), without third-party libraries.

A market thread publishes one trade per symbol every ``interval_s`` with consecutive ids; every
websocket connection streams the trades published after it connected (as Binance does), so two
overlapping connections see the same ids.  REST serves any published id.  Trade ``n`` of a symbol is a
pure function of ``n`` (:meth:`FakeBinance.trade`), so tests can check exact values.

Scripting (set before the connection it applies to is made):
``scripts[k]`` (k = 0-based connection number) is a :class:`ConnScript`; ``ws_skip`` holds
``(symbol, id)`` pairs never sent on any websocket; ``rest_429`` answers that many REST calls with 429
and ``Retry-After``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import socket
import socketserver
import struct
import threading
import time
import urllib.parse
from typing import Any

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
BASE_MS = 1_732_540_000_000


@dataclasses.dataclass
class ConnScript:
    """What one websocket connection does; counts are trade frames sent on it."""

    drop_after: int | None = None  # abort the TCP connection (no close frame)
    stale_after: int | None = None  # stop sending anything (pings too), keep the socket open
    close_after_s: float | None = None  # send a close frame at this age (Binance's 24 h limit)
    shutdown_after: int | None = None  # send serverShutdown, keep streaming, close 1 s later
    inject: dict[int, list[str]] = dataclasses.field(default_factory=dict)  # after N frames: raw frames


def _frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return header + payload


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk
    return buf


def _read_frame(sock: socket.socket) -> tuple[int, bytes]:
    b0, b1 = _recv_exact(sock, 2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", _recv_exact(sock, 2))
    elif n == 127:
        (n,) = struct.unpack("!Q", _recv_exact(sock, 8))
    mask = _recv_exact(sock, 4) if b1 & 0x80 else b"\0\0\0\0"
    data = bytes(b ^ mask[i % 4] for i, b in enumerate(_recv_exact(sock, n)))
    return b0 & 0x0F, data


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeBinance:
    """Start with :meth:`start` (or ``with``); ``ws_base`` / ``rest_base`` are the URLs to point clients at."""

    def __init__(
        self,
        symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT"),
        *,
        first_id: int = 1000,
        interval_s: float = 0.005,
        ping_interval_s: float = 0.5,
        history: int = 0,
    ) -> None:
        self.symbols = symbols
        self.interval_s, self.ping_interval_s = interval_s, ping_interval_s
        self.scripts: dict[int, ConnScript] = {}
        self.ws_skip: set[tuple[str, int]] = set()
        self.rest_429 = 0
        self.retry_after_s = 1
        self.rest_calls: list[tuple[int, dict[str, str]]] = []
        self.rest_api_keys: list[str | None] = []  # X-MBX-APIKEY of each REST call
        self.pongs: list[bytes] = []
        self.connections = 0
        self._first = {s: first_id + 100_000 * i for i, s in enumerate(symbols)}
        self._next = dict(self._first)
        self._log: list[tuple[str, int]] = []
        for _ in range(history):  # trades published before the server started (REST only)
            for s in symbols:
                self._log.append((s, self._next[s]))
                self._next[s] += 1
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._weight = 0
        fake = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                fake._handle(self.request)

        self._server = _Server(("127.0.0.1", 0), Handler)
        port = self._server.server_address[1]
        self.ws_base = f"ws://127.0.0.1:{port}"
        self.rest_base = f"http://127.0.0.1:{port}"
        self._threads = [
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True),
            threading.Thread(target=self._market, daemon=True),
        ]

    # -- market --------------------------------------------------------------------------------
    def start(self) -> FakeBinance:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        with self._cond:
            self._cond.notify_all()

    def __enter__(self) -> FakeBinance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def pause(self, paused: bool = True) -> None:
        """Stop (or resume) publishing trades; connections stay up and keep pinging."""
        if paused:
            self._paused.set()
        else:
            self._paused.clear()

    def _market(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self._paused.is_set():
                continue
            with self._cond:
                for s in self.symbols:
                    self._log.append((s, self._next[s]))
                    self._next[s] += 1
                self._cond.notify_all()

    def first_id(self, symbol: str) -> int:
        return self._first[symbol]

    def published(self, symbol: str) -> int:
        """Newest id published for ``symbol`` (first_id - 1 before any)."""
        with self._cond:
            return self._next[symbol] - 1

    @staticmethod
    def trade(symbol: str, trade_id: int) -> dict[str, Any]:
        """REST shape of trade ``trade_id`` (deterministic)."""
        price = f"{64000 + (trade_id % 100_000) / 100:.8f}"
        qty = f"0.{trade_id % 1000:03d}20000"
        return {
            "id": trade_id,
            "price": price,
            "qty": qty,
            "quoteQty": "0",
            "time": BASE_MS + trade_id,
            "isBuyerMaker": trade_id % 2 == 0,
            "isBestMatch": True,
        }

    @classmethod
    def ws_frame(cls, symbol: str, trade_id: int) -> str:
        """Combined-stream frame of trade ``trade_id``, shaped as Binance sends it."""
        t = cls.trade(symbol, trade_id)
        data = {
            "e": "trade",
            "E": t["time"] + 2,
            "s": symbol,
            "t": trade_id,
            "p": t["price"],
            "q": t["qty"],
            "T": t["time"],
            "m": t["isBuyerMaker"],
            "M": True,
        }
        return json.dumps({"stream": f"{symbol.lower()}@trade", "data": data}, separators=(",", ":"))

    # -- server ----------------------------------------------------------------------------
    def _handle(self, sock: socket.socket) -> None:
        sock.settimeout(5.0)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                return
            head += chunk
        lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        _method, target, _ = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
        url = urllib.parse.urlsplit(target)
        if url.path.startswith(("/stream", "/ws/")) and "sec-websocket-key" in headers:
            self._websocket(sock, headers["sec-websocket-key"])
        elif url.path == "/api/v3/historicalTrades":
            self.rest_api_keys.append(headers.get("x-mbx-apikey"))
            self._rest(sock, dict(urllib.parse.parse_qsl(url.query)))
        else:
            sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    def _http(self, sock: socket.socket, status: str, body: Any, extra: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        head = [f"HTTP/1.1 {status}", "Content-Type: application/json", f"Content-Length: {len(data)}"]
        head += [f"{k}: {v}" for k, v in extra.items()] + ["Connection: close", "", ""]
        sock.sendall("\r\n".join(head).encode() + data)

    def _rest(self, sock: socket.socket, query: dict[str, str]) -> None:
        with self._cond:
            limited = self.rest_429 > 0
            if limited:
                self.rest_429 -= 1
            self._weight += 25
            weight = self._weight
        if limited:
            self.rest_calls.append((429, query))
            body = {"code": -1003, "msg": "Too many requests."}
            self._http(sock, "429 Too Many Requests", body, {"Retry-After": str(self.retry_after_s)})
            return
        symbol = query.get("symbol", "")
        if symbol not in self._first:
            self.rest_calls.append((400, query))
            self._http(sock, "400 Bad Request", {"code": -1121, "msg": "Invalid symbol."}, {})
            return
        start = int(query.get("fromId", self.published(symbol)))
        limit = min(int(query.get("limit", 500)), 1000)
        last = min(start + limit - 1, self.published(symbol))
        trades = [self.trade(symbol, i) for i in range(max(start, self._first[symbol]), last + 1)]
        self.rest_calls.append((200, query))
        self._http(sock, "200 OK", trades, {"X-MBX-USED-WEIGHT-1M": str(weight)})

    def _websocket(self, sock: socket.socket, key: str) -> None:
        accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
        sock.sendall(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )
        with self._cond:
            number = self.connections
            self.connections += 1
            cursor = len(self._log)
        script = self.scripts.get(number, ConnScript())
        send_lock = threading.Lock()
        closed = threading.Event()

        def send(opcode: int, payload: bytes) -> None:
            with send_lock:
                sock.sendall(_frame(opcode, payload))

        def reader() -> None:  # client frames: pongs, pings, close
            try:
                sock.settimeout(None)
                while not closed.is_set():
                    opcode, data = _read_frame(sock)
                    if opcode == 0xA:
                        self.pongs.append(data)
                    elif opcode == 0x9:
                        send(0xA, data)
                    elif opcode == 0x8:
                        send(0x8, data[:2])
                        break
            except OSError:
                pass
            closed.set()

        threading.Thread(target=reader, daemon=True).start()
        opened = time.monotonic()
        next_ping = opened + self.ping_interval_s
        sent = 0
        shutdown_at: float | None = None
        try:
            while not closed.is_set() and not self._stop.is_set():
                now = time.monotonic()
                if (
                    script.close_after_s is not None
                    and now - opened >= script.close_after_s
                    or (shutdown_at is not None and now >= shutdown_at)
                ):
                    send(0x8, struct.pack("!H", 1000))
                    closed.wait(1.0)
                    return
                if now >= next_ping:
                    send(0x9, str(number).encode())
                    next_ping = now + self.ping_interval_s
                with self._cond:
                    if len(self._log) <= cursor:
                        self._cond.wait(0.05)
                    batch, cursor = self._log[cursor:], len(self._log)
                for symbol, trade_id in batch:
                    if (symbol, trade_id) not in self.ws_skip:
                        send(0x1, self.ws_frame(symbol, trade_id).encode())
                        sent += 1
                    for raw in script.inject.pop(sent, []):
                        send(0x1, raw.encode())
                    if script.shutdown_after is not None and sent >= script.shutdown_after and shutdown_at is None:
                        send(0x1, json.dumps({"e": "serverShutdown", "E": int(time.time() * 1000)}).encode())
                        shutdown_at = time.monotonic() + 1.0
                    if script.drop_after is not None and sent >= script.drop_after:
                        sock.shutdown(socket.SHUT_RDWR)
                        return
                    if script.stale_after is not None and sent >= script.stale_after:
                        while not closed.wait(0.1) and not self._stop.is_set():
                            pass  # silent: no data, no pings, socket open
                        return
        except OSError:
            pass
        finally:
            closed.set()
            sock.close()
