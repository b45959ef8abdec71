"""The host: the agent's sessions, the token stores, the channels of both surfaces, and the
things they share (the scripted agent, provider ids, the reply items, seeded randomness).

One `rkat-rpc` process hosts one realm; this server hosts one session (`session_id`) and,
with `mob_member`, the bridge session of one mob member hosting the same agent. A session has
at most one v2 primary channel (any number of observers) and at most one live channel.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from dataclasses import dataclass, field

from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from . import live_wire as lw
from . import wire
from .agent import IdSource, ReplyItem, ScriptedAgent
from .audio import load_reply
from .channel import Channel
from .live_channel import LiveChannel, LiveSocket, parse_query
from .options import ServerOptions
from .recording import Recorder
from .tokens import Grant, LiveTokenStore, TokenStore
from .ws import WsConnection

log = logging.getLogger("meerkat_devserver.host")


class Target:
    """A v2 realtime target: its status and its primary/observer channels."""

    def __init__(self, session_id: str):
        self.session_id = session_id
        self.status: dict = wire.status_closed()  # what realtime/status reports
        self.primary: Channel | None = None
        self.observers: set[Channel] = set()
        self.history = 0

    def set_status(self, status: dict) -> None:
        self.status = dict(status)
        for observer in list(self.observers):
            observer.poll_status()


@dataclass
class Session:
    session_id: str
    mob: tuple[str, str] | None = None  # (mob_id, agent_identity) of a mob member's bridge session
    target: Target = field(init=False)
    live: LiveChannel | None = None
    history: int = 0  # user turns committed (live continuity: transcript_only once > 0)

    def __post_init__(self) -> None:
        self.target = Target(self.session_id)


class Host:
    def __init__(self, options: ServerOptions, recorder: Recorder):
        self.options = options
        self.faults = options.faults
        self.recorder = recorder
        self.realm = options.realm
        self.tokens = TokenStore(options.token_ttl)
        self.live_tokens = LiveTokenStore(options.token_ttl)
        self.sessions: dict[str, Session] = {options.session_id: Session(options.session_id)}
        if options.mob is not None:
            self.sessions[options.mob_session_id] = Session(options.mob_session_id, options.mob)
        self.reply = load_reply(options.reply_wav, options.reply_text)
        self.agent = ScriptedAgent(options, self.reply)
        self.ids = IdSource(options.id_style, options.seed)
        self.items: dict[str, ReplyItem] = {}
        self.rng = random.Random(options.seed)
        self.channels: dict[int, Channel] = {}
        self.live_channels: dict[str, LiveChannel] = {}
        self.live_sockets: set[LiveSocket] = set()
        self.observer_frames_lost = 0
        self.ws_url = ""  # v2: ws://host:port/realtime/ws
        self.live_ws_base = ""  # live: scheme://host:port
        self._ids = itertools.count(1)
        self._connections: set[asyncio.Task] = set()

    # -- sessions -----------------------------------------------------------------------

    @property
    def main(self) -> Session:
        return self.sessions[self.options.session_id]

    @property
    def target(self) -> Target:
        return self.main.target

    def mob_session(self, mob_id: str, identity: str) -> Session | None:
        for session in self.sessions.values():
            if session.mob == (mob_id, identity):
                return session
        return None

    def v2_session(self, target: dict) -> Session:
        """The Session of a resolved v2 target dict (session_target or mob_member)."""
        if target["type"] == "mob_member":
            session = self.mob_session(target["mob_id"], target["agent_identity"])
            assert session is not None
            return session
        return self.sessions[target["session_id"]]

    def v2_target(self, target: dict) -> Target:
        return self.v2_session(target).target

    def mint(self, role: str, mode: str, target: dict, policy: dict | None, channel_config: dict | None) -> Grant:
        modes = self.faults.grant_turning_modes
        caps = wire.capabilities(
            tuple(modes) if modes is not None else self.options.turning_modes, self.options.input_rate_hz
        )
        return self.tokens.mint(
            role,
            mode,
            target,
            caps,
            policy if policy is not None else dict(self.options.reconnect_policy),
            self.realm,
            channel_config,
        )

    def primary(self) -> Channel | None:
        return self.target.primary

    # -- live channels ------------------------------------------------------------------

    def live_channel_open(self, channel_id: str) -> bool:
        channel = self.live_channels.get(channel_id)
        return channel is not None and channel.is_open

    def live_channel(self, channel_id: str) -> LiveChannel | None:
        """A channel live/status may still report (None: never existed or forgotten)."""
        channel = self.live_channels.get(channel_id)
        if channel is not None and channel.expired():
            del self.live_channels[channel_id]
            return None
        return channel

    def open_live_channel(self, session: Session, turning_mode: str) -> tuple[LiveChannel, str]:
        channel = LiveChannel(self, session, turning_mode)
        self.live_channels[channel.id] = channel
        session.live = channel
        fault = self.faults.token_fault
        if fault is not None:
            self.faults.consume("token_fault")
        token = self.live_tokens.mint(channel.id, fault)
        self.recorder.changed()
        return channel, token

    def live_url(self, channel_id: str, token: str) -> str:
        return f"{self.live_ws_base}{lw.WS_PATH}?token={token}&channel={channel_id}&format={lw.BINARY_FORMAT}"

    # -- WebSocket listeners ------------------------------------------------------------

    async def handle_ws(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The v2 `/realtime/ws` listener."""
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        conn = WsConnection(reader, writer, self.options.ws_max_message, self.options.ws_max_frame)
        try:
            request = await conn.handshake()
            if request is None:
                return
            cid = next(self._ids)
            channel = Channel(self, conn, cid)
            self.channels[cid] = channel
            log.info("ws %d: connected from %s", cid, conn.peer)
            await channel.serve()
        except Exception:
            log.exception("ws connection failed")
            conn.abort()
        finally:
            if task is not None:
                self._connections.discard(task)

    def _live_route(self, protocol: ServerProtocol, request: Request) -> Response:
        """The HTTP phase of `/live/ws` (meerkat-live.md 3.2): route, the upgrade extractor,
        the query extractor (400 for a missing token or channel), the connection limit (503);
        the token is not looked at before the upgrade."""
        if request.path.split("?", 1)[0] != lw.WS_PATH:
            return protocol.reject(404, "")
        response = protocol.accept(request)
        if response.status_code != 101:
            return response
        params = parse_query(request.path)
        for name in ("token", "channel"):
            if name not in params:
                return protocol.reject(400, f"Failed to deserialize query string: missing field `{name}`")
        if len(self.live_sockets) >= lw.MAX_LIVE_WS_CONNECTIONS:
            return protocol.reject(503, lw.SATURATED)
        return response

    async def handle_live_ws(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The `/live/ws` listener."""
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        limit = self.options.live_ws_max_message
        conn = WsConnection(reader, writer, limit, limit)
        try:
            request = await conn.handshake(self._live_route)
            if request is None:
                return
            params = parse_query(request.path)
            socket = LiveSocket(self, conn, params.get("channel", ""), params)
            self.live_sockets.add(socket)
            log.info("live ws: connected from %s for channel %s", conn.peer, socket.key)
            await socket.serve()
        except Exception:
            log.exception("live ws connection failed")
            conn.abort()
        finally:
            if task is not None:
                self._connections.discard(task)

    async def close_all(self) -> None:
        for channel in list(self.channels.values()):
            if not channel._torn_down:
                channel.conn.abort()
        for live in list(self.live_channels.values()):
            live.close("server stopped", drop_socket=False)
        for socket in list(self.live_sockets):
            socket.conn.abort()
        tasks = list(self._connections)
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        for task in tasks:
            if not task.done():
                task.cancel()


RealtimeHost = Host
