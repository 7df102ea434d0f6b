"""A minimal hand-written protobuf encoder, independent of the protobuf library: what old TTQuant
clients do (plain wire rules, fields in number order, zero values omitted)."""

from __future__ import annotations

import struct


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32/int64 are sent as 10-byte two's complement
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def f_varint(field: int, n: int) -> bytes:
    return varint(field << 3 | 0) + varint(n)


def f_double(field: int, x: float) -> bytes:
    return varint(field << 3 | 1) + struct.pack("<d", x)


def f_string(field: int, s: str) -> bytes:
    raw = s.encode()
    return varint(field << 3 | 2) + varint(len(raw)) + raw


def legacy_order(order_id: str, strategy_id: str, symbol: str, volume: int, side: str, timestamp: int,
                 price: float = 0.0) -> bytes:
    """An ``Order`` as old clients hand-encode it: no field 8 (exact quantity), zero price omitted."""
    out = f_string(1, order_id) + f_string(2, strategy_id) + f_string(3, symbol)
    if price:
        out += f_double(4, price)
    return out + f_varint(5, volume) + f_string(6, side) + f_varint(7, timestamp)
