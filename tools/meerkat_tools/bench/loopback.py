"""The benchmark's other end of the socket: a CPython WebSocket endpoint on 127.0.0.1 that the
MicroPython side connects to (real HTTP upgrade, so every client under test runs its own
handshake), and that either drains what the client sends or streams server frames at it.

    /sink/<id>                 answer the upgrade, then read and count every byte until EOF;
                               the first 256 KB are kept to check the frames afterwards
    /down/<id>?ms=M&n=N        answer the upgrade, then send N output_audio_chunk messages of
                               M ms each (unmasked server frames, back to back, as fast as the
                               socket takes them), then drain until EOF; &surface=live: the
                               live surface's assistant_audio_chunk observations instead

Each connection runs in its own thread of the benchmark's (host) process, so the drain costs
the MicroPython process nothing but the socket writes it would do anyway.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import socket
import struct
import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KEEP = 256 * 1024


def audio_chunk_message(ms: int, seq: int, rng: random.Random) -> bytes:
    """One output_audio_chunk message exactly as the development server sends it (compact
    JSON, item ids on, data last)."""
    from ..devserver import wire

    pcm = bytes(rng.getrandbits(8) for _ in range(ms * 48))
    event = {
        "type": "output_audio_chunk",
        "item_id": "item_1",
        "response_id": "resp_1",
        "content_index": 0,
        "chunk": dict(wire.audio_format(), data=base64.b64encode(pcm).decode("ascii")),
    }
    return wire.dumps(wire.event_frame(event)).encode()


def live_audio_message(ms: int, seq: int, rng: random.Random) -> bytes:
    """One assistant_audio_chunk observation as Meerkat's live surface sends it (data first,
    the ids after it)."""
    pcm = bytes(rng.getrandbits(8) for _ in range(ms * 48))
    obs = {
        "observation": "assistant_audio_chunk",
        "data": base64.b64encode(pcm).decode("ascii"),
        "sample_rate_hz": 24000,
        "channels": 1,
        "response_id": "resp_1",
        "item_id": "item_1",
        "content_index": 0,
    }
    return json.dumps(obs, separators=(",", ":")).encode()


def server_frame(payload: bytes, opcode: int = 1) -> bytes:
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


@dataclass
class Connection:
    path: str
    received: int = 0
    sent: int = 0
    head: bytearray = field(default_factory=bytearray)  # first KEEP bytes after the upgrade
    closed: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


class LoopbackPeer:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections: dict[str, Connection] = {}
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._stop = True
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "LoopbackPeer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def connection(self, ident: str, timeout: float = 5.0) -> Connection | None:
        """The connection whose path carried /<ident> (waits for its EOF, bounded)."""
        with self._lock:
            found = [c for p, c in self.connections.items() if p.split("?")[0].endswith("/" + ident)]
        if not found:
            return None
        found[0].closed.wait(timeout)
        return found[0]

    # ------------------------------------------------------------------ per connection

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        record = Connection(path="?")
        try:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            head, _, rest = request.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else "/"
            key = ""
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "sec-websocket-key":
                    key = value.strip()
            accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
            record.path = path
            with self._lock:
                self.connections[path] = record
            conn.sendall(
                (
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
                ).encode()
            )
            record.head += rest[:KEEP]
            record.received += len(rest)
            if path.startswith("/down"):
                threading.Thread(target=self._drain, args=(conn, record), daemon=True).start()
                q = parse_qs(urlsplit(path).query)
                ms = int(q.get("ms", ["40"])[0])
                n = int(q.get("n", ["10"])[0])
                rng = random.Random(ms)
                message = live_audio_message if q.get("surface", ["v2"])[0] == "live" else audio_chunk_message
                frames = [server_frame(message(ms, i, rng)) for i in range(4)]
                for i in range(n):
                    f = frames[i % len(frames)]
                    conn.sendall(f)
                    record.sent += len(f)
                return  # the drain thread finishes the connection
            self._drain(conn, record)
        except OSError as exc:
            record.error = str(exc)
            record.closed.set()
        finally:
            if not record.path.startswith("/down"):
                conn.close()

    def _drain(self, conn: socket.socket, record: Connection) -> None:
        buf = bytearray(1 << 16)
        try:
            while True:
                n = conn.recv_into(buf)
                if not n:
                    break
                if len(record.head) < KEEP:
                    record.head += buf[: min(n, KEEP - len(record.head))]
                record.received += n
        except OSError as exc:
            record.error = str(exc)
        finally:
            record.closed.set()
            if record.path.startswith("/down"):
                conn.close()


def parse_client_frames(data: bytes) -> tuple[list[tuple], int]:
    """Client frames at the start of a stream: [(opcode, wire bytes, unmasked payload, masked,
    mask key)] and the number of bytes left over (a frame cut by the KEEP limit)."""
    out = []
    i = 0
    while i + 2 <= len(data):
        b0, b1 = data[i], data[i + 1]
        n = b1 & 127
        h = 2
        if n == 126:
            if i + 4 > len(data):
                break
            n = struct.unpack_from("!H", data, i + 2)[0]
            h = 4
        elif n == 127:
            if i + 10 > len(data):
                break
            n = struct.unpack_from("!Q", data, i + 2)[0]
            h = 10
        masked = b1 & 0x80
        if masked:
            h += 4
        if i + h + n > len(data):
            break
        payload = data[i + h : i + h + n]
        if masked:
            key = data[i + h - 4 : i + h]
            rep = (key * (n // 4 + 1))[:n]
            payload = (int.from_bytes(payload, "big") ^ int.from_bytes(rep, "big")).to_bytes(n, "big") if n else b""
        out.append((b0 & 15, h + n, payload, bool(masked), data[i + h - 4 : i + h] if masked else b""))
        i += h + n
    return out, len(data) - i


def check_uplink_stream(data: bytes, frame_bytes: int, binary: bool = False) -> dict:
    """Validate the first frames a client sent: masked text frames carrying a channel.input audio
    chunk of frame_bytes of PCM (protocol v2), or masked binary frames of frame_bytes of raw PCM
    (the live surface), with varying mask keys. Returns a small report."""
    frames, _ = parse_client_frames(bytes(data))
    report: dict = {"frames_checked": 0, "ok": True, "problems": []}
    keys = set()
    for opcode, size, payload, masked, key in frames[:50]:
        report["frames_checked"] += 1
        if opcode != (2 if binary else 1) or not masked:
            report["ok"] = False
            report["problems"].append(f"opcode {opcode}, masked {masked}")
            break
        keys.add(bytes(key))
        if binary:
            if len(payload) != frame_bytes:
                report["ok"] = False
                report["problems"].append(f"frame {report['frames_checked']}: {len(payload)} bytes")
                break
            report.setdefault("frame_wire_bytes", size)
            continue
        try:
            msg = json.loads(payload)
            chunk = msg["chunk"]
            pcm = base64.b64decode(chunk["data"], validate=True)
            if (
                msg["type"] != "channel.input"
                or chunk["kind"] != "audio_chunk"
                or chunk["sample_rate_hz"] != 24000
                or chunk["channels"] != 1
                or chunk["mime_type"] != "audio/pcm"
                or len(pcm) != frame_bytes
            ):
                raise ValueError("unexpected content")
        except (ValueError, KeyError, TypeError) as exc:
            report["ok"] = False
            report["problems"].append(f"frame {report['frames_checked']}: {exc}")
            break
        report.setdefault("frame_wire_bytes", size)
    if report["frames_checked"] >= 4 and len(keys) < 2:
        report["ok"] = False
        report["problems"].append("the mask key never changes")
    if not report["frames_checked"]:
        report["ok"] = False
        report["problems"].append("no complete frame received")
    return report
