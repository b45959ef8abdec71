"""`DevServer`: the listeners (JSON-RPC TCP for both surfaces; v2: REST and `/realtime/ws`;
live: `/live/ws`) and the API tests use.

In an asyncio program: `srv = DevServer(opts); await srv.start(); ...; await srv.stop()`.
From synchronous code: `with DevServer.running(opts) as srv:` runs the loop in a background
thread. Every method below may be called from any thread: fault actions are handed to the
server's loop, recording reads take a lock, and `wait_for` blocks the calling thread on a
condition the loop signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import socket
import threading
from typing import Any, Awaitable, Callable, Iterator

from . import wire
from .faults import INJECT_KINDS, Faults
from .host import Host
from .live_api import LiveApi
from .live_channel import LiveChannel, LiveSocket
from .live_wire import WS_PATH as LIVE_WS_PATH
from .options import ServerOptions
from .recording import Recorder
from .rest import rest_handler
from .rpc import Dispatcher, rpc_handler
from .v2_api import V2Api

log = logging.getLogger("meerkat_devserver")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class DevServer:
    def __init__(self, options: ServerOptions | None = None, **overrides: Any):
        options = options if options is not None else ServerOptions()
        if overrides:
            options = dataclasses.replace(options, **overrides)
        options.validate()
        self.options = options
        self.faults: Faults = options.faults
        self.recorder = Recorder(options.record_dir, options.keep_frames)
        self.host = Host(options, self.recorder)
        methods: dict = {}
        if options.serves_v2:
            methods.update(V2Api(self.host).methods())
        if options.serves_live:
            methods.update(LiveApi(self.host).methods())
        self.dispatcher = Dispatcher(self.host, methods)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._servers: list[asyncio.base_events.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._background: set[asyncio.Task] = set()
        self._rpc_addr: tuple[str, int] = ("", 0)
        self._rest_addr: tuple[str, int] = ("", 0)
        self._ws_addr: tuple[str, int] = ("", 0)
        self._live_addr: tuple[str, int] = ("", 0)
        # The TLS extension (tls.py): the WebSocket listeners behind TLS, as a proxy would put them.
        self.tls = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> DevServer:
        self.loop = asyncio.get_running_loop()
        self.recorder.loop_thread = threading.get_ident()
        opts = self.options
        bind = socket.getaddrinfo(opts.host, None, type=socket.SOCK_STREAM)[0]
        family, address = bind[0], str(bind[4][0])
        if opts.tls and self.tls is None:
            from .tls import ServerTLS

            self.tls = ServerTLS(opts.tls_dir, opts.tls_hostnames, opts.tls_not_before)
        ws_scheme = "wss" if opts.tls else "ws"
        rpc = await self._listen(rpc_handler(self.dispatcher), family, address, opts.rpc_port, limit=64 << 20)
        self._rpc_addr = rpc.sockets[0].getsockname()[:2]
        listening = [f"rpc {hostport(*self._rpc_addr)}"]
        if opts.serves_v2:
            ws = await self._listen(self.host.handle_ws, family, address, opts.ws_port, rcvbuf=opts.ws_recv_buffer,
                                    sndbuf=opts.ws_send_buffer, tls="v2")
            self._ws_addr = ws.sockets[0].getsockname()[:2]
            self.host.ws_url = f"{ws_scheme}://{hostport(*self._ws_addr)}{wire.WS_PATH}"
            handler = rest_handler(lambda: self._rpc_addr, lambda: self.faults.rest_rpc_unreachable)
            rest = await self._listen(handler, family, address, opts.rest_port)
            self._rest_addr = rest.sockets[0].getsockname()[:2]
            listening += [f"rest {self.rest_url}", f"v2 ws {self.ws_url}"]
        if opts.serves_live:
            live = await self._listen(self.host.handle_live_ws, family, address, opts.live_ws_port,
                                      rcvbuf=opts.ws_recv_buffer, sndbuf=opts.ws_send_buffer, tls="live")
            self._live_addr = live.sockets[0].getsockname()[:2]
            scheme = "wss" if opts.tls else opts.live_ws_scheme
            self.host.live_ws_base = f"{scheme}://{hostport(*self._live_addr)}"
            listening.append(f"live ws {self.live_ws_url}")
        log.info(
            "meerkat devserver ready (surface %s): %s, session %s, reply audio %s (%d ms)",
            opts.surface,
            ", ".join(listening),
            self.session_id,
            self.host.reply.source,
            self.host.reply.duration_ms,
        )
        return self

    async def _listen(
        self,
        handler: Handler,
        family: int,
        address: str,
        port: int,
        limit: int = 1 << 16,
        rcvbuf: int | None = None,
        sndbuf: int | None = None,
        tls: str | None = None,
    ) -> asyncio.base_events.Server:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:  # accepted sockets inherit the listener's buffer sizes
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        sock.bind((address, port))
        sock.listen(64)
        sock.setblocking(False)

        server_tls = self.tls if tls else None
        upgrade = server_tls is not None and hasattr(asyncio.StreamWriter, "start_tls")

        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.add(writer)
            try:
                if upgrade:
                    # The handshake here rather than in start_server(ssl=), so that failed ones
                    # are counted too (a client that fails verification must not retry).
                    try:
                        await writer.start_tls(server_tls.context, ssl_handshake_timeout=10)
                    except (OSError, asyncio.TimeoutError, EOFError) as exc:
                        server_tls.count(tls, exc)
                        log.info("TLS handshake on the %s listener failed: %s", tls, exc)
                        writer.transport.abort()
                        return
                    server_tls.count(tls, None)
                await handler(reader, writer)
            finally:
                self._writers.discard(writer)

        # Python 3.10 has no StreamWriter.start_tls: the listener does the handshakes itself
        # then, and only the successful ones reach the counter.
        ssl_ctx = server_tls.context if server_tls is not None and not upgrade else None
        server = await asyncio.start_server(tracked, sock=sock, limit=limit, ssl=ssl_ctx)
        self._servers.append(server)
        return server

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        await self.host.close_all()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._background):
            task.cancel()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)
        self._servers.clear()
        self.recorder.close()
        if self.tls is not None and self.options.tls_dir is None:
            self.tls.close()  # the temporary CA directory goes with the server
        log.info("meerkat devserver stopped")

    @classmethod
    @contextlib.contextmanager
    def running(cls, options: ServerOptions | None = None, **overrides: Any) -> Iterator[DevServer]:
        """Run the server on its own loop in a background thread for the `with` block."""
        server = cls(options, **overrides)
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(server.start())
            except BaseException as exc:  # reported to the caller below
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        thread = threading.Thread(target=run, name="meerkat-devserver", daemon=True)
        thread.start()
        if not started.wait(30):
            raise RuntimeError("devserver did not start within 30 s")
        if failure:
            raise failure[0]
        try:
            yield server
        finally:
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(15)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(15)

    # -- addresses --------------------------------------------------------------------------

    @property
    def rpc_address(self) -> tuple[str, int]:
        return self._rpc_addr

    @property
    def surface(self) -> str:
        return self.options.surface

    @property
    def rest_url(self) -> str:
        """v2 only (the REST proxy)."""
        return f"http://{hostport(*self._rest_addr)}"

    @property
    def ws_url(self) -> str:
        """v2: ws://host:port/realtime/ws."""
        return self.host.ws_url

    @property
    def live_ws_url(self) -> str:
        """live: ws://host:port/live/ws (transport.url adds ?token=&channel=&format=)."""
        return self.host.live_ws_base + LIVE_WS_PATH if self.host.live_ws_base else ""

    @property
    def session_id(self) -> str:
        return self.options.session_id

    @property
    def target(self) -> dict:
        return {"type": "session_target", "session_id": self.session_id}

    @property
    def mob_target(self) -> dict | None:
        """The v2 mob_member target of the `mob_member` option (None without one)."""
        mob = self.options.mob
        if mob is None:
            return None
        return {"type": "mob_member", "mob_id": mob[0], "agent_identity": mob[1]}

    def ready_line(self) -> str:
        """The one JSON line `meerkat-devserver` prints on stdout when it is ready."""
        line: dict[str, Any] = {"surface": self.surface, "rpc": hostport(*self._rpc_addr)}
        if self.options.serves_v2:
            line["rest"] = self.rest_url
            line["ws_url"] = self.ws_url
        if self.options.serves_live:
            line["live_ws"] = self.live_ws_url
        line["session_id"] = self.session_id
        if self.tls is not None:
            line["ca_der"] = str(self.tls.ca_der)  # for the device's tls.ca_file
        if self.options.mob is not None:
            line["mob_member"] = self.options.mob_member
            line["mob_session_id"] = self.options.mob_session_id
        return json.dumps(line)

    # -- running things in the server's loop ------------------------------------------------

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run `fn()` in the server's loop and return its result; a coroutine it returns is
        started as a background task (not awaited), so a blocked socket cannot hang the caller."""
        if self.loop is None:
            raise RuntimeError("the server is not started")

        def invoke() -> Any:
            result = fn()
            if asyncio.iscoroutine(result):
                task = asyncio.ensure_future(result)
                self._background.add(task)
                task.add_done_callback(self._background.discard)
                return None
            return result

        if threading.get_ident() == self.recorder.loop_thread:
            return invoke()

        async def run() -> Any:
            return invoke()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def _channel(self, channel: int | str | None) -> Any:
        """A v2 Channel (int) or a live socket (str channel_id); None: the most recently opened
        v2 primary or admitted live socket that is still open."""
        if channel is None:
            candidates: list[tuple[float, Any]] = []
            primary = self.host.primary()
            if primary is not None and primary.opened and not primary.closed:
                candidates.append((primary.opened_at, primary))
            for live in self.host.live_channels.values():
                if live.is_open and live.socket is not None:
                    candidates.append((live.socket.opened_at, live.socket))
            if not candidates:
                raise RuntimeError("no channel is open")
            return max(candidates, key=lambda c: c[0])[1]
        if isinstance(channel, str):
            live = self.host.live_channels.get(channel)
            if live is None or live.socket is None:
                raise RuntimeError(f"no live socket for channel {channel}")
            return live.socket
        try:
            return self.host.channels[channel]
        except KeyError:
            raise RuntimeError(f"no channel {channel}") from None

    def _live(self, channel: str | None) -> LiveChannel:
        channels = self.host.live_channels
        if channel is None:
            open_ones = [c for c in channels.values() if c.is_open]
            if not open_ones:
                raise RuntimeError("no live channel is open")
            return open_ones[-1]
        try:
            return channels[channel]
        except KeyError:
            raise RuntimeError(f"no live channel {channel}") from None

    # -- bootstrap shortcuts ------------------------------------------------------------------

    def open_info(
        self,
        role: str = "primary",
        turning_mode: str = "provider_managed",
        reconnect_policy: dict | None = None,
        target: dict | None = None,
        channel_config: dict | None = None,
    ) -> dict:
        """v2: mint a token in-process (what realtime/open_info returns, without the TCP trip)."""
        params: dict[str, Any] = {"target": target or self.target, "role": role, "turning_mode": turning_mode}
        if reconnect_policy is not None:
            params["reconnect_policy"] = reconnect_policy
        if channel_config is not None:
            params["channel_config"] = channel_config
        return self.rpc("realtime/open_info", params)

    def live_open(self, turning_mode: str | None = None, session_id: str | None = None) -> dict:
        """live: open a channel in-process (what live/open returns)."""
        params: dict[str, Any] = {"session_id": session_id or self.session_id}
        if turning_mode is not None:
            params["turning_mode"] = turning_mode
        return self.rpc("live/open", params)

    def rpc(self, method: str, params: Any = None, timeout: float = 10.0) -> Any:
        """Call a JSON-RPC method in-process (not recorded in rpc_calls); RpcError on an error
        answer. From the server's own loop only methods that answer at once work."""
        if self.loop is None:
            raise RuntimeError("the server is not started")
        coro = self.dispatcher.call(method, params)
        if threading.get_ident() == self.recorder.loop_thread:
            try:
                coro.send(None)
            except StopIteration as done:
                return done.value
            coro.close()
            raise RuntimeError(f"{method} cannot complete inside the server loop; use JSON-RPC")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def set_realm(self, realm: str) -> None:
        """Change the process realm (tokens minted before now stop being redeemable)."""
        self.call(lambda: setattr(self.host, "realm", realm))

    def status(self) -> dict:
        """v2: the session target's status (what realtime/status reports)."""
        return dict(self.host.target.status)

    def live_status(self, channel: str | None = None) -> str:
        """live: a channel's status (opening, ready, closed)."""
        return self.call(lambda: self._live(channel).status)

    # -- faults (thread-safe; act on the primary channel unless `channel` is given) ----------

    def force_reconnect_cycle(
        self, succeed: bool = True, failures: int | None = None, channel: int | None = None
    ) -> bool:
        """v2: start a reconnect cycle: `failures` attempts fail first (default 0 when
        `succeed`, every attempt when not). False if one is already running."""
        count = failures if failures is not None else (0 if succeed else 1 << 30)
        return self.call(lambda: self._v2(channel).start_reconnect(count))

    def _v2(self, channel: int | None) -> Any:
        if channel is None:
            primary = self.host.primary()
            if primary is None or not primary.opened:
                raise RuntimeError("no v2 primary channel is open")
            return primary
        return self._channel(channel)

    def force_provider_error(
        self, code: str = "authentication_failed", message: str | None = None, channel: int | str | None = None
    ) -> None:
        """A terminal provider error. v2: channel.error{code}, channel.closed{code}, dropped
        socket. live: the channel ends and the socket is dropped with nothing published."""
        target = self._channel(channel)
        if isinstance(target, LiveSocket):
            assert target.channel is not None
            live = target.channel
            self.call(lambda: live.terminate(message or f"devserver injected provider error ({code})"))
            return
        if code not in wire.PROVIDER_ERROR_CODES:
            raise ValueError(f"code must be one of {wire.PROVIDER_ERROR_CODES}")
        self.call(lambda: target.provider_error(code, message))

    def force_provider_close(self, channel: int | str | None = None) -> None:
        """The provider's event stream ends cleanly. v2: reconnect if input is pending, else
        the channel is left without a provider session (inputs get channel_reconnecting).
        live: status_changed{closed}, then the socket is dropped."""
        target = self._channel(channel)
        if isinstance(target, LiveSocket):
            assert target.channel is not None
            live = target.channel
            self.call(live.provider_eof)
            return
        self.call(target.force_provider_close)

    def expire_tokens(self, channel: str | None = None) -> int:
        """live: every outstanding token (of one channel) is expired now; returns how many."""
        def run() -> int:
            tokens = self.host.live_tokens.outstanding(channel)
            for token in tokens:
                token.expires_mono = 0.0
            return len(tokens)
        return self.call(run)

    def consume_tokens(self, channel: str | None = None) -> int:
        """live: every outstanding token (of one channel) counts as used; returns how many."""
        def run() -> int:
            tokens = self.host.live_tokens.outstanding(channel)
            for token in tokens:
                token.consumed = True
            return len(tokens)
        return self.call(run)

    def inject(self, kind: str, size: int | None = None, channel: int | str | None = None) -> None:
        if kind not in INJECT_KINDS:
            raise ValueError(f"kind must be one of {INJECT_KINDS}")
        target = self._channel(channel)
        self.call(lambda: target.inject(kind, size))

    def pause_reading(self, seconds: float, channel: int | str | None = None) -> None:
        """Stop reading the channel's socket for `seconds` (the client meets TCP backpressure)."""
        target = self._channel(channel)
        self.call(lambda: target.conn.pause_reading(seconds))

    def drop(self, mode: str = "reset", channel: int | str | None = None) -> None:
        """Kill the connection now: "reset" (RST), "close" (FIN, no close frame), "silent"."""
        target = self._channel(channel)
        self.call(lambda: target.drop(mode))

    # -- recording ------------------------------------------------------------------------

    def frames(self, channel: int | str | None = None) -> list[dict]:
        """Every client message received: {"t", "channel", "kind", "frame"} (frame = parsed
        JSON, or the raw text if not JSON; None for binary/ping/pong/close, with "size").
        `channel`: a v2 connection number or a live channel_id."""
        return self.recorder.frames(channel)

    def client_frames(self, channel: int | str | None = None, type: str | None = None) -> list[dict]:
        """The parsed client frames (dicts) only, optionally of one `type` (v2 frame type, or
        live input chunk `kind`)."""
        return [
            e["frame"]
            for e in self.recorder.frames(channel)
            if isinstance(e["frame"], dict)
            and (type is None or e["frame"].get("type") == type or e["frame"].get("kind") == type)
        ]

    def sent_frames(self, channel: int | str | None = None) -> list[dict]:
        """Every frame sent: {"t", "channel", "kind", "frame"} (kind "text" for protocol frames,
        "close" for a 1008 close, "inject" for injected faults)."""
        return self.recorder.sent_frames(channel)

    def events(self, channel: int | str | None = None, type: str | None = None) -> list[dict]:
        """v2: the `event` objects of the channel.event frames sent; live: the observation
        frames sent (`type` matches the `observation` name); optionally of one type."""
        out = []
        for entry in self.recorder.sent_frames(channel):
            frame = entry["frame"]
            if entry["kind"] != "text" or not isinstance(frame, dict):
                continue
            if frame.get("type") == "channel.event":
                if type is None or frame["event"].get("type") == type:
                    out.append(frame["event"])
            elif "observation" in frame:
                if type is None or frame["observation"] == type:
                    out.append(frame)
        return out

    def observations(self, channel: str | None = None, name: str | None = None) -> list[dict]:
        """live: the observation frames sent, optionally of one `observation` name."""
        return [e for e in self.events(channel, name) if "observation" in e]

    def rpc_calls(self, method: str | None = None) -> list[dict]:
        """Every JSON-RPC request received over TCP with its response: {"t", "t_done",
        "method", "request", "response"}."""
        return self.recorder.rpc_calls(method)

    def input_pcm(self, channel: int | str | None = None) -> bytes:
        """Input audio the provider accepted (PCM16 mono 24 kHz), one channel or all."""
        return self.recorder.input_pcm(channel)

    def items(self) -> list[dict]:
        """Every assistant audio item generated: ids, text, total/sent ms, chunk sizes, state."""
        return self.call(lambda: [item.snapshot() for item in self.host.items.values()])

    def channels(self) -> list[dict]:
        """v2 channels then live channels (each with "surface")."""
        return self.call(lambda: [c.describe() for c in self.host.channels.values()]
                         + [c.describe() for c in self.host.live_channels.values()])

    def on_frame(self, hook: Callable[[dict], None]) -> Callable[[], None]:
        """`hook(entry)` runs in the server's loop thread for every client message."""
        return self.recorder.on_frame(hook)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
        """Block until `predicate()` is truthy (re-checked whenever something is recorded or a
        channel changes); returns its value; TimeoutError after `timeout` seconds."""
        return self.recorder.wait_for(predicate, timeout, what)

    async def until(self, predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
        """`wait_for` for code running in the server's own loop."""
        return await self.recorder.until(predicate, timeout, what)

    def wait_event(
        self, type: str, n: int = 1, timeout: float = 5.0, channel: int | str | None = None
    ) -> dict:
        """The n-th (1-based) event (v2) or observation (live) of `type` sent (on `channel`),
        waiting for it."""

        def nth() -> dict | None:
            found = self.events(channel, type)
            return found[n - 1] if len(found) >= n else None

        return self.wait_for(nth, timeout, f"event {type} #{n}")

    def wait_channel_ended(self, channel: int | str | None = None, timeout: float = 5.0) -> dict:
        """Wait until a channel (default: the last one opened, either surface) has ended."""

        def ended() -> dict | None:
            if isinstance(channel, str) or (channel is None and self._last_is_live()):
                lives = self.host.live_channels
                live = lives.get(channel) if channel is not None else (list(lives.values())[-1] if lives else None)
                if live is None or live.is_open:
                    return None
                if live.socket is not None and not live.socket._torn_down:
                    return None
                return live.describe()
            chans = self.host.channels
            cid = channel if channel is not None else (max(chans) if chans else None)
            ch = chans.get(cid) if cid is not None else None
            return ch.describe() if ch is not None and ch._torn_down else None

        return self.wait_for(ended, timeout, "channel ended")

    def _last_is_live(self) -> bool:
        lives = list(self.host.live_channels.values())
        chans = self.host.channels
        if not lives:
            return False
        if not chans:
            return True
        return lives[-1].created > max(c.created for c in chans.values())
