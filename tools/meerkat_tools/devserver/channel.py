"""One `/realtime/ws` connection: the first-frame decision table, the in-session rules, status
emission, observer fan-out, timed faults and the ways a channel ends.

Reference sections: 4.1 (first message), 1.6 (open checks, via tokens.py), 5.1-5.9 (in-session
rules), 6.1 (status emission), 6.3 (observers), 2 (how the server ends a connection: 1008 close
after handshake failures; `channel.closed` then a dropped socket without a close frame for
every in-session termination; silence when the client closes or the transport fails).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from typing import TYPE_CHECKING, Any

from . import reconnect, wire
from .agent import AgentError, AgentFatal, VoiceAgent
from .faults import injected_payload
from .tokens import OpenError, token_prefix
from .ws import ConnectionLost, Message, WsConnection

if TYPE_CHECKING:
    from .host import RealtimeHost

log = logging.getLogger("meerkat_devserver.channel")

CONTROL_FRAMES = (
    "channel.input",
    "channel.commit_turn",
    "channel.interrupt",
    "channel.barge_in_truncate",
)
OBSERVER_QUEUE = 128  # the broadcast capacity: a lagging observer silently loses frames


class Channel:
    def __init__(self, host: RealtimeHost, conn: WsConnection, cid: int):
        self.host = host
        self.conn = conn
        self.id = cid
        self.role: str | None = None
        self.mode: str | None = None
        self.policy: dict = dict(host.options.reconnect_policy)
        self.agent: VoiceAgent | None = None
        self.opened = False
        self.opened_at: float | None = None
        self.closed = False  # no more frames will be sent
        self.end_reason: str | None = None
        self.provider = "ready"  # "ready", "reconnecting", "gone" (clean provider close)
        self.frames_in = 0
        self.last_status: dict | None = None
        self._tasks: set[asyncio.Task] = set()
        self._reconnect: asyncio.Task | None = None
        self._torn_down = False
        self._outbox: asyncio.Queue | None = None  # observers only

    def describe(self) -> dict:
        return {
            "id": self.id,
            "role": self.role,
            "turning_mode": self.mode,
            "opened": self.opened,
            "closed": self.closed,
            "end_reason": self.end_reason,
            "provider": self.provider,
            "status": dict(self.last_status) if self.last_status else None,
            "frames_in": self.frames_in,
        }

    # -- sending ------------------------------------------------------------------------

    async def send(self, frame: dict, fanout: bool = False) -> None:
        if self._outbox is not None:  # observers send through their queue
            self._enqueue(frame)
            return
        await self.conn.send_text(wire.dumps(frame))
        self.host.recorder.sent(self.id, frame)
        if fanout and self.role == "primary":
            for observer in list(self.host.target.observers):
                observer._enqueue(frame)

    async def send_error(self, code: str, message: str, details: dict | None = None) -> None:
        await self.send(wire.error_frame(code, message, details))

    async def emit_event(self, event: dict) -> None:
        await self.send(wire.event_frame(event), fanout=True)

    async def emit_status(self, status: dict, needs_reattach: bool = False) -> None:
        """Section 6.1: channel.status then status_changed, only when it differs from the last
        status this channel sent; needs_reattach follows at the start of a reconnect cycle."""
        self.host.target.set_status(status)
        if status == self.last_status:
            return
        self.last_status = dict(status)
        await self.send(wire.status_frame(status), fanout=True)
        await self.emit_event({"type": "status_changed", "status": status})
        if needs_reattach:
            await self.emit_event({"type": "needs_reattach"})

    # -- observers ----------------------------------------------------------------------

    def _enqueue(self, frame: dict) -> None:
        if self._outbox is None or self.closed:
            return
        try:
            self._outbox.put_nowait(frame)
        except asyncio.QueueFull:
            self.host.observer_frames_lost += 1

    def poll_status(self) -> None:
        """An observer's own status poll: queue the pair when the target's status changed."""
        status = self.host.target.status
        if status == self.last_status or self._outbox is None:
            return
        self.last_status = dict(status)
        self._enqueue(wire.status_frame(status))
        self._enqueue(wire.event_frame({"type": "status_changed", "status": status}))

    async def _observer_pump(self) -> None:
        assert self._outbox is not None
        try:
            while True:
                frame = await self._outbox.get()
                await self.conn.send_text(wire.dumps(frame))
                self.host.recorder.sent(self.id, frame)
        except ConnectionLost:
            pass

    # -- the connection -----------------------------------------------------------------

    async def serve(self) -> None:
        try:
            if await self._open():
                await self._session()
        except ConnectionLost:
            pass
        finally:
            await self.teardown()

    def _record(self, message: Message) -> None:
        if message.kind in ("text", "binary"):
            self.frames_in += 1
        self.host.recorder.received(self.id, message.kind, message.data)

    async def _reject(self, code: str, message: str) -> bool:
        """Handshake failure: error, closed{code}, then a WebSocket Close 1008 with the code."""
        log.info("channel %d: open refused: %s", self.id, code)
        self.closed = True
        self.end_reason = code
        await self.send_error(code, message)
        await self.send(wire.closed_frame(code))
        self.host.recorder.sent(self.id, {"code": 1008, "reason": code}, kind="close")
        await self.conn.close_with(1008, code)
        return False

    async def _open(self) -> bool:
        message = await self.conn.recv()
        if message is None:
            return False
        self._record(message)
        if message.kind == "close":
            return False
        if message.kind != "text":
            return await self._reject("expected_channel_open", wire.MSG_EXPECTED_OPEN)
        try:
            text = message.text
        except UnicodeDecodeError:
            return False  # a transport error: silent return
        try:
            frame = wire.parse_client_frame(text)
        except wire.FrameError as exc:
            return await self._reject("invalid_frame", str(exc))
        if frame["type"] != "channel.open":
            return await self._reject("expected_channel_open", wire.MSG_EXPECTED_OPEN)
        host, target = self.host, self.host.target
        try:
            grant = host.tokens.redeem(
                frame["open_token"], frame["role"], frame["turning_mode"], host.realm
            )
        except OpenError as exc:
            return await self._reject(exc.code, exc.message)
        log.info("channel %d: token %s redeemed (%s)", self.id, token_prefix(grant.token), grant.role)
        if grant.role == "primary" and target.primary is not None:
            return await self._reject("target_busy", wire.OPEN_ERROR_MESSAGES["target_busy"])
        self.role, self.mode, self.policy = grant.role, grant.turning_mode, grant.reconnect_policy
        if self.role == "primary":
            target.primary = self
            target.set_status(wire.status_opening())
        faults = host.faults
        if faults.open_error is not None:
            code = faults.open_error
            faults.consume("open_error")
            self._release()
            return await self._reject(code, f"realtime open failed: devserver fault open_error ({code})")
        if faults.open_delay > 0:
            delay = faults.open_delay
            faults.consume("open_delay")
            await asyncio.sleep(delay)
        if self.role == "primary":
            status = wire.status_ready()
            self.agent = VoiceAgent(
                self.id, self.mode, host.options, host.reply, host.ids, host.items, self.emit_event
            )
        else:
            status = dict(target.status)
        self.last_status = dict(status)
        await self.send(wire.opened_frame(status, grant.capabilities, self.role))
        self.opened, self.opened_at = True, time.monotonic()
        if self.role == "primary":
            target.set_status(status)
            self._arm_timed_faults()
        else:
            self._outbox = asyncio.Queue(OBSERVER_QUEUE)
            target.observers.add(self)
            self._spawn(self._observer_pump())
            self.poll_status()
        host.recorder.changed()
        log.info("channel %d: opened %s %s", self.id, self.role, self.mode)
        if self._drop_due():
            await self.conn.wait_ended()
            return False
        return True

    async def _session(self) -> None:
        while not self.closed:
            message = await self.conn.recv()
            if message is None or message.kind == "close":
                return  # silent teardown
            self._record(message)
            if message.kind == "text":
                try:
                    text = message.text
                except UnicodeDecodeError:
                    return  # transport error: silent teardown
                await self._dispatch(text)
            # binary, ping, pong: ignored after open (pings were answered by the transport)
            if self._drop_due():
                await self.conn.wait_ended()  # a silent drop holds the socket for a while
                return

    async def _dispatch(self, text: str) -> None:
        try:
            frame = wire.parse_client_frame(text)
        except wire.FrameError as exc:
            await self.send_error("invalid_frame", str(exc))
            return
        kind = frame["type"]
        if kind == "channel.close":
            await self._client_close()
            return
        if self.role == "observer" and kind in CONTROL_FRAMES:
            await self.send_error("observer_read_only", wire.MSG_OBSERVER_READ_ONLY)
            return
        if kind == "channel.open":
            await self.send_error("unexpected_channel_open", wire.MSG_UNEXPECTED_OPEN)
            return
        if kind == "channel.commit_turn" and self.mode != "explicit_commit":
            await self.send_error("commit_turn_unavailable", wire.MSG_COMMIT_UNAVAILABLE)
            return
        agent = self.agent
        assert agent is not None
        try:
            if kind == "channel.input":
                await self._input(agent, frame["chunk"])
            elif not self._provider_ready(kind):
                await self.send_error("channel_reconnecting", wire.MSG_RECONNECTING[kind])
            elif kind == "channel.commit_turn":
                await agent.commit()
            elif kind == "channel.interrupt":
                await agent.interrupt()
            elif kind == "channel.barge_in_truncate":
                await agent.truncate(frame["item_id"], frame["content_index"], frame["audio_played_ms"])
        except AgentFatal as exc:
            await self.terminate(exc.code, exc.message)
        except AgentError as exc:
            await self.send_error(exc.code, exc.message)

    def _provider_ready(self, kind: str) -> bool:
        return self.provider == "ready"

    async def _input(self, agent: VoiceAgent, chunk: dict) -> None:
        kind = chunk["kind"]
        if kind == "audio_chunk":
            actual = {
                "mime_type": chunk["mime_type"],
                "sample_rate_hz": chunk["sample_rate_hz"],
                "channels": chunk["channels"],
            }
            faults = self.host.faults
            expected_rate = faults.expect_input_rate_hz or self.host.options.input_rate_hz
            if actual != wire.audio_format(expected_rate):
                message, details = wire.audio_mismatch(actual, expected_rate)
                await self.send_error("audio_format_mismatch", message, details)
                return
        if self.provider != "ready":
            await self.send_error("channel_reconnecting", wire.MSG_RECONNECTING["channel.input"])
            return
        await agent.preempt_if_needed()
        if kind == "video_chunk":
            await self.send_error("invalid_request", wire.MSG_VIDEO_UNSUPPORTED)
        elif kind == "text_chunk":
            await agent.input_text(chunk["text"])
        else:
            try:
                pcm = base64.b64decode(chunk["data"], validate=True)
            except (binascii.Error, ValueError):
                # Meerkat forwards `data` unchecked; OpenAI rejects it on its event stream.
                raise AgentFatal(
                    "invalid_request",
                    f"{wire.EVENT_PUMP_PREFIX}Invalid 'audio'. Expected base64-encoded audio data.",
                ) from None
            self.host.recorder.audio(self.id, pcm)
            await agent.input_audio(pcm)

    # -- provider session (reconnect cycle, errors) -------------------------------------

    async def provider_lost(self) -> None:
        self.provider = "reconnecting"
        if self.agent is not None:
            await self.agent.reset()

    async def provider_restored(self) -> None:
        self.provider = "ready"
        await self.emit_status(wire.status_ready())

    async def exhaust(self, detail: str) -> None:
        await self.emit_status(wire.status_exhausted())
        await self.terminate(
            "reconnect_exhausted", f"realtime reconnect attempts exhausted: {detail}"
        )

    def start_reconnect(self, failures: int) -> bool:
        if self.role != "primary" or self.closed or self.provider == "reconnecting":
            return False
        self._reconnect = self._spawn(self._run_reconnect(failures))
        return True

    async def _run_reconnect(self, failures: int) -> None:
        try:
            await reconnect.run_cycle(self, failures, self.host.rng)
        except ConnectionLost:
            pass

    async def provider_error(self, code: str, message: str | None = None) -> None:
        detail = message or f"devserver injected provider error ({code})"
        await self.terminate(code, wire.EVENT_PUMP_PREFIX + detail)

    async def provider_closed(self) -> None:
        """A clean end of the provider's event stream (section 5.10)."""
        if self.agent is not None and self.agent.pending_input:
            self.start_reconnect(0)  # ReattachAndRecover
        else:
            self.provider = "gone"  # CleanExit: inputs get channel_reconnecting from now on
            if self.agent is not None:
                await self.agent.reset()

    # -- ending -------------------------------------------------------------------------

    async def _client_close(self) -> None:
        """Section 5.9: detach, channel.closed{client_closed}, drop without a close frame."""
        self.closed = True
        self.end_reason = "client_closed"
        if self.agent is not None:
            await self.agent.close()
        self._release()
        try:
            await self.conn.send_text(wire.dumps(wire.closed_frame("client_closed")))
            self.host.recorder.sent(self.id, wire.closed_frame("client_closed"))
        except ConnectionLost:
            pass
        await self.conn.drop()

    async def terminate(self, code: str | None, message: str = "", reason: str | None = None) -> None:
        """In-session termination: error (if any), closed{reason}, dropped socket."""
        if self.closed:
            return
        self.closed = True
        reason = reason or code or "provider_session_failed"
        self.end_reason = reason
        log.info("channel %d: terminated: %s %s", self.id, reason, message)
        self._cancel_tasks()
        if self.agent is not None:
            await self.agent.close()
        try:
            if code is not None:
                await self.conn.send_text(wire.dumps(wire.error_frame(code, message)))
                self.host.recorder.sent(self.id, wire.error_frame(code, message))
            await self.conn.send_text(wire.dumps(wire.closed_frame(reason)))
            self.host.recorder.sent(self.id, wire.closed_frame(reason))
        except ConnectionLost:
            pass
        await self.conn.drop()

    def _release(self) -> None:
        target = self.host.target
        if self.role == "primary" and target.primary is self:
            target.primary = None
            target.set_status(wire.status_closed())
        target.observers.discard(self)

    async def teardown(self) -> None:
        if self._torn_down:
            return
        self._torn_down = True
        self.closed = True
        if self.end_reason is None:
            self.end_reason = "disconnected"
        self._cancel_tasks()
        if self.agent is not None:
            await self.agent.close()
        self._release()
        self.conn.end_silently()
        self.host.recorder.changed()
        log.info("channel %d: ended (%s)", self.id, self.end_reason)

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _cancel_tasks(self) -> None:
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()

    # -- faults -------------------------------------------------------------------------

    def _drop_due(self) -> bool:
        limit = self.host.faults.drop_after_frames
        if limit is None or self.frames_in < limit:
            return False
        self.host.faults.consume("drop_after_frames")
        self.drop(self.host.faults.drop_mode)
        return True

    def drop(self, mode: str = "reset") -> None:
        """Fault: the connection dies (no channel.closed)."""
        log.info("channel %d: fault: drop (%s)", self.id, mode)
        self.end_reason = f"dropped ({mode})"
        self.closed = True
        if mode == "reset":
            self.conn.abort()
        elif mode == "close":
            self._spawn(self.conn.drop())
        else:
            self.conn.go_silent()
            self._spawn(self._abort_later(self.host.faults.silent_hold))

    async def _abort_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.conn.abort()

    async def inject(self, kind: str, size: int | None = None) -> None:
        how, payload = injected_payload(kind, size if size is not None else self.host.faults.oversized_bytes)
        if how == "text":
            await self.conn.send_text(payload)
        elif how == "binary":
            await self.conn.send_binary(payload)
        else:
            await self.conn.send_raw(payload)
        shown = payload if len(payload) <= 256 else payload[:64] + b"..."
        self.host.recorder.sent(self.id, {"inject": kind, "size": len(payload), "payload": shown.decode("latin-1")}, kind="inject")

    def _arm_timed_faults(self) -> None:
        f = self.host.faults
        if f.drop_at is not None:
            self._after(f.drop_at, "drop_at", lambda: self.drop(f.drop_mode))
        if f.reconnect_at is not None:
            failures = f.reconnect_failures
            self._after(f.reconnect_at, "reconnect_at", lambda: self.start_reconnect(failures))
        if f.provider_error_at is not None:
            code = f.provider_error_code
            self._after(f.provider_error_at, "provider_error_at", lambda: self.provider_error(code))
        if f.pause_reading_at is not None:
            hold = f.pause_reading_for
            self._after(f.pause_reading_at, "pause_reading_at", lambda: self.conn.pause_reading(hold))
        for at, kind in list(f.inject_at):
            self._after(at, "inject_at", lambda kind=kind: self.inject(kind))

    def _after(self, seconds: float, name: str, action: Any) -> None:
        async def fire() -> None:
            await asyncio.sleep(seconds)
            if self.closed:
                return
            self.host.faults.consume(name)
            log.info("channel %d: timed fault %s", self.id, name)
            try:
                result = action()
                if asyncio.iscoroutine(result):
                    await result
            except ConnectionLost:
                pass

        self._spawn(fire())
