"""What the WebSocket channels of both surfaces share: recording client messages, the transport
faults (drop now / after N frames / at a time, paused reads, injected frames) and the
bookkeeping of a connection's background tasks."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from .faults import injected_payload
from .ws import ConnectionLost, Message, WsConnection

if TYPE_CHECKING:
    from .host import Host

log = logging.getLogger("meerkat_devserver.channel")


class WsChannel:
    surface = ""

    def __init__(self, host: Host, conn: WsConnection, key: int | str):
        self.host = host
        self.conn = conn
        self.key = key  # the recording key: v2 connection number, live channel_id
        self.frames_in = 0
        self.closed = False  # no more frames will be sent
        self.end_reason: str | None = None
        self._tasks: set[asyncio.Task] = set()
        self._torn_down = False
        self.created = time.monotonic()
        self.opened_at: float = self.created

    # -- recording ----------------------------------------------------------------------

    def record(self, message: Message) -> None:
        if message.kind in ("text", "binary"):
            self.frames_in += 1
        self.host.recorder.received(self.key, message.kind, message.data)

    def record_sent(self, frame: Any, kind: str = "text") -> None:
        self.host.recorder.sent(self.key, frame, kind)

    # -- tasks --------------------------------------------------------------------------

    def spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def cancel_tasks(self) -> None:
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()

    def after(self, seconds: float, name: str, action: Any) -> None:
        """Run `action` (sync or async) `seconds` from now unless the channel ended first;
        the fault `name` is disarmed when it fires."""

        async def fire() -> None:
            await asyncio.sleep(seconds)
            if self.closed:
                return
            self.host.faults.consume(name)
            log.info("%s channel %s: timed fault %s", self.surface, self.key, name)
            try:
                result = action()
                if asyncio.iscoroutine(result):
                    await result
            except ConnectionLost:
                pass

        self.spawn(fire())

    # -- transport faults ---------------------------------------------------------------

    def drop_due(self) -> bool:
        """Drop after N client frames (the Nth is still processed)."""
        limit = self.host.faults.drop_after_frames
        if limit is None or self.frames_in < limit:
            return False
        self.host.faults.consume("drop_after_frames")
        self.drop(self.host.faults.drop_mode)
        return True

    def drop(self, mode: str = "reset") -> None:
        """Fault: the connection dies (nothing more is sent)."""
        log.info("%s channel %s: fault: drop (%s)", self.surface, self.key, mode)
        self.end_reason = f"dropped ({mode})"
        self.closed = True
        if mode == "reset":
            self.conn.abort()
        elif mode == "close":
            self.spawn(self.conn.drop())
        else:
            self.conn.go_silent()
            self.spawn(self._abort_later(self.host.faults.silent_hold))

    async def _abort_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.conn.abort()

    async def inject(self, kind: str, size: int | None = None) -> None:
        how, payload = injected_payload(
            kind, size if size is not None else self.host.faults.oversized_bytes, self.surface,
            self.current_ids(),
        )
        if how == "text":
            await self.conn.send_text(payload)
        elif how == "binary":
            await self.conn.send_binary(payload)
        else:
            await self.conn.send_raw(payload)
        shown = payload if len(payload) <= 256 else payload[:64] + b"..."
        self.record_sent({"inject": kind, "size": len(payload), "payload": shown.decode("latin-1")}, "inject")

    def current_ids(self) -> dict | None:
        """Ids of the assistant item being streamed, for injected audio (None: made up)."""
        return None

    def arm_transport_faults(self) -> None:
        f = self.host.faults
        if f.drop_at is not None:
            self.after(f.drop_at, "drop_at", lambda: self.drop(f.drop_mode))
        if f.pause_reading_at is not None:
            hold = f.pause_reading_for
            self.after(f.pause_reading_at, "pause_reading_at", lambda: self.conn.pause_reading(hold))
        for at, kind in list(f.inject_at):
            self.after(at, "inject_at", lambda kind=kind: self.inject(kind))
