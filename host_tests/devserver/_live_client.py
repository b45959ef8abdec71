"""An independent live-surface client for the conformance suite: JSON-RPC over a plain socket
and the `/live/ws` WebSocket through websocket-client (raw sockets where the library would
hide something). Nothing here imports the server's modules."""

from __future__ import annotations

import base64
import json
import socket
import struct
import time
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import websocket

from ._client import RpcClient

PCM_FORMAT = "pcm_24k_mono"


def rpc(srv, method: str, params: Any = None, req_id: Any = None) -> dict:
    """One request on a fresh connection; the whole response object."""
    client = RpcClient(srv.rpc_address)
    try:
        return client.request(method, params, req_id)
    finally:
        client.close()


def result(srv, method: str, params: Any = None) -> Any:
    reply = rpc(srv, method, params)
    assert "result" in reply, reply
    return reply["result"]


def error(srv, method: str, params: Any = None) -> dict:
    reply = rpc(srv, method, params)
    assert "error" in reply and "result" not in reply, reply
    return reply["error"]


def live_open(srv, **params) -> dict:
    params.setdefault("session_id", srv.session_id)
    return result(srv, "live/open", params)


def query(url: str) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


class Ended(Exception):
    """The socket ended; `close_frame` is (code, reason) when a Close frame came first."""

    def __init__(self, close_frame: tuple[int, str] | None):
        super().__init__(f"ended: {close_frame}")
        self.close_frame = close_frame


class LiveSocket:
    def __init__(self, url: str, timeout: float = 5.0, sockopt: tuple = ()):
        self.ws = websocket.create_connection(url, timeout=timeout, enable_multithread=True, sockopt=sockopt)
        self.raw: list[str] = []
        self.opcodes: list[int] = []

    def send_json(self, frame: Any) -> None:
        self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    def send_pcm(self, pcm: bytes) -> None:
        self.ws.send_binary(pcm)

    def stream_pcm(self, pcm: bytes, frame_ms: int = 40) -> None:
        step = 48 * frame_ms
        for off in range(0, len(pcm), step):
            self.ws.send_binary(pcm[off : off + step])

    def send_text(self, text: str) -> None:
        self.send_json({"kind": "text", "text": text})

    def send_audio_json(self, pcm: bytes, rate: int = 24000, channels: int = 1) -> None:
        self.send_json({"kind": "audio", "data": base64.b64encode(pcm).decode(), "sample_rate_hz": rate,
                        "channels": channels})

    def recv(self, timeout: float = 5.0) -> dict:
        """The next text frame as a dict; Ended when the socket ends."""
        self.ws.settimeout(timeout)
        while True:
            try:
                opcode, data = self.ws.recv_data(control_frame=True)
            except (websocket.WebSocketConnectionClosedException, ConnectionResetError, BrokenPipeError):
                raise Ended(None) from None
            self.opcodes.append(opcode)
            if opcode == websocket.ABNF.OPCODE_TEXT:
                text = data.decode("utf-8")
                self.raw.append(text)
                return json.loads(text)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                raise Ended((code, data[2:].decode("utf-8")))
            # pongs, pings: recorded in opcodes, keep reading

    def recv_until(self, pred: Callable[[dict], bool], timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        got: list[dict] = []
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no matching frame within {timeout} s; got {names(got)}"
            frame = self.recv(remaining)
            got.append(frame)
            if pred(frame):
                return got

    def recv_obs(self, name: str, timeout: float = 10.0) -> tuple[dict, list[dict]]:
        frames = self.recv_until(lambda f: f.get("observation") == name, timeout)
        return frames[-1], frames

    def expect_end(self, timeout: float = 5.0) -> tuple[tuple[int, str] | None, list[dict]]:
        """Read until the socket ends: (the close frame or None, the frames read meanwhile)."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            try:
                got.append(self.recv(max(0.01, deadline - time.monotonic())))
            except Ended as end:
                return end.close_frame, got
            except websocket.WebSocketTimeoutException:
                raise AssertionError(f"the server did not end the connection; got {names(got)}") from None

    def close(self) -> None:
        try:
            self.ws.close(timeout=0.2)
        except Exception:
            pass


def names(frames: list[dict]) -> list[str]:
    return [f.get("observation") or f"error:{f.get('reason')}" for f in frames]


def of(frames: list[dict], name: str) -> list[dict]:
    return [f for f in frames if f.get("observation") == name]


def connect(srv, turning_mode: str | None = None, session_id: str | None = None) -> tuple[LiveSocket, dict]:
    """live/open over TCP, the WebSocket, and its `ready`: (socket, the open result)."""
    params: dict[str, Any] = {"session_id": session_id or srv.session_id}
    if turning_mode is not None:
        params["turning_mode"] = turning_mode
    opened = result(srv, "live/open", params)
    sock = LiveSocket(opened["transport"]["url"])
    assert sock.recv() == {"observation": "ready"}
    return sock, opened


def raw_upgrade(host: str, port: int, path: str, extra: str = "") -> tuple[socket.socket, bytes, bytes]:
    """A hand-made upgrade request: (the socket, the response head up to the blank line, the
    bytes that already followed it)."""
    sock = socket.create_connection((host, port), timeout=5)
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + extra + "\r\n"
    )
    sock.sendall(request.encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return sock, head + b"\r\n\r\n", rest


def read_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it ends the connection (never replying)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def parse_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Unmasked server frames -> [(opcode, payload)]."""
    out = []
    i = 0
    while i + 2 <= len(data):
        opcode = data[i] & 0x0F
        length = data[i + 1] & 0x7F
        i += 2
        if length == 126:
            length = struct.unpack("!H", data[i : i + 2])[0]
            i += 2
        elif length == 127:
            length = struct.unpack("!Q", data[i : i + 8])[0]
            i += 8
        out.append((opcode, data[i : i + length]))
        i += length
    return out
