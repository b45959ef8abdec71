"""A scripted, misbehaving Meerkat server, for fault tests of the device.

The development server (tools/meerkat_tools/devserver) is realistic but well behaved. This one
speaks just enough of either surface to get a device connected, then does whatever a test's
script says: frames of any content (invalid JSON, invented event types, invalid UTF-8), raw
WebSocket frames (fragments at any cut, pings between fragments, Close with any code and
reason), pauses, waits for a client frame or an RPC call, a socket dropped with FIN or RST, or a
link that goes silent with the TCP connection left open. Every client frame and every RPC call
is recorded with a timestamp.

Both surfaces, on 127.0.0.1 with ephemeral ports, in one process (a thread runs its own asyncio
loop; `with Hostile.running("v2") as srv:`):

- JSON-RPC 2.0 over TCP JSON lines: `realtime/open_info` (protocol v2) or `live/open`,
  `live/close`, `live/interrupt`, `live/truncate`, `live/commit_input` (live). The other surface's
  methods answer -32601, as a server that does not have them does (a device on
  server.surface "auto" falls back on it). Answers can be scripted per method (`answers`).
- The WebSocket: v2 `/realtime/ws` (channel.open first, then channel.opened); live
  `/live/ws?token=&channel=&format=pcm_24k_mono` ({"observation":"ready"} first). The handshake
  is the script's first step (`await c.accept()`), so a script may refuse it instead.

The WebSocket is written by hand on asyncio streams (RFC 6455 framing is a few lines): a library
would refuse to send what these tests need (invalid UTF-8 in a text frame, a bad close reason).

Like the real servers: single-use tokens; live channels are one per session and stay open after a
refused token until live/close (meerkat-live.md 2.6); a live channel ends when its WebSocket ends,
unless the link went silent (the server never notices); after channel.closed (v2) the socket is
dropped without a Close frame.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import random
import struct
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0, 1, 2, 8, 9, 10
_OPS = {TEXT: "text", BINARY: "binary", CLOSE: "close", PING: "ping", PONG: "pong"}
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
V2_PATH = "/realtime/ws"
LIVE_PATH = "/live/ws"
FORMAT = {"mime_type": "audio/pcm", "sample_rate_hz": 24000, "channels": 1}
V2_CAPABILITIES = {
    "input_kinds": ["text", "audio"],
    "output_kinds": ["text", "audio"],
    "turning_modes": ["provider_managed", "explicit_commit"],
    "interrupt_supported": True,
    "transcript_supported": True,
    "tool_lifecycle_events_supported": True,
    "video_supported": False,
    "audio_input_format": FORMAT,
    "audio_output_format": FORMAT,
}
LIVE_CAPABILITIES = {
    "audio_in": True, "audio_out": True, "text_in": True, "text_out": True, "image_in": False,
    "video_in": False, "transcript_supported": True, "barge_in_supported": True,
    "provider_native_resume": False,
}


class ConnectionClosed(Exception):
    """The device's WebSocket is gone: nothing more can be sent or received."""


class ScriptTimeout(Exception):
    """A script waited for something the device never did."""


@dataclass
class Frame:
    """One client WebSocket message (fragments joined) or control frame."""

    t: float  # time.monotonic()
    conn: int  # 1-based WebSocket connection number
    op: str  # text, binary, ping, pong, close
    data: bytes
    json: Any = None  # text frames that parse

    @property
    def type(self) -> str | None:
        """v2: the frame's type (channel.input, ...); live: its kind (text, audio)."""
        if isinstance(self.json, dict):
            return self.json.get("type") or self.json.get("kind")
        return None

    @property
    def is_audio(self) -> bool:
        if self.op == "binary":
            return True  # live: the microphone as raw PCM
        j = self.json
        return isinstance(j, dict) and j.get("type") == "channel.input" and j.get("chunk", {}).get("kind") == "audio_chunk"

    @property
    def text_input(self) -> str | None:
        """The text of a text input frame (either surface), else None."""
        j = self.json
        if not isinstance(j, dict):
            return None
        if j.get("type") == "channel.input" and j.get("chunk", {}).get("kind") == "text_chunk":
            return j["chunk"]["text"]
        if j.get("kind") == "text":
            return j.get("text")
        return None


