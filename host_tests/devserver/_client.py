"""An independent protocol client for the conformance suite: plain sockets for JSON-RPC,
http.client for REST, websocket-client for the channel. Nothing here imports the server's
modules, so the tests check the server against the reference, not against itself."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import struct
import time
import wave
from pathlib import Path
from typing import Any, Callable

import websocket

FIXTURES = Path(__file__).resolve().parents[2] / "tools" / "meerkat_tools" / "fixtures"
AUDIO_FORMAT = {"mime_type": "audio/pcm", "sample_rate_hz": 24000, "channels": 1}
FAST_POLICY = {"max_attempts": 3, "initial_backoff_ms": 20, "max_backoff_ms": 40, "max_total_ms": 5000}


def fixture_pcm(name: str) -> bytes:
    with wave.open(str(FIXTURES / name), "rb") as wav:
        return wav.readframes(wav.getnframes())


def silence(ms: int) -> bytes:
    return b"\x00\x00" * (24 * ms)


def tone(ms: int, amplitude: int = 8000, hz: int = 220) -> bytes:
    import math

    return b"".join(
        struct.pack("<h", int(amplitude * math.sin(2 * math.pi * hz * n / 24000))) for n in range(24 * ms)
    )


# -- bootstrap ----------------------------------------------------------------------------


class RpcClient:
    """JSON-RPC 2.0 over TCP, one JSON object per line."""

    def __init__(self, address: tuple[str, int], timeout: float = 5.0):
        self.sock = socket.create_connection(address, timeout=timeout)
        self.file = self.sock.makefile("rb")
        self._id = 0

    def send_line(self, raw: bytes) -> None:
        self.sock.sendall(raw + b"\n")

    def read(self) -> dict:
        line = self.file.readline()
        assert line, "rpc connection closed"
        return json.loads(line)

    def request(self, method: str, params: Any = None, req_id: Any = None) -> dict:
        self._id += 1
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": self._id if req_id is None else req_id, "method": method}
        if params is not None:
            msg["params"] = params
        self.send_line(json.dumps(msg).encode())
        return self.read()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def target(srv) -> dict:
    return {"type": "session_target", "session_id": srv.session_id}


def open_params(srv, role="primary", mode="provider_managed", policy=None) -> dict:
    params: dict[str, Any] = {"target": target(srv), "role": role, "turning_mode": mode}
    if policy is not None:
        params["reconnect_policy"] = policy
    return params


def rpc_open_info(srv, role="primary", mode="provider_managed", policy=None) -> dict:
    client = RpcClient(srv.rpc_address)
    try:
        reply = client.request("realtime/open_info", open_params(srv, role, mode, policy))
    finally:
        client.close()
    assert "result" in reply, reply
    return reply["result"]


def rest_post(srv, path: str, body: Any, raw: bytes | None = None, method: str = "POST",
              content_type: str | None = "application/json") -> tuple[int, Any]:
    """(status, body): JSON bodies parsed, text/plain bodies as ("text/plain", text)."""
    host, port = srv.rest_url[len("http://") :].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        payload = raw if raw is not None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if content_type is not None else {}
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        data = response.read()
        kind = (response.getheader("Content-Type") or "").split(";")[0]
        if kind == "text/plain":
            return response.status, ("text/plain", data.decode())
        return response.status, (json.loads(data) if data else None)
    finally:
        conn.close()


# -- the channel --------------------------------------------------------------------------


class Closed(Exception):
    """The socket ended. `close_frame` is (code, reason) if a WebSocket Close frame came."""

    def __init__(self, close_frame: tuple[int, str] | None):
        super().__init__(f"closed: {close_frame}")
        self.close_frame = close_frame


class Channel:
    def __init__(self, url: str, timeout: float = 5.0):
        self.ws = websocket.create_connection(url, timeout=timeout, enable_multithread=True)
        self.raw: list[str] = []  # every text frame received, as sent by the server

    def send(self, frame: Any) -> None:
        self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    def send_audio(self, pcm: bytes, fmt: dict | None = None) -> None:
        chunk = {"kind": "audio_chunk", **(fmt or AUDIO_FORMAT), "data": base64.b64encode(pcm).decode()}
        self.send({"type": "channel.input", "chunk": chunk})

    def stream_audio(self, pcm: bytes, frame_ms: int = 40) -> None:
        step = 48 * frame_ms
        for off in range(0, len(pcm), step):
            self.send_audio(pcm[off : off + step])

    def send_text(self, text: str) -> None:
        self.send({"type": "channel.input", "chunk": {"kind": "text_chunk", "text": text}})

    def recv(self, timeout: float = 5.0) -> dict:
        """The next text frame as a dict; raises Closed when the socket ends."""
        self.ws.settimeout(timeout)
        while True:
            try:
                opcode, data = self.ws.recv_data(control_frame=True)
            except websocket.WebSocketConnectionClosedException:
                raise Closed(None) from None
            except ConnectionResetError:
                raise Closed(None) from None
            if opcode == websocket.ABNF.OPCODE_TEXT:
                text = data.decode("utf-8")
                self.raw.append(text)
                return json.loads(text)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                raise Closed((code, data[2:].decode("utf-8")))
            # pongs and anything else: keep reading

    def recv_until(self, pred: Callable[[dict], bool], timeout: float = 10.0) -> list[dict]:
        """Frames up to and including the first one matching `pred`."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no matching frame within {timeout} s; got {summary(got)}"
            frame = self.recv(remaining)
            got.append(frame)
            if pred(frame):
                return got

    def recv_event(self, event_type: str, timeout: float = 10.0) -> tuple[dict, list[dict]]:
        frames = self.recv_until(lambda f: is_event(f, event_type), timeout)
        return frames[-1]["event"], frames

    def expect_end(self, timeout: float = 5.0) -> tuple[int, str] | None:
        """Read until the socket ends; returns the close frame (None if dropped without one)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.recv(max(0.01, deadline - time.monotonic()))
            except Closed as end:
                return end.close_frame
            except websocket.WebSocketTimeoutException:
                raise AssertionError("the server did not end the connection") from None

    def sentinel(self) -> list[dict]:
        """Send an unparsable frame and return every frame that arrived before its
        invalid_frame answer: frames are processed in order, so anything the server emitted
        synchronously for earlier frames is in this list (no sleeping needed)."""
        self.send("sentinel")
        frames = self.recv_until(lambda f: f.get("type") == "channel.error" and f.get("code") == "invalid_frame")
        return frames[:-1]

    def close(self) -> None:
        try:
            self.ws.close(timeout=0.2)
        except Exception:
            pass


def is_event(frame: dict, event_type: str | None = None) -> bool:
    return frame.get("type") == "channel.event" and (event_type is None or frame["event"]["type"] == event_type)


def events(frames: list[dict]) -> list[dict]:
    return [f["event"] for f in frames if f.get("type") == "channel.event"]


def event_types(frames: list[dict]) -> list[str]:
    return [e["type"] for e in events(frames)]


def summary(frames: list[dict]) -> list[str]:
    out = []
    for f in frames:
        if f.get("type") == "channel.event":
            out.append(f["event"]["type"])
        elif f.get("type") == "channel.error":
            out.append(f"error:{f.get('code')}")
        else:
            out.append(str(f.get("type")))
    return out


def open_frame(token: str, role="primary", mode="provider_managed", version: Any = "2") -> dict:
    return {"type": "channel.open", "protocol_version": version, "open_token": token, "role": role, "turning_mode": mode}


def connect(srv, role="primary", mode="provider_managed", policy=None, via_rpc=False) -> tuple[Channel, dict]:
    """Bootstrap (in-process, or over TCP), open, and return the channel and channel.opened."""
    info = rpc_open_info(srv, role, mode, policy) if via_rpc else srv.open_info(role, mode, policy)
    ch = Channel(info["ws_url"])
    ch.send(open_frame(info["open_token"], role, mode))
    opened = ch.recv()
    assert opened["type"] == "channel.opened", opened
    return ch, opened
