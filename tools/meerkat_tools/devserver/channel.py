"""One `/realtime/ws` connection (protocol v2): the first-frame decision table, the in-session
rules, the product session (fake provider + v2 adapter) and its event pump, tool calls, status
emission, observer fan-out, timed faults and the ways a channel ends.

Reference sections: 4.1 (first message), 1.6 (open checks, via tokens.py), 5.1-5.10 (in-session
rules, preemption, tools, provider errors), 6.1 (status emission), 6.3 (observers), 2 (how the
server ends a connection: a 1008 close after handshake failures, sent without waiting for the
client's Close; `channel.closed` then a dropped socket without a close frame for every
in-session termination; silence when the client closes or the transport fails).

The v0.6.2 host runs one loop per socket that reads client frames, forwards provider events
and polls status. A tool call runs *inside* that loop: while it runs nothing is read (pings go
unanswered), nothing is forwarded, no status is sent; then `tool_call_requested` and its
outcome go out back to back (corrections 3). This server keeps a reader and a pump but makes
both wait on one gate while a tool runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from . import reconnect, wire
from .provider import FakeProvider
from .tokens import Grant, OpenError, token_prefix
from .v2_adapter import AdapterError, ProductTurnPhase, ProviderFatal, V2Adapter
from .ws import ConnectionLost, WsConnection
from .ws_channel import WsChannel

if TYPE_CHECKING:
    from .host import Host, Target

log = logging.getLogger("meerkat_devserver.channel")

CONTROL_FRAMES = (
    "channel.input",
    "channel.commit_turn",
    "channel.interrupt",
    "channel.barge_in_truncate",
)
OBSERVER_QUEUE = 128  # the broadcast capacity: a lagging observer silently loses frames
DEFAULT_TOOL_TIMEOUT_MS = 15000  # RealtimeChannelConfig::DEFAULT_TOOL_TIMEOUT_MS


class ProductSession:
    """One provider session with its adapter (a new one after every reconnect: the item ids
    of the old one are gone)."""

    def __init__(self, channel: Channel):
        host = channel.host
        self.adapter: V2Adapter
        self.provider = FakeProvider(
            channel.id, channel.mode or "provider_managed", host.options, host.agent, host.ids,
            host.items, host.rng, lambda event: self.adapter.feed(event),
        )
        self.adapter = V2Adapter(self.provider, channel.mode or "provider_managed", host.ids)
        self.provider.start()

    def close(self) -> None:
        self.provider.close()


class Channel(WsChannel):
    surface = "v2"

    def __init__(self, host: Host, conn: WsConnection, cid: int):
        super().__init__(host, conn, cid)
        self.id = cid
        self.role: str | None = None
        self.mode: str | None = None
        self.grant: Grant | None = None
        self.target: Target | None = None
        self.policy: dict = dict(host.options.reconnect_policy)
        self.session: ProductSession | None = None
        self.phase = ProductTurnPhase()
        self.pending_input = False  # input submitted and no turn completed since
        self.opened = False
        self.provider = "ready"  # "ready", "reconnecting", "gone" (clean provider close)
        self.last_status: dict | None = None
        self.tool_calls = 0
        self.tool_runs: list[tuple[float, float | None]] = []  # (start, end) of blocked loops
        self._pump: asyncio.Task | None = None
        self._reconnect: asyncio.Task | None = None
        self._outbox: asyncio.Queue | None = None  # observers only
        self._loop_free = asyncio.Event()  # cleared while a tool call blocks the loop
        self._loop_free.set()

    def describe(self) -> dict:
        return {
            "id": self.id,
            "surface": "v2",
            "role": self.role,
            "turning_mode": self.mode,
            "target": self.target.session_id if self.target is not None else None,
            "opened": self.opened,
            "closed": self.closed,
            "end_reason": self.end_reason,
            "provider": self.provider,
            "phase": self.phase.phase,
            "status": dict(self.last_status) if self.last_status else None,
            "frames_in": self.frames_in,
            "tool_calls": self.tool_calls,
            "tool_runs": list(self.tool_runs),
            "loop_blocked": not self._loop_free.is_set(),
        }

    # -- sending ------------------------------------------------------------------------

    def _decorate(self, frame: dict) -> dict:
        if self.host.faults.unknown_fields:
            frame = dict(frame, devserver_extra={"ignore": True})
        return frame

    async def send(self, frame: dict, fanout: bool = False) -> None:
        frame = self._decorate(frame)
        if self._outbox is not None:  # observers send through their queue
            self._enqueue(frame)
            return
        await self.conn.send_text(wire.dumps(frame))
        self.record_sent(frame)
        if fanout and self.role == "primary" and self.target is not None:
            for observer in list(self.target.observers):
                observer._enqueue(frame)

    async def send_error(self, code: str, message: str, details: dict | None = None) -> None:
        await self.send(wire.error_frame(code, message, details))

    async def emit_event(self, event: dict) -> None:
        await self.send(wire.event_frame(event), fanout=True)

    async def emit_status(self, status: dict, needs_reattach: bool = False) -> None:
        """Section 6.1: channel.status then status_changed, only when it differs from the last
        status this channel sent; needs_reattach follows at the start of a reconnect cycle."""
        await self._loop_free.wait()  # the status poll runs in the (possibly blocked) loop
        assert self.target is not None
        self.target.set_status(status)
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
        if self.target is None or self._outbox is None:
            return
        status = self.target.status
        if status == self.last_status:
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
                self.record_sent(frame)
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

    async def _reject(self, code: str, message: str) -> bool:
        """Handshake failure: error, closed{code}, then a WebSocket Close 1008 with the code."""
        log.info("channel %d: open refused: %s", self.id, code)
        self.closed = True
        self.end_reason = code
        await self.send_error(code, message)
        await self.send(wire.closed_frame(code))
        self.record_sent({"code": 1008, "reason": code}, "close")
        await self.conn.close_with(1008, code)
        return False

    async def _open(self) -> bool:
        message = await self.conn.recv()
        if message is None:
            return False
        self.record(message)
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
        host = self.host
        try:
            grant = host.tokens.redeem(frame["open_token"], frame["role"], frame["turning_mode"], host.realm)
        except OpenError as exc:
            return await self._reject(exc.code, exc.message)
        log.info("channel %d: token %s redeemed (%s)", self.id, token_prefix(grant.token), grant.role)
        session = host.v2_session(grant.target)
        target = session.target
        self.target = target
        live_bound = session.live is not None and session.live.is_open  # surface "both" only
        if grant.role == "primary" and (target.primary is not None or live_bound):
            return await self._reject("target_busy", wire.OPEN_ERROR_MESSAGES["target_busy"])
        self.role, self.mode, self.policy, self.grant = (
            grant.role, grant.turning_mode, grant.reconnect_policy, grant)
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
            self._start_session()
        else:
            status = dict(target.status)
        self.last_status = dict(status)
        # Open from the moment the frame is handed to the socket (a client may act on it
        # before this coroutine resumes).
        self.opened, self.opened_at = True, time.monotonic()
        await self.send(wire.opened_frame(status, grant.capabilities, self.role))
        if self.role == "primary":
            target.set_status(status)
            self._arm_timed_faults()
        else:
            self._outbox = asyncio.Queue(OBSERVER_QUEUE)
            target.observers.add(self)
            self.spawn(self._observer_pump())
            self.poll_status()
        host.recorder.changed()
        log.info("channel %d: opened %s %s", self.id, self.role, self.mode)
        if self.drop_due():
            await self.conn.wait_ended()
            return False
        return True

    async def _session(self) -> None:
        while not self.closed:
            message = await self.conn.recv()
            if message is None or message.kind == "close":
                return  # silent teardown
            await self._loop_free.wait()
            self.record(message)
            if message.kind == "text":
                try:
                    text = message.text
                except UnicodeDecodeError:
                    return  # transport error: silent teardown
                await self._dispatch(text)
            # binary, ping, pong: ignored after open (pings were answered by the transport)
            if self.drop_due():
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
        try:
            if kind == "channel.input":
                await self._input(frame["chunk"])
            elif self.session is None:
                await self.send_error("channel_reconnecting", wire.MSG_RECONNECTING[kind])
            elif kind == "channel.commit_turn":
                self.session.adapter.commit_turn()
            elif kind == "channel.interrupt":
                self.session.adapter.interrupt()
            elif kind == "channel.barge_in_truncate":
                self.session.adapter.truncate(frame["item_id"], frame["content_index"], frame["audio_played_ms"])
        except AdapterError as exc:
            await self.send_error(exc.code, exc.message)

    async def _input(self, chunk: dict) -> None:
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
        session = self.session
        if session is None:
            await self.send_error("channel_reconnecting", wire.MSG_RECONNECTING["channel.input"])
            return
        adapter = session.adapter
        if self.phase.preemptible:
            # Section 5.3: any input once output has started cancels the response first.
            adapter.interrupt()
            self.phase.terminal()
        if kind == "video_chunk":
            adapter.send_video()
        elif kind == "text_chunk":
            adapter.send_text(chunk["text"])
        else:
            pcm = adapter.send_audio(chunk["data"])  # forwarded unchecked; OpenAI decodes it
            if pcm is not None:
                self.host.recorder.audio(self.id, pcm)
        self.phase.in_flight()
        self.pending_input = True

    # -- the product session: provider events to the wire -------------------------------

    def _start_session(self) -> None:
        self.session = ProductSession(self)
        self._pump = self.spawn(self._run_pump(self.session))

    def _stop_session(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            session.close()
        if self._pump is not None and self._pump is not asyncio.current_task():
            self._pump.cancel()
        self._pump = None
        self.phase.terminal()

    async def _run_pump(self, session: ProductSession) -> None:
        try:
            while True:
                event = await session.adapter.next_event()
                if event is None:
                    await self.provider_closed()
                    return
                await self._loop_free.wait()
                await self._forward(session, event)
        except ProviderFatal as exc:
            await self.terminate(exc.code, exc.message)
        except ConnectionLost:
            pass

    async def _forward(self, session: ProductSession, event: dict) -> None:
        """handle_product_session_event, then the lifecycle inputs of the event."""
        kind = event["kind"]
        if kind == "input_partial":
            await self.emit_event({"type": "input_transcript_partial", "text": event["text"]})
        elif kind == "input_final":
            await self.emit_event({"type": "input_transcript_final", "text": event["text"]})
        elif kind in ("turn_started", "turn_committed", "interrupted"):
            await self.emit_event({"type": kind})
        elif kind == "turn_completed":
            # Suppressed after a cancel and at tool-use boundaries (reference 7).
            if event["stop_reason"] not in ("tool_use", "cancelled"):
                await self.emit_event({"type": "turn_completed"})
        elif kind == "output_text":
            await self.emit_event({"type": "output_text_delta", "delta": event["delta"]})
        elif kind == "output_audio":
            await self.emit_event(self._audio_event(event))
        elif kind == "tool_call":
            await self._run_tool(session, event)
        elif kind == "truncated":
            out: dict[str, Any] = {
                "type": "assistant_transcript_truncated",
                "item_id": event["item_id"],
                "audio_played_ms": event["audio_played_ms"],
            }
            if event["truncated_text"] is not None:
                out["truncated_text"] = event["truncated_text"]
            await self.emit_event(out)
        # "transcript" events are appended to session history only: no frame.
        if kind == "turn_committed":
            self.phase.committed()
        if kind == "tool_call":
            self.phase.in_flight()
        if kind in ("output_text", "output_audio", "tool_call"):
            self.phase.output_started()
        if kind == "interrupted":
            self.phase.interrupted()
        if kind == "turn_completed" and event["stop_reason"] != "tool_use":
            self.pending_input = False
            self.phase.terminal()
            if self.target is not None:
                self.target.history += 1

    def _audio_event(self, event: dict) -> dict:
        out: dict[str, Any] = {"type": "output_audio_chunk"}
        if self.host.options.item_ids:  # the labelled extension (DESIGN.md section 2)
            out["item_id"] = event["item_id"]
            out["response_id"] = event["response_id"]
            out["content_index"] = event["content_index"]
        chunk = wire.audio_format()
        chunk["data"] = event["data"]
        out["chunk"] = chunk
        return out

    def current_ids(self) -> dict | None:
        active = self.session.provider.active if self.session is not None else None
        if active is None or active.item is None:
            return None
        return {"response_id": active.id, "item_id": active.item_id, "content_index": 0}

    async def _run_tool(self, session: ProductSession, event: dict) -> None:
        """The tool runs in the socket loop (handle_product_session_tool_call): the loop is
        blocked meanwhile; both events go out back to back afterwards."""
        opts, faults = self.host.options, self.host.faults
        call_id = event["call_id"]
        self.tool_calls += 1
        timeout_ms = self._tool_timeout_ms()
        duration = opts.tool_duration_ms / 1000
        hang = faults.tool_hang
        if hang:
            duration = faults.tool_hang_for
        timed_out = not hang and timeout_ms is not None and opts.tool_duration_ms > timeout_ms
        log.info("channel %d: tool %s (%s) runs %.1f s%s", self.id, event["tool_name"], call_id,
                 (timeout_ms / 1000) if timed_out and timeout_ms is not None else duration,
                 " (hangs)" if hang else "")
        self._block_loop()
        started = time.monotonic()
        try:
            await asyncio.sleep((timeout_ms / 1000) if timed_out and timeout_ms is not None else duration)
        finally:
            self._unblock_loop()
        elapsed_ms = int((time.monotonic() - started) * 1000)
        adapter = session.adapter
        outcome: dict[str, Any]
        if timed_out:
            adapter.submit_tool_error(call_id, f"tool {event['tool_name']} timed out after {timeout_ms} ms")
            outcome = {"type": "tool_call_timed_out", "call_id": call_id, "elapsed_ms": elapsed_ms}
        elif opts.tool_outcome == "failed":
            error = f"tool {event['tool_name']} failed: devserver scripted failure"
            adapter.submit_tool_error(call_id, error)
            outcome = {"type": "tool_call_failed", "call_id": call_id, "error": error}
        else:
            adapter.submit_tool_result(call_id, json.dumps(TOOL_RESULT))
            outcome = {"type": "tool_call_completed", "call_id": call_id}
        await self.emit_event({"type": "tool_call_requested", "call_id": call_id, "tool_name": event["tool_name"]})
        await self.emit_event(outcome)

    def _tool_timeout_ms(self) -> int | None:
        config = (self.grant.channel_config if self.grant is not None else None) or {}
        timeout = config.get("tool_timeout") or {"type": "default"}
        if timeout.get("type") == "disabled":
            return None
        if timeout.get("type") == "finite":
            return int(timeout["timeout_ms"])
        return DEFAULT_TOOL_TIMEOUT_MS

    def _block_loop(self) -> None:
        self._loop_free.clear()
        self.conn.hold()
        self.tool_runs.append((time.monotonic(), None))
        self.host.recorder.changed()

    def _unblock_loop(self) -> None:
        self.tool_runs[-1] = (self.tool_runs[-1][0], time.monotonic())
        self._loop_free.set()
        self.conn.release()
        self.host.recorder.changed()

    # -- provider session (reconnect cycle, errors) -------------------------------------

    async def provider_lost(self) -> None:
        self.provider = "reconnecting"
        self._stop_session()
        self.pending_input = False

    async def provider_restored(self) -> None:
        self.provider = "ready"
        self._start_session()
        await self.emit_status(wire.status_ready())

    async def exhaust(self, detail: str) -> None:
        await self.emit_status(wire.status_exhausted())
        await self.terminate("reconnect_exhausted", f"realtime reconnect attempts exhausted: {detail}")

    def start_reconnect(self, failures: int) -> bool:
        if self.role != "primary" or self.closed or self.provider == "reconnecting":
            return False
        self._reconnect = self.spawn(self._run_reconnect(failures))
        return True

    async def _run_reconnect(self, failures: int) -> None:
        try:
            await reconnect.run_cycle(self, failures, self.host.rng)
        except ConnectionLost:
            pass

    async def provider_error(self, code: str, message: str | None = None) -> None:
        detail = message or f"devserver injected provider error ({code})"
        await self.terminate(code, wire.EVENT_PUMP_PREFIX + detail)

    def force_provider_close(self) -> None:
        """The provider's event stream ends cleanly (the adapter's pump sees the end)."""
        if self.session is not None:
            self.session.provider.close()
            self.session.adapter.provider_closed()

    async def provider_closed(self) -> None:
        """A clean end of the provider's event stream (section 5.10)."""
        if self.pending_input:
            self._stop_session()
            self.provider = "ready"
            self.start_reconnect(0)  # ReattachAndRecover
        else:
            self.provider = "gone"  # CleanExit: inputs get channel_reconnecting from now on
            self._stop_session()

    # -- ending -------------------------------------------------------------------------

    async def _client_close(self) -> None:
        """Section 5.9: detach, channel.closed{client_closed}, drop without a close frame."""
        self.closed = True
        self.end_reason = "client_closed"
        self._stop_session()
        self._release()
        try:
            frame = self._decorate(wire.closed_frame("client_closed"))
            await self.conn.send_text(wire.dumps(frame))
            self.record_sent(frame)
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
        self.cancel_tasks()
        self._stop_session()
        try:
            if code is not None:
                frame = self._decorate(wire.error_frame(code, message))
                await self.conn.send_text(wire.dumps(frame))
                self.record_sent(frame)
            frame = self._decorate(wire.closed_frame(reason))
            await self.conn.send_text(wire.dumps(frame))
            self.record_sent(frame)
        except ConnectionLost:
            pass
        await self.conn.drop()

    def _release(self) -> None:
        target = self.target
        if target is None:
            return
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
        self.cancel_tasks()
        self._stop_session()
        self._release()
        self.conn.end_silently()
        self.host.recorder.changed()
        log.info("channel %d: ended (%s)", self.id, self.end_reason)

    # -- faults -------------------------------------------------------------------------

    def _arm_timed_faults(self) -> None:
        f = self.host.faults
        self.arm_transport_faults()
        if f.reconnect_at is not None:
            failures = f.reconnect_failures
            self.after(f.reconnect_at, "reconnect_at", lambda: self.start_reconnect(failures))
        if f.provider_error_at is not None:
            code = f.provider_error_code
            self.after(f.provider_error_at, "provider_error_at", lambda: self.provider_error(code))
        if f.provider_close_at is not None:
            self.after(f.provider_close_at, "provider_close_at", self.force_provider_close)


# What the scripted tool returns when it completes.
TOOL_RESULT = {"temperature_c": 24, "conditions": "sunny", "city": "Lisbon"}
