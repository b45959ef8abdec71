"""The live surface's channels: `LiveChannel` (from `live/open` until closed: the provider
session, its adapter, the status, the server-side tool runs) and `LiveSocket` (the one
`/live/ws` connection a token admits to it).

Rules (reference meerkat-live.md, checklist section 11):

- every well-formed upgrade gets 101; the token is checked after it: a rejection is one
  `{"error":"invalid_token","reason":...}` frame then Close 1008 `invalid_token`, and leaves the
  channel open; an admitted socket's first frame is `{"observation":"ready"}` (the channel's
  status turns `ready` when it is sent);
- inbound (section 3.4): text input chunks; binary PCM only when `format=pcm_24k_mono` was
  negotiated; Ping answered; a text image gets `command_rejected`; malformed text, a bad
  base64, an unknown kind, binary without format, a Pong, a Close, a read error (over 2 MiB,
  invalid UTF-8) all close the channel and drop the socket with no frame; input before `ready`
  gets the `channel_not_ready` error frame;
- no reattach: whatever ends the socket ends the channel (status `closed` stays readable for
  60 s); `live/close` drops the socket without a frame; terminal errors drop it without
  publishing anything (0.7.0+), or, with `live_terminal="publish"`, send the `error`
  observation then Close 1008 `terminal:<code>` (0.6.5-0.6.x); a clean provider end sends
  `status_changed{closed}` then drops; the server never pings.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from . import live_wire as lw
from .wire import dumps
from .live_adapter import LiveAdapter
from .provider import FakeProvider
from .ws import ConnectionLost, WsConnection
from .ws_channel import WsChannel

if TYPE_CHECKING:
    from .host import Host, Session

log = logging.getLogger("meerkat_devserver.live")

STATUS_RETENTION_S = 60.0  # a closed channel's status stays readable this long
TOOL_RESULT = {"temperature_c": 24, "conditions": "sunny", "city": "Lisbon"}


class LiveChannel:
    def __init__(self, host: Host, session: Session, turning_mode: str):
        self.host = host
        self.session = session
        self.turning_mode = turning_mode
        self.id = str(uuid.uuid4())
        self.status = "opening"
        self.closed_at: float | None = None
        self.end_reason: str | None = None
        self.socket: LiveSocket | None = None
        self.tool_calls = 0
        self.tool_results = 0
        self.created = time.monotonic()
        self._tasks: set[asyncio.Task] = set()
        options = host.options
        self.adapter: LiveAdapter
        self.provider = FakeProvider(
            self.id, turning_mode, options, host.agent, host.ids, host.items, host.rng,
            lambda event: self.adapter.feed(event),
        )
        self.adapter = LiveAdapter(
            self.provider, turning_mode, host.ids, options.audio_lane_capacity,
            self._tool_call, self.terminate, self._user_turn, host.recorder.changed,
        )
        self.provider.start()

    def describe(self) -> dict:
        return {
            "id": self.id,
            "surface": "live",
            "session_id": self.session.session_id,
            "turning_mode": self.turning_mode,
            "status": self.status,
            "opened": self.socket is not None,
            "closed": self.status == "closed",
            "end_reason": self.end_reason,
            "audio_dropped": self.adapter.audio_dropped,
            "tool_calls": self.tool_calls,
            "tool_results": self.tool_results,
            "frames_in": self.socket.frames_in if self.socket is not None else 0,
        }

    @property
    def is_open(self) -> bool:
        return self.status != "closed"

    def expired(self) -> bool:
        """A closed channel is forgotten (live/status: not found) after the retention."""
        return self.closed_at is not None and time.monotonic() - self.closed_at > self.host.options.live_status_retention

    def spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _user_turn(self) -> None:
        self.session.history += 1

    # -- the server-side tool ---------------------------------------------------------------

    def _tool_call(self, call_id: str, name: str, arguments: object) -> None:
        self.tool_calls += 1
        self.spawn(self._run_tool(call_id, name))

    async def _run_tool(self, call_id: str, name: str) -> None:
        """The runtime runs the tool server-side (the WebSocket keeps flowing meanwhile), then
        submits its output: a success asks for the continuation response, an error does not."""
        opts, faults = self.host.options, self.host.faults
        timeout_ms = opts.live_tool_timeout_ms
        hang = faults.tool_hang
        duration = faults.tool_hang_for if hang else opts.tool_duration_ms / 1000
        timed_out = not hang and opts.tool_duration_ms > timeout_ms
        await asyncio.sleep(timeout_ms / 1000 if timed_out else duration)
        if not self.is_open:
            return
        if timed_out:
            self.adapter.submit_tool_error(call_id, f"tool {name} timed out after {timeout_ms} ms")
        elif opts.tool_outcome == "failed":
            self.adapter.submit_tool_error(call_id, f"tool {name} failed: devserver scripted failure")
        else:
            self.adapter.submit_tool_result(call_id, json.dumps(TOOL_RESULT))
        self.tool_results += 1
        self.host.recorder.changed()

    # -- ending -----------------------------------------------------------------------------

    def terminate(self, message: str) -> None:
        """A terminal adapter error: the channel closes; the socket is dropped with nothing
        published (0.7.0+) or after the error observation and Close 1008 (0.6.5)."""
        if not self.is_open:
            return
        log.info("live channel %s: terminal: %s", self.id, message)
        socket = self.socket
        publish = self.host.options.live_terminal == "publish"
        self.close(f"terminal: {message}", drop_socket=not publish)
        if socket is not None and publish:
            socket.spawn(socket.publish_terminal(message))

    def provider_eof(self) -> None:
        """The provider's stream ended cleanly: status_changed{closed}, then the socket drops."""
        if not self.is_open:
            return
        self.adapter.push(lw.status_changed("closed"))
        self.adapter.finish()
        self.provider.close()

    def close(self, reason: str, drop_socket: bool = True) -> None:
        if not self.is_open:
            return
        self.status = "closed"
        self.closed_at = time.monotonic()
        self.end_reason = reason
        self.provider.close()
        self.adapter.close()
        for task in list(self._tasks):
            task.cancel()
        if self.session.live is self:
            self.session.live = None
        if drop_socket and self.socket is not None:
            self.socket.end()
        self.host.recorder.changed()
        log.info("live channel %s: closed (%s)", self.id, reason)


