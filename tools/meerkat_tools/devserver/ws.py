"""WebSocket transport for `/realtime/ws` on asyncio streams and the websockets Sans-I/O layer.

The high-level websockets server answers pings and pongs internally, but the protocol needs
them surfaced (a Ping as the first message is `expected_channel_open`), needs an abrupt drop
without a close frame after `channel.closed`, and fault injection needs raw bytes, paused reads
and a silent dead link. So this module drives `websockets.server.ServerProtocol` itself:
`recv()` returns every data and control message in order (pings are still answered
automatically, as axum does), sends await the socket's drain (TCP backpressure reaches the
sender), and the close helpers cover the three ways the real host ends a connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, cast

from websockets.frames import Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from . import wire

log = logging.getLogger("meerkat_devserver.ws")
_quiet = logging.getLogger("meerkat_devserver.ws.protocol")
_quiet.setLevel(logging.WARNING)

READ_SIZE = 65536


Route = Callable[[ServerProtocol, Request], Response]


def route_path(path: str) -> Route:
    """A route with one WebSocket path; anything else is 404."""

    def route(protocol: ServerProtocol, request: Request) -> Response:
        if request.path.split("?", 1)[0] != path:
            return protocol.reject(404, "Not Found\n")
        return protocol.accept(request)

    return route


class ConnectionLost(Exception):
    """The socket is gone (or was dropped on purpose); nothing more can be sent."""


@dataclass
class Message:
    kind: str  # "text", "binary", "ping", "pong", "close"
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")


class WsConnection:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_message: int,
        max_frame: int,
    ):
        self.reader = reader
        self.writer = writer
        # A read/write socket transport (typed WriteTransport on StreamWriter).
        self.transport = cast(asyncio.Transport, writer.transport)
        self.protocol = ServerProtocol(max_size=max_message, logger=_quiet)
        if hasattr(self.protocol, "max_fragment_size"):  # recent websockets: a frame limit too
            self.protocol.max_fragment_size = max_frame
        self.peer = writer.get_extra_info("peername")
        self.dropped = False
        self.silent = False  # the link is "dead": no reads, no writes
        self._frames: deque = deque()
        self._fragments: list[bytes] | None = None
        self._fragment_kind = ""
        self._paused_until = 0.0
        self._free = asyncio.Event()  # cleared while the server's loop is blocked
        self._free.set()
        self.read_error: str | None = None
        self._reading = False
        self._eof = False
        self._lock = asyncio.Lock()
        self._ended = asyncio.Event()

    # -- handshake ----------------------------------------------------------------------

    async def handshake(self, route: Route | None = None) -> Request | None:
        """Answer the HTTP upgrade. `route(protocol, request)` returns the response (default:
        only GET /realtime/ws is a WebSocket, other paths 404); None when it did not upgrade."""
        route = route or route_path(wire.WS_PATH)
        while True:
            data = await self._read()
            if not data:
                return None
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                if not isinstance(event, Request):
                    continue
                response = route(self.protocol, event)
                self.protocol.send_response(response)
                await self._flush()
                if response.status_code != 101:
                    self._close_transport()
                    return None
                return event
            if self.protocol.handshake_exc is not None or self.protocol.state is State.CLOSED:
                await self._flush()
                self._close_transport()
                return None

    # -- receiving ----------------------------------------------------------------------

    async def recv(self) -> Message | None:
        """The next message, in order; None when the connection ended (EOF, error, drop)."""
        while True:
            while self._frames:
                message = self._assemble(self._frames.popleft())
                if message is not None:
                    return message
            if self._eof or self.dropped:
                return None
            await self._wait_unpaused()
            await self._free.wait()  # a blocked server loop reads nothing (tool calls)
            data = b""
            if not self.silent and not self.dropped:
                data = await self._read()
            if self.silent:  # a dead link: nothing arrives until the socket is aborted
                await self._ended.wait()
                return None
            if self.dropped:
                return None
            if not data:
                self._eof = True
                self.protocol.receive_eof()
            else:
                self.protocol.receive_data(data)
            self._frames.extend(self.protocol.events_received())
            if self.protocol.parser_exc is not None:
                # A read error (a frame over the limit, invalid UTF-8, a protocol violation):
                # the server's loop just ends. The Close frame websockets would answer with
                # is not sent: the real host drops the socket.
                log.info("ws %s: read error: %s", self.peer, self.protocol.parser_exc)
                self.read_error = str(self.protocol.parser_exc)
                self._eof = True
                continue
            try:
                await self._flush()  # automatic pongs and close replies
            except ConnectionLost:
                self._eof = True
            if self.protocol.state is State.CLOSED:
                self._eof = True

    def _assemble(self, frame) -> Message | None:
        op = frame.opcode
        if op is Opcode.PING:
            return Message("ping", bytes(frame.data))
        if op is Opcode.PONG:
            return Message("pong", bytes(frame.data))
        if op is Opcode.CLOSE:
            return Message("close", bytes(frame.data))
        if op is Opcode.CONT:
            if self._fragments is None:
                return None
            self._fragments.append(bytes(frame.data))
            if not frame.fin:
                return None
            data, self._fragments = b"".join(self._fragments), None
            return Message(self._fragment_kind, data)
        kind = "text" if op is Opcode.TEXT else "binary"
        if not frame.fin:
            self._fragments, self._fragment_kind = [bytes(frame.data)], kind
            return None
        return Message(kind, bytes(frame.data))

    async def _read(self) -> bytes:
        self._reading = True
        try:
            return await self.reader.read(READ_SIZE)
        except (ConnectionError, OSError):
            return b""
        finally:
            self._reading = False

    async def _wait_unpaused(self) -> None:
        while True:
            remaining = self._paused_until - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.sleep(remaining)

    def pause_reading(self, seconds: float) -> None:
        """Stop reading the socket for `seconds`: the kernel buffers fill, the client blocks."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)
        transport = self.transport
        if not transport.is_closing():
            transport.pause_reading()
        asyncio.get_running_loop().call_later(seconds, self._resume_if_due)

    def _resume_if_due(self) -> None:
        if self._paused_until - time.monotonic() > 0.001:
            return  # a longer pause was requested since; its own timer resumes
        self._paused_until = 0.0
        transport = self.transport
        if not transport.is_closing() and not self.silent and self._free.is_set():
            transport.resume_reading()

    def hold(self) -> None:
        """The server's loop is blocked (a tool call runs in it): nothing is read, so pings go
        unanswered and the client's frames wait in the kernel buffers."""
        self._free.clear()
        transport = self.transport
        if not transport.is_closing():
            transport.pause_reading()

    def release(self) -> None:
        self._free.set()
        transport = self.transport
        if not transport.is_closing() and not self.silent and self._paused_until <= time.monotonic():
            transport.resume_reading()

    @property
    def held(self) -> bool:
        return not self._free.is_set()

    # -- sending ------------------------------------------------------------------------

    async def send_text(self, text: str | bytes) -> None:
        data = text.encode("utf-8") if isinstance(text, str) else text
        async with self._lock:
            self._check_open()
            self.protocol.send_text(data)
            await self._flush()

    async def send_binary(self, data: bytes) -> None:
        async with self._lock:
            self._check_open()
            self.protocol.send_binary(data)
            await self._flush()

    async def send_raw(self, data: bytes) -> None:
        """Bytes straight onto the socket, bypassing framing (fault injection)."""
        async with self._lock:
            self._check_open()
            self.writer.write(data)
            await self._drain()

    def _check_open(self) -> None:
        if self.dropped or self.silent or self.protocol.state is not State.OPEN:
            raise ConnectionLost()
        if self.writer.transport.is_closing():
            raise ConnectionLost()

    async def _flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            if not chunk:  # SEND_EOF
                if self.writer.can_write_eof() and not self.writer.transport.is_closing():
                    try:
                        self.writer.write_eof()
                    except (ConnectionError, OSError, RuntimeError):
                        pass
                continue
            if self.silent or self.writer.transport.is_closing():
                raise ConnectionLost()
            self.writer.write(chunk)
        await self._drain()

    async def _drain(self) -> None:
        try:
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise ConnectionLost() from exc

    # -- ending -------------------------------------------------------------------------

    async def close_with(self, code: int, reason: str) -> None:
        """Handshake failures: a WebSocket Close frame, then the connection ends at once. The
        server does not wait for the client's Close (v2 correction 7; live token admission):
        it half-closes, discards whatever the client still sends, and closes."""
        async with self._lock:
            if self.protocol.state is State.OPEN and not self.writer.transport.is_closing():
                self.protocol.send_close(code, reason)
                for chunk in self.protocol.data_to_send():
                    if chunk:
                        self.writer.write(chunk)
                try:
                    await self._drain()
                    if self.writer.can_write_eof():
                        self.writer.write_eof()
                except (ConnectionLost, OSError, RuntimeError):
                    pass
        self.dropped = True
        if self._reading:
            # Another coroutine is in recv(): it reads (and ends on) whatever comes; the socket
            # goes after a moment in any case.
            asyncio.get_running_loop().call_later(0.5, self._close_transport)
            return
        try:
            # Read and discard (the client's Close reply) so closing does not reset the
            # connection before the client read our Close frame.
            await asyncio.wait_for(self._discard_input(), 0.5)
        except asyncio.TimeoutError:
            pass
        self._close_transport()

    async def _discard_input(self) -> None:
        while await self._read():
            pass

    async def drop(self) -> None:
        """In-session termination: flush what was sent, then end TCP without a close frame."""
        async with self._lock:
            self.dropped = True
            try:
                await asyncio.wait_for(self.writer.drain(), 2.0)
            except (ConnectionError, OSError, asyncio.TimeoutError):
                pass
            self._close_transport()

    async def wait_ended(self) -> None:
        """Until the socket is gone (after a drop, an abort or the end of a silent hold)."""
        await self._ended.wait()

    def abort(self) -> None:
        """Fault: reset the connection (RST), losing anything unsent."""
        self.dropped = True
        self._ended.set()
        self.writer.transport.abort()

    def go_silent(self) -> None:
        """Fault: the link dies without a trace; the socket stays open until `abort()`."""
        self.silent = True
        transport = self.transport
        if not transport.is_closing():
            transport.pause_reading()

    def close_soon(self) -> None:
        """End TCP without a close frame once what was written is flushed (no waiting)."""
        self.dropped = True
        self._close_transport()

    def end_silently(self) -> None:
        """The client closed or the transport failed: release the socket."""
        self._close_transport()

    def _close_transport(self) -> None:
        self._ended.set()
        if not self.writer.transport.is_closing():
            self.writer.close()