@dataclass
class Call:
    """One JSON-RPC request."""

    t: float
    method: str
    params: Any
    id: Any
    answer: Any = None  # what was sent back (a dict, or raw bytes)


Script = Callable[["Conn"], Awaitable[None]]
Answer = Callable[["Hostile", Call], "dict | bytes"]


# ---------------------------------------------------------------------------- audio and frames


def pcm(ms: int, seed: int, amp: int = 6000) -> bytes:
    """`ms` of 24 kHz mono PCM16LE noise, different for every seed: any 20 ms of it is unique, so
    the speaker recording tells which reply (and which part of it) was played."""
    rnd = random.Random(seed)
    n = ms * 24
    return struct.pack("<%dh" % n, *[rnd.randint(-amp, amp) for _ in range(n)])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def ev(etype: str, **fields: Any) -> dict:
    """A v2 channel.event."""
    return {"type": "channel.event", "event": dict(fields, type=etype)}


def audio_ev(chunk: bytes, **ids: Any) -> dict:
    """A v2 output_audio_chunk of PCM `chunk` (ids: the item_id extension, on the event)."""
    return ev("output_audio_chunk", chunk=dict(FORMAT, data=b64(chunk)), **ids)


def obs(name: str, **fields: Any) -> dict:
    """A live observation."""
    return dict(fields, observation=name)


def live_audio(chunk: bytes, response_id: str, item_id: str, content_index: int = 0) -> dict:
    return obs("assistant_audio_chunk", data=b64(chunk), sample_rate_hz=24000, channels=1,
               response_id=response_id, item_id=item_id, content_index=content_index)