class LiveSocket(WsChannel):
    surface = "live"

    def __init__(self, host: Host, conn: WsConnection, key: str, params: dict[str, str]):
        super().__init__(host, conn, key)
        self.params = params
        self.channel: LiveChannel | None = None
        self.binary_ok = params.get("format") == lw.BINARY_FORMAT  # an unknown format = absent
        self.admitted = False
        self._pump: asyncio.Task | None = None

    def describe(self) -> dict:
        return {"key": self.key, "admitted": self.admitted, "frames_in": self.frames_in,
                "end_reason": self.end_reason}

    async def send(self, frame: dict) -> None:
        if self.host.faults.unknown_fields and "observation" in frame:
            frame = dict(frame, devserver_extra={"ignore": True})
        await self.conn.send_text(dumps(frame))
        self.record_sent(frame)

    # -- the connection -------------------------------------------------------------------

    async def serve(self) -> None:
        try:
            if await self._admit():
                await self._read_loop()
        except ConnectionLost:
            pass
        finally:
            self.closed = True
            self._torn_down = True
            if self.channel is not None and self.channel.socket is self:
                self.channel.close(self.end_reason or "websocket closed")
            self.cancel_tasks()
            self.conn.end_silently()
            self.host.live_sockets.discard(self)
            self.host.recorder.changed()

    async def _admit(self) -> bool:
        token = self.params.get("token", "")
        channel_id = self.params.get("channel", "")
        reason = self.host.live_tokens.admit(token, channel_id, self.host.live_channel_open)
        if reason is not None:
            log.info("live ws: token refused: %s", reason)
            self.end_reason = f"invalid_token ({reason})"
            self.closed = True
            await self.send(lw.error_frame("invalid_token", reason))
            self.record_sent({"code": 1008, "reason": "invalid_token"}, "close")
            await self.conn.close_with(1008, "invalid_token")
            return False
        channel = self.host.live_channels[channel_id]
        self.channel = channel
        channel.socket = self
        self.admitted = True
        self.opened_at = time.monotonic()
        log.info("live channel %s: websocket admitted", channel_id)
        self._pump = self.spawn(self._run_pump(channel))
        return True

    async def _run_pump(self, channel: LiveChannel) -> None:
        """The observation pump: `ready` first, then control before audio."""
        faults = self.host.faults
        try:
            if faults.ready_delay > 0:
                delay = faults.ready_delay
                faults.consume("ready_delay")
                await asyncio.sleep(delay)
            if not channel.is_open:
                return
            await self.send(lw.ready())
            channel.status = "ready"
            self.host.recorder.changed()
            self.arm_timed_faults()
            while True:
                observation = await channel.adapter.next_out()
                if observation is None:
                    break
                await self.send(observation)
            if channel.adapter.finished:
                self.end_reason = "provider closed"
                channel.close("provider closed")
        except ConnectionLost:
            pass

    async def _read_loop(self) -> None:
        channel = self.channel
        assert channel is not None
        while not self.closed and channel.is_open:
            message = await self.conn.recv()
            if message is None:
                self.end_reason = self.end_reason or (
                    f"read error: {self.conn.read_error}" if self.conn.read_error else "websocket ended")
                return
            self.record(message)
            if message.kind == "close":
                self.end_reason = "client close"
                return
            if message.kind == "ping":
                pass  # answered by the transport, ignored by the handler
            elif message.kind == "pong":
                self.end_reason = "unsupported frame (pong)"
                log.info("live channel %s: unsupported WS frame (pong); closing", channel.id)
                return
            elif message.kind == "binary":
                if not self.binary_ok:
                    self.end_reason = "binary frame without a negotiated format"
                    log.info("live channel %s: binary frame without format; closing", channel.id)
                    return
                if await self._input({"kind": "audio", "pcm": message.data,
                                      "sample_rate_hz": lw.SAMPLE_RATE_HZ, "channels": lw.CHANNELS}, len(message.data)):
                    return
            else:
                try:
                    chunk = lw.parse_chunk_text(message.text)
                except (lw.ChunkError, UnicodeDecodeError) as exc:
                    self.end_reason = f"malformed input frame ({exc})"
                    log.info("live channel %s: malformed input frame: %s; closing", channel.id, exc)
                    return
                if await self._input(chunk, len(message.data)):
                    return
            if self.drop_due():
                await self.conn.wait_ended()
                return

    async def _input(self, chunk: dict, size: int) -> bool:
        """One input chunk from the socket; True when the loop must end."""
        channel = self.channel
        assert channel is not None
        if chunk["kind"] == "image":
            await self.send(lw.command_rejected(
                {"kind": "image_input_transport_unsupported", "transport": "direct_websocket_use_live_send_input_rpc"},
                lw.IMAGE_ON_WS))
            return False
        if channel.status != "ready":
            await self.send(lw.error_frame(lw.not_ready_message(channel.id, channel.status), "channel_not_ready"))
            return False
        faults = self.host.faults
        if faults.backpressure_inputs > 0:
            faults.consume("backpressure_inputs")
            await self.send(lw.backpressure_rejection(max(size, 64 << 10) * (2 if chunk["kind"] == "audio" else 3)))
            return False
        deliver(channel, chunk, self.key)
        return False

    # -- ending ---------------------------------------------------------------------------

    def end(self) -> None:
        """Drop the socket without a frame (the channel closed)."""
        self.closed = True
        self.conn.close_soon()

    async def publish_terminal(self, message: str) -> None:
        """0.6.5-0.6.x: the terminal error observation, then Close 1008 `terminal:<code>`."""
        try:
            await self.send(lw.terminal_error(message))
            self.record_sent({"code": 1008, "reason": "terminal:provider_error"}, "close")
            await self.conn.close_with(1008, "terminal:provider_error")
        except ConnectionLost:
            pass

    def current_ids(self) -> dict | None:
        channel = self.channel
        active = channel.provider.active if channel is not None else None
        if active is None or active.item is None:
            return None
        return {"response_id": active.id, "item_id": active.item_id, "content_index": 0}

    def arm_timed_faults(self) -> None:
        channel = self.channel
        assert channel is not None
        f = self.host.faults
        self.arm_transport_faults()
        if f.provider_error_at is not None:
            self.after(f.provider_error_at, "provider_error_at",
                       lambda: channel.terminate("devserver injected provider error"))
        if f.provider_close_at is not None:
            self.after(f.provider_close_at, "provider_close_at", channel.provider_eof)


def deliver(channel: LiveChannel, chunk: dict, key: Any) -> None:
    """Hand a decoded input chunk to the adapter (WS frames and live/send_input alike)."""
    adapter = channel.adapter
    kind = chunk["kind"]
    if kind == "audio":
        if adapter.send_audio(chunk["pcm"], chunk["sample_rate_hz"], chunk["channels"]):
            channel.host.recorder.audio(key, chunk["pcm"])
    elif kind == "text":
        adapter.send_text(chunk["text"])
    elif kind == "video_frame":
        adapter.send_video()


def parse_query(path: str) -> dict[str, str]:
    query = parse_qs(urlsplit(path).query, keep_blank_values=True)
    return {name: values[0] for name, values in query.items()}
