"""The realtime host: the one session target, its token store, its channels and their status.

One `rkat-rpc` process hosts one realm; this server hosts one session target (`session_id`).
Only one primary channel may be open on it; any number of observers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random

from . import wire
from .agent import IdSource, ReplyItem
from .audio import load_reply
from .channel import Channel
from .options import ServerOptions
from .recording import Recorder
from .tokens import Grant, TokenStore
from .ws import WsConnection

log = logging.getLogger("meerkat_devserver.host")


class Target:
    def __init__(self, session_id: str):
        self.session_id = session_id
        self.status: dict = wire.status_closed()  # what realtime/status reports
        self.primary: Channel | None = None
        self.observers: set[Channel] = set()

    def set_status(self, status: dict) -> None:
        self.status = dict(status)
        for observer in list(self.observers):
            observer.poll_status()


class RealtimeHost:
    def __init__(self, options: ServerOptions, recorder: Recorder):
        self.options = options
        self.faults = options.faults
        self.recorder = recorder
        self.realm = options.realm
        self.tokens = TokenStore(options.token_ttl)
        self.target = Target(options.session_id)
        self.reply = load_reply(options.reply_wav, options.reply_text)
        self.ids = IdSource()
        self.items: dict[str, ReplyItem] = {}
        self.rng = random.Random(options.seed)
        self.channels: dict[int, Channel] = {}
        self.observer_frames_lost = 0
        self.ws_url = ""
        self._ids = itertools.count(1)
        self._connections: set[asyncio.Task] = set()

    def mint(
        self,
        role: str,
        mode: str,
        target: dict,
        policy: dict | None,
        channel_config: dict | None,
    ) -> Grant:
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

    async def handle_ws(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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

    async def close_all(self) -> None:
        for channel in list(self.channels.values()):
            if not channel._torn_down:
                channel.conn.abort()
        tasks = list(self._connections)
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        for task in tasks:
            if not task.done():
                task.cancel()