def split(data: bytes, ms: int) -> list[bytes]:
    """PCM cut into chunks of `ms` (the last one shorter)."""
    step = ms * 48
    return [data[i : i + step] for i in range(0, len(data), step)]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _frame(op: int, payload: bytes, fin: bool = True) -> bytes:
    """A server frame (unmasked)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | op
    if n < 126:
        head = struct.pack("!BB", b0, n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, 126, n)
    else:
        head = struct.pack("!BBQ", b0, 127, n)
    return head + payload


# ---------------------------------------------------------------------------- one WebSocket


class Conn:
    """One accepted WebSocket and the script that runs on it (in the server's loop)."""

    def __init__(self, srv: "Hostile", n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 path: str, query: dict[str, str]):
        self.srv = srv
        self.n = n
        self.reader = reader
        self.writer = writer
        self.path = path
        self.query = query
        self.frames: list[Frame] = []  # this connection's client frames
        self._seen = 0  # recv() has consumed frames[:_seen]
        self._changed = asyncio.Event()
        self.ended = False  # the device's side is gone (EOF, Close, error)
        self.dropped = False  # we dropped it (FIN, RST) or went silent
        self.channel_id = query.get("channel")  # live
        self.role = "primary"
        self._reader_task: asyncio.Task | None = None
        self._replies = 0
        self._rpc_seen: dict[str, int] = {}

    # -- receiving

    async def _read_loop(self) -> None:
        parts: list[bytes] = []
        first_op = 0
        try:
            while True:
                h = await self.reader.readexactly(2)
                fin, op, n = h[0] & 0x80, h[0] & 15, h[1] & 127
                if n == 126:
                    n = struct.unpack("!H", await self.reader.readexactly(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
                key = await self.reader.readexactly(4) if h[1] & 0x80 else b"\0\0\0\0"
                raw = await self.reader.readexactly(n)
                payload = bytes(b ^ key[i & 3] for i, b in enumerate(raw)) if n < 256 else _unmask(raw, key)
                if op >= 8:
                    self._record(op, payload)
                    if op == PING and not self.dropped:
                        await self._write(_frame(PONG, payload))
                    elif op == CLOSE:
                        if not self.dropped:
                            with contextlib.suppress(ConnectionClosed):
                                await self._write(_frame(CLOSE, payload[:2]))
                            self._fin()
                        break
                    continue
                if op != CONT:
                    parts, first_op = [], op
                parts.append(payload)
                if fin:
                    self._record(first_op, b"".join(parts))
                    parts = []
        except (asyncio.IncompleteReadError, ConnectionError, OSError, ConnectionClosed):
            pass
        finally:
            self.ended = True
            self._changed.set()
            self.srv._conn_ended(self)

    def _record(self, op: int, data: bytes) -> None:
        parsed = None
        if op == TEXT:
            with contextlib.suppress(ValueError):
                parsed = json.loads(data)
        f = Frame(time.monotonic(), self.n, _OPS.get(op, str(op)), data, parsed)
        self.frames.append(f)
        self.srv._add(self.srv.frames, f)
        self._changed.set()

    async def recv(self, match: Callable[[Frame], bool] | None = None, timeout: float | None = 15.0,
                   what: str = "a client frame") -> Frame:
        """The next client frame (after those already received here) that matches. Raises
        ConnectionClosed when the connection ends first, ScriptTimeout after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            while self._seen < len(self.frames):
                f = self.frames[self._seen]
                self._seen += 1
                if match is None or match(f):
                    return f
            if self.ended:
                raise ConnectionClosed(f"connection {self.n} ended while waiting for {what}")
            self._changed.clear()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise ScriptTimeout(f"connection {self.n}: no {what} within {timeout} s")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def recv_type(self, ftype: str, timeout: float | None = 15.0) -> Frame:
        return await self.recv(lambda f: f.type == ftype, timeout, ftype)

    async def recv_text(self, timeout: float | None = 15.0) -> Frame:
        return await self.recv(lambda f: f.text_input is not None, timeout, "a text input")

    # -- sending

    async def _write(self, data: bytes) -> None:
        if self.dropped or self.writer.is_closing():
            raise ConnectionClosed(f"connection {self.n} is closed")
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise ConnectionClosed(f"connection {self.n}: {exc}") from None

    async def send(self, payload: bytes | str, op: int = TEXT, fin: bool = True) -> None:
        """One raw frame: any opcode, any bytes (a text frame need not be UTF-8), fin or not."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8", "surrogatepass")
        self.srv._sent(self.n, op, payload)
        await self._write(_frame(op, payload, fin))

    async def send_json(self, obj: Any) -> None:
        await self.send(_dumps(obj))

    async def send_all(self, objs: list[Any]) -> None:
        for obj in objs:
            await self.send_json(obj)

    async def send_fragments(self, payload: bytes | str, cuts: list[int], op: int = TEXT, ping: bool = False) -> None:
        """One message in fragments cut at the given offsets; with ping, a Ping between each."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8", "surrogatepass")
        bounds = [0, *sorted(cuts), len(payload)]
        pieces = [payload[a:b] for a, b in zip(bounds, bounds[1:])]
        self.srv._sent(self.n, op, payload)
        for i, piece in enumerate(pieces):
            await self._write(_frame(op if i == 0 else CONT, piece, i == len(pieces) - 1))
            if ping and i < len(pieces) - 1:
                await self._write(_frame(PING, b"hostile"))

    async def close(self, code: int, reason: bytes | str = b"") -> None:
        """A Close frame, then the socket is dropped at once (as the real servers do)."""
        if isinstance(reason, str):
            reason = reason.encode()
        await self.send(struct.pack("!H", code) + reason, CLOSE)
        self._fin()

    def _fin(self) -> None:
        self.dropped = True
        self.srv._dropped(self)
        self.writer.close()

    async def fin(self) -> None:
        """Drop the socket with a FIN (no Close frame)."""
        self._fin()

    async def reset(self) -> None:
        """Drop the socket with an RST."""
        self.dropped = True
        self.srv._dropped(self)
        self.writer.transport.abort()

    async def go_silent(self) -> None:
        """The link dies without a word: nothing is read or answered any more (pings included),
        nothing is sent, and the TCP connection stays open. The server never notices."""
        self.dropped = True
        self.srv._silent(self)
        if self._reader_task is not None:
            self._reader_task.cancel()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def rpc_call(self, method: str, timeout: float = 15.0) -> Call:
        """Wait for the device's next JSON-RPC call of `method` (after those already seen here)."""
        deadline = time.monotonic() + timeout
        seen = self._rpc_seen.get(method, 0)
        while True:
            calls = self.srv.rpc(method)
            if len(calls) > seen:
                self._rpc_seen[method] = seen + 1
                return calls[seen]
            if time.monotonic() > deadline:
                raise ScriptTimeout(f"connection {self.n}: no {method} call within {timeout} s")
            await asyncio.sleep(0.02)

    async def signalled(self, name: str, timeout: float = 15.0) -> Any:
        """Wait for the test to call srv.signal(name, value); returns the value."""
        deadline = time.monotonic() + timeout
        while name not in self.srv.signals:
            if time.monotonic() > deadline:
                raise ScriptTimeout(f"connection {self.n}: no signal {name!r} from the test within {timeout} s")
            await asyncio.sleep(0.02)
        return self.srv.signals[name]

    # -- the surfaces

    async def accept(self, timeout: float = 15.0) -> None:
        """The surface's handshake: v2 channel.open -> channel.opened; live {"observation":"ready"}
        (the token was checked when the connection came in; a bad one is refused here)."""
        srv = self.srv
        if srv.surface == "v2":
            f = await self.recv(None, timeout, "channel.open")
            j = f.json if isinstance(f.json, dict) else {}
            if j.get("type") != "channel.open":
                await self.refuse_v2("expected_channel_open", "first realtime websocket frame must be channel.open")
                return
            if not srv._take_token(j.get("open_token")):
                await self.refuse_v2("invalid_open_token", "invalid open token")
                return
            self.role = j.get("role", "primary")
            await self.send_json({"type": "channel.opened", "protocol_version": "2",
                                  "status": {"state": "ready", "attempt_count": 0},
                                  "capabilities": V2_CAPABILITIES, "role": self.role})
        else:
            why = srv._admit(self)
            if why is not None:
                await self.refuse_token(why)
                return
            await self.send_json(obs("ready"))

    async def refuse_v2(self, code: str, message: str) -> None:
        """A refused channel.open: channel.error, channel.closed, Close 1008 (v2 4.1)."""
        await self.send_json({"type": "channel.error", "code": code, "message": message})
        await self.send_json({"type": "channel.closed", "reason": code})
        await self.close(1008, code)

    async def refuse_token(self, reason: str = "token expired") -> None:
        """live: the WebSocket's token refusal, then Close 1008 invalid_token (live 3.3). The
        channel stays open on the server."""
        if self.channel_id in self.srv.channels:
            self.srv.channels[self.channel_id]["token_used"] = True
        await self.send_json({"error": "invalid_token", "reason": reason})
        await self.close(1008, "invalid_token")

    async def serve(self) -> None:
        """The friendly rest of a connection: every text input gets a short reply; v2
        channel.close gets channel.closed{client_closed} and the socket dropped."""
        try:
            while True:
                f = await self.recv(lambda f: f.text_input is not None or f.type == "channel.close", None,
                                    "a text input or channel.close")
                if f.type == "channel.close":
                    await self.send_json({"type": "channel.closed", "reason": "client_closed"})
                    await self.fin()
                    return
                await self.reply(f.text_input or "")
        except ConnectionClosed:
            return

    def next_ids(self) -> tuple[str, str]:
        """(response_id, item_id) of the next reply on this connection."""
        self._replies += 1
        return f"resp_{self.n}_{self._replies}", f"item_{self.n}_{self._replies}"

    async def user_turn(self, text: str) -> None:
        """What the server says about a user's text turn before the reply (provider_managed)."""
        if self.srv.surface == "v2":
            await self.send_all([ev("turn_started"), ev("input_transcript_partial", text=text),
                                 ev("input_transcript_final", text=text), ev("turn_committed")])
        else:
            ready = obs("status_changed", status={"status": "ready"})
            await self.send_all([ready, ready, ready, obs("user_transcript_final", provider_item_id=f"user_{self.n}",
                                                             content_index=0, text=text)])

    async def reply(self, text: str = "", audio: bytes | None = None, words: str = "Here you are.",
                    chunk_ms: int = 100, completed: bool = True, user: bool = True) -> None:
        """A whole reply to a text turn: the user turn's events, the assistant's words and audio
        (default: 400 ms of noise unique to this reply), then turn_completed."""
        if user:
            await self.user_turn(text)
        rid, item = self.next_ids()
        if audio is None:
            audio = pcm(400, seed=hash((self.n, self._replies)) & 0xFFFF)
        v2 = self.srv.surface == "v2"
        if v2:
            await self.send_json(ev("output_text_delta", delta=words))
        else:
            await self.send_all([
                obs("realtime_transcript", event={"type": "item_observed", "item_id": item, "previous_item_id": None,
                                                  "role": "assistant", "response_id": rid}),
                obs("assistant_transcript_delta", provider_item_id=item, content_index=0, response_id=rid, delta=words),
            ])
        for chunk in split(audio, chunk_ms):
            await self.send_json(audio_ev(chunk) if v2 else live_audio(chunk, rid, item))
        if completed:
            await self.send_json(ev("turn_completed") if v2 else obs("turn_completed", response_id=rid, stop_reason="end_turn",
                                                                    usage={"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}))


def _unmask(raw: bytes, key: bytes) -> bytes:
    # XOR in one go through big integers: the device's audio is 25 frames a second.
    n = len(raw)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(raw, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


# ---------------------------------------------------------------------------- the server


class Hostile:
    """The scripted server. Configure `scripts` (one per WebSocket connection, in order; then
    `default_script`) and `answers` (per RPC method, one per call, in order; then the default
    answer) before the device connects; read `frames`, `calls`, `tokens` from any thread."""

    def __init__(self, surface: str = "v2"):
        if surface not in ("v2", "live"):
            raise ValueError("surface must be v2 or live")
        self.surface = surface
        self.session_id = str(uuid.uuid4())
        self.target = {"type": "session_target", "session_id": self.session_id}
        self.scripts: list[Script] = []
        self.upgrade_answers: list[bytes] = []  # raw HTTP answers to the next upgrade requests
        self.answers: dict[str, list[Answer | dict | bytes]] = {}
        self.frames: list[Frame] = []
        self.calls: list[Call] = []
        self.sent: list[tuple[float, int, int, bytes]] = []  # (t, conn, opcode, payload head)
        self.tokens: list[str] = []  # every token minted (v2 open tokens, live tokens)
        self.channels: dict[str, dict] = {}  # live: channel_id -> {token, token_used, state, conn}
        self.conns: list[Conn] = []
        self.errors: list[str] = []  # scripts that failed (raised, or waited in vain)
        self.signals: dict[str, Any] = {}  # from the test to its scripts (Conn.signalled)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.rpc_address: tuple[str, int] = ("", 0)
        self.ws_port = 0
        self._cond = threading.Condition()
        self._v2_tokens: set[str] = set()
        self._silenced: set[Conn] = set()
        self._servers: list[asyncio.base_events.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()

    @staticmethod
    async def default_script(c: Conn) -> None:
        await c.accept()

    # -- recording (any thread may read; the loop writes)

    def _add(self, lst: list, item: Any) -> None:
        with self._cond:
            lst.append(item)
            self._cond.notify_all()

    def _sent(self, conn: int, op: int, payload: bytes) -> None:
        self._add(self.sent, (time.monotonic(), conn, op, payload[:300]))

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"server: timed out after {timeout} s waiting for {what}; errors: {self.errors}")
                self._cond.wait(min(left, 0.25))

    def signal(self, name: str, value: Any = True) -> None:
        """Tell the scripts something only the test knows (Conn.signalled)."""
        with self._cond:
            self.signals[name] = value

    def client_frames(self, ftype: str | None = None, conn: int | None = None) -> list[Frame]:
        with self._cond:
            return [f for f in self.frames if (ftype is None or f.type == ftype) and (conn is None or f.conn == conn)]

    def audio_frames(self, conn: int | None = None) -> list[Frame]:
        with self._cond:
            return [f for f in self.frames if f.is_audio and (conn is None or f.conn == conn)]

    def rpc(self, method: str | None = None) -> list[Call]:
        with self._cond:
            return [c for c in self.calls if method is None or c.method == method]

    # -- lifecycle

    async def start(self) -> "Hostile":
        self.loop = asyncio.get_running_loop()
        rpc = await asyncio.start_server(self._tracked(self._rpc), "127.0.0.1", 0, limit=1 << 20)
        ws = await asyncio.start_server(self._tracked(self._ws), "127.0.0.1", 0, limit=1 << 16)
        self._servers += [rpc, ws]
        self.rpc_address = rpc.sockets[0].getsockname()[:2]
        self.ws_port = ws.sockets[0].getsockname()[1]
        return self

    def _tracked(self, handler):
        async def run(reader, writer):
            self._writers.add(writer)
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass  # the device went away: its business
            except Exception as exc:  # a test server must say what went wrong, not hide it
                self.errors.append(f"{handler.__name__}: {exc!r}")
            finally:
                self._writers.discard(writer)
                if task is not None:
                    self._tasks.discard(task)
                writer.close()

        return run

    async def stop(self) -> None:
        for s in self._servers:
            s.close()
        for w in list(self._writers):
            w.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.sleep(0)

    @classmethod
    @contextlib.contextmanager
    def running(cls, surface: str = "v2") -> Iterator["Hostile"]:
        """The server on its own loop in a background thread for the `with` block."""
        srv = cls(surface)
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(srv.start())
            started.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        thread = threading.Thread(target=run, name="hostile-server", daemon=True)
        thread.start()
        if not started.wait(10):
            raise RuntimeError("the hostile server did not start")
        try:
            yield srv
        finally:
            asyncio.run_coroutine_threadsafe(srv.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)

    # -- JSON-RPC

    async def _rpc(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            line = await reader.readline()
            if not line:
                return
            if not line.strip():
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                writer.write(_dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}}) + b"\n")
                await writer.drain()
                continue
            call = Call(time.monotonic(), msg.get("method"), msg.get("params"), msg.get("id"))
            answer = self._answer(call)
            call.answer = answer
            self._add(self.calls, call)
            if isinstance(answer, dict):
                answer = _dumps(dict({"jsonrpc": "2.0", "id": call.id}, **answer))
            writer.write(answer if answer.endswith(b"\n") else answer + b"\n")
            await writer.drain()

    def _answer(self, call: Call) -> dict | bytes:
        queue = self.answers.get(call.method)
        if queue:
            scripted = queue.pop(0)
            return scripted(self, call) if callable(scripted) else scripted
        return self.default_answer(call)

    def default_answer(self, call: Call) -> dict:
        """What a well-behaved server of this surface answers: {"result": ...} or {"error": ...}."""
        handler = {
            ("v2", "realtime/open_info"): self._open_info,
            ("live", "live/open"): self._live_open,
            ("live", "live/close"): self._live_close,
            ("live", "live/interrupt"): lambda p: self._live_verb(p, "interrupted"),
            ("live", "live/truncate"): lambda p: self._live_verb(p, "truncated"),
            ("live", "live/commit_input"): lambda p: self._live_verb(p, "committed"),
        }.get((self.surface, call.method))
        if handler is None:
            return _error(-32601, f"Method not found: {call.method}")
        return handler(call.params if isinstance(call.params, dict) else {})

    def mint(self) -> str:
        token = str(uuid.uuid4())
        with self._cond:
            self.tokens.append(token)
        return token

    def _open_info(self, params: dict) -> dict:
        target = params.get("target")
        if not isinstance(target, dict) or target.get("session_id") != self.session_id:
            return _error(-32001, "session not found")
        token = self.mint()
        self._v2_tokens.add(token)
        return {"result": {
            "ws_url": f"ws://127.0.0.1:{self.ws_port}{V2_PATH}",
            "open_token": token,
            "expires_at": "2099-01-01T00:00:00.000000000+00:00",
            "target": target,
            "supported_protocol_versions": ["2"],
            "default_protocol_version": "2",
            "capabilities": V2_CAPABILITIES,
        }}

    def _take_token(self, token: Any) -> bool:
        if token in self._v2_tokens:
            self._v2_tokens.discard(token)  # single use
            return True
        return False

    def _live_open(self, params: dict) -> dict:
        sid = params.get("session_id")
        if sid != self.session_id:
            return _error(-32602, f"session {sid} not found")
        if any(ch["state"] == "open" for ch in self.channels.values()):
            return _error(-32602, f"session {sid} already has an active live channel")
        cid, token = str(uuid.uuid4()), self.mint()
        self.channels[cid] = {"token": token, "token_used": False, "state": "open", "conn": None}
        url = f"ws://127.0.0.1:{self.ws_port}{LIVE_PATH}?token={token}&channel={cid}&format=pcm_24k_mono"
        return {"result": {"channel_id": cid, "transport": {"transport": "websocket", "url": url, "token": token},
                           "capabilities": LIVE_CAPABILITIES, "continuity": {"mode": "fresh"}}}

    def _live_close(self, params: dict) -> dict:
        cid = str(params.get("channel_id"))
        ch = self.channels.get(cid)
        if ch is None or ch["state"] != "open":
            return _error(-32602, f"channel {cid} not found")
        ch["state"] = "closed"
        conn = ch["conn"]
        if conn is not None and not conn.dropped:
            conn._fin()  # the adapter's stream ends: the WebSocket is dropped
        return {"result": {"status": "closed"}}

    def _live_verb(self, params: dict, status: str) -> dict:
        ch = self.channels.get(str(params.get("channel_id")))
        if ch is None or ch["state"] != "open":
            return _error(-32602, f"channel {params.get('channel_id')} not found")
        return {"result": {"status": status}}

    def _admit(self, conn: Conn) -> str | None:
        """live: the token admission (meerkat-live.md 2.6): None, or the refusal's reason."""
        token, cid = conn.query.get("token"), conn.query.get("channel")
        known = [ch for ch in self.channels.values() if ch["token"] == token]
        if not known:
            return "token not found"
        ch = known[0]
        if ch["token_used"]:
            return "token already consumed"
        ch["token_used"] = True
        if self.channels.get(cid or "") is not ch:
            return "token bound to a different channel"
        if ch["state"] != "open":
            return "channel not bound"
        ch["conn"] = conn
        return None

    def _conn_ended(self, conn: Conn) -> None:
        # live: a WebSocket that ends after admission ends its channel (unless it went silent:
        # then the server does not know).
        if conn not in self._silenced:
            self._dropped(conn)
        with self._cond:
            self._cond.notify_all()

    def _dropped(self, conn: Conn) -> None:
        ch = self.channels.get(conn.channel_id or "")
        if ch is not None and ch["conn"] is conn:
            ch["state"] = "closed"

    def _silent(self, conn: Conn) -> None:
        self._silenced.add(conn)

    # -- WebSocket

    async def _ws(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if self.upgrade_answers:
            writer.write(self.upgrade_answers.pop(0))
            await writer.drain()
            return
        lines = head.decode("latin-1").split("\r\n")
        target = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else "/"
        headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:] if l)}
        url = urlsplit(target)
        want = V2_PATH if self.surface == "v2" else LIVE_PATH
        key = headers.get("sec-websocket-key")
        if url.path != want or not key:
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return
        accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
        writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        await writer.drain()
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        conn = Conn(self, len(self.conns) + 1, reader, writer, url.path, query)
        self.conns.append(conn)
        conn._reader_task = asyncio.ensure_future(conn._read_loop())
        script = self.scripts.pop(0) if self.scripts else self.default_script
        try:
            await script(conn)
            if not conn.dropped and not conn.ended:
                await conn.serve()
        except ConnectionClosed:
            pass
        except Exception as exc:
            self.errors.append(f"script of connection {conn.n}: {exc!r}")
        if conn in self._silenced:
            # A dead link holds its socket open until the server stops.
            await asyncio.Event().wait()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await conn._reader_task


def _error(code: int, message: str) -> dict:
    return {"error": {"code": code, "message": message}}
