"""The live JSON-RPC methods: `live/open|status|close|refresh|send_input|commit_input|interrupt|
truncate` and the mob member forms `mob/member_live_open|close|status|control`.

Errors follow meerkat-live.md 2.7 and 5.2: params that do not deserialize are "Missing params"
or "Invalid params: ..." answered with `"id": null` (the live handlers build them without the
request id); unknown or closed channels are -32602 "channel {id} not found" (`live/status`
still answers `closed` for 60 s); control verbs answer queue acceptance only, and their
failures happen later on the channel: `live/commit_input` on a `provider_managed` channel or
with nothing staged answers `committed` and then ends the channel; a `live/truncate` with an
unknown item or beyond the item's audio answers `truncated` and then ends it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from . import live_wire as lw
from .live_channel import LiveChannel, deliver
from .rpc import INTERNAL_ERROR, INVALID_PARAMS, Call, RpcError, field_enum, field_str, field_uint, obj
from .tokens import token_prefix

if TYPE_CHECKING:
    from .host import Host, Session

log = logging.getLogger("meerkat_devserver.rpc")

U32_MAX = 0xFFFFFFFF


def _params(params: Any, parse) -> dict:
    """serde's parse_params: failures are answered with id null."""
    if params is None:
        raise RpcError(INVALID_PARAMS, "Missing params", null_id=True)
    try:
        return parse(params)
    except ValueError as exc:
        raise RpcError(INVALID_PARAMS, f"Invalid params: {exc}", null_id=True) from None


def _deny_unknown(o: dict, allowed: tuple[str, ...]) -> None:
    for name in o:
        if name not in allowed:
            raise ValueError(f"unknown field `{name}`, expected one of {', '.join(f'`{a}`' for a in allowed)}")


def parse_open(value: Any) -> dict:
    o = obj(value, "LiveOpenParams")  # unknown fields are ignored
    return {
        "session_id": field_str(o, "session_id"),
        "turning_mode": field_enum(o, "turning_mode", lw.TURNING_MODES, optional=True),
        "transport": field_enum(o, "transport", lw.TRANSPORTS, optional=True),
        "seed_max_chars": field_uint(o, "seed_max_chars", optional=True, width="usize"),
    }


def parse_member_open(value: Any) -> dict:
    o = obj(value, "MobMemberLiveOpenParams")
    _deny_unknown(o, ("mob_id", "agent_identity", "turning_mode", "transport"))
    return {
        "mob_id": field_str(o, "mob_id"),
        "agent_identity": field_str(o, "agent_identity"),
        "turning_mode": field_enum(o, "turning_mode", lw.TURNING_MODES, optional=True),
        "transport": field_enum(o, "transport", lw.TRANSPORTS, optional=True),
    }


def parse_channel(value: Any) -> dict:
    o = obj(value, "LiveChannelParams")
    return {"channel_id": field_str(o, "channel_id")}


def parse_truncate(value: Any) -> dict:
    o = obj(value, "LiveTruncateParams")
    return {
        "channel_id": field_str(o, "channel_id"),
        "item_id": field_str(o, "item_id"),
        "content_index": field_uint(o, "content_index", U32_MAX, width="u32"),
        "audio_played_ms": field_uint(o, "audio_played_ms"),
    }


def parse_commit(value: Any) -> dict:
    o = obj(value, "LiveCommitInputParams")
    return {"channel_id": field_str(o, "channel_id"), "response_modality": o.get("response_modality")}


def parse_send_input(value: Any) -> dict:
    o = obj(value, "LiveSendInputParams")
    channel_id = field_str(o, "channel_id")
    if "chunk" not in o:
        raise ValueError("missing field `chunk`")
    chunk = o["chunk"]
    if not isinstance(chunk, dict) or not isinstance(chunk.get("kind"), str):
        raise ValueError("invalid chunk, expected an internally tagged LiveInputChunkWire")
    return {"channel_id": channel_id, "chunk": chunk}


class LiveApi:
    def __init__(self, host: Host):
        self.host = host

    def methods(self) -> dict:
        return {
            "live/open": self.open,
            "live/status": self.status,
            "live/close": self.close,
            "live/refresh": self.refresh,
            "live/send_input": self.send_input,
            "live/commit_input": self.commit_input,
            "live/interrupt": self.interrupt,
            "live/truncate": self.truncate,
            "mob/member_live_open": self.member_open,
            "mob/member_live_close": self.member_close,
            "mob/member_live_status": self.member_status,
            "mob/member_live_control": self.member_control,
        }

    # -- opening ----------------------------------------------------------------------------

    async def open(self, params: Any, call: Call) -> dict:
        p = _params(params, parse_open)
        session_id = p["session_id"]
        if not lw.is_uuid(session_id):
            raise RpcError(INVALID_PARAMS, f"invalid session_id: {lw.uuid_error(session_id)}")
        if p["seed_max_chars"] == 0:
            raise RpcError(INVALID_PARAMS, "live seed window must be greater than zero")
        session = self.host.sessions.get(session_id)
        if session is None:
            raise RpcError(INVALID_PARAMS, f"session {session_id} not found")
        return await self._open_channel(session, p["turning_mode"], p["transport"])

    async def _open_channel(self, session: Session, turning_mode: str | None, transport: str | None) -> dict:
        host, faults = self.host, self.host.faults
        forced = faults.bootstrap_error
        if forced is not None:
            raise RpcError(forced[0], forced[1])
        if (session.live is not None and session.live.is_open) or session.target.primary is not None:
            # (A v2 primary only exists with surface "both": one consumer per session.)
            raise RpcError(INVALID_PARAMS, f"session {session.session_id} already has an active live channel")
        if transport == "webrtc":
            raise RpcError(INVALID_PARAMS, "live transport webrtc is not configured")
        if faults.open_error is not None:
            code = faults.open_error
            faults.consume("open_error")
            raise RpcError(INTERNAL_ERROR, f"failed to open provider session: devserver fault open_error ({code})")
        if faults.open_delay > 0:  # the provider session takes this long to open
            delay = faults.open_delay
            faults.consume("open_delay")
            await asyncio.sleep(delay)
        continuity = "transcript_only" if session.history > 0 else "fresh"
        channel, token = host.open_live_channel(session, turning_mode or "provider_managed")
        log.info("live/open: channel %s (%s) token %s", channel.id, channel.turning_mode, token_prefix(token))
        return {
            "channel_id": channel.id,
            "transport": {"transport": "websocket", "url": host.live_url(channel.id, token), "token": token},
            "capabilities": lw.capabilities(),
            "continuity": {"mode": continuity},
        }

    # -- channel verbs ----------------------------------------------------------------------

    def _channel(self, channel_id: str, session: Session | None = None, allow_closed: bool = False) -> LiveChannel:
        channel = self.host.live_channel(channel_id)
        if channel is None or (not allow_closed and not channel.is_open) or (
            session is not None and channel.session is not session
        ):
            raise RpcError(INVALID_PARAMS, f"channel {channel_id} not found")
        return channel

    def status(self, params: Any, call: Call) -> dict:
        p = _params(params, parse_channel)
        channel = self._channel(p["channel_id"], allow_closed=True)
        return {"channel_id": channel.id, "status": {"status": channel.status}}

    def close(self, params: Any, call: Call) -> dict:
        p = _params(params, parse_channel)
        self._channel(p["channel_id"]).close("live/close")
        return {"status": "closed"}

    def refresh(self, params: Any, call: Call) -> dict:
        p = _params(params, parse_channel)
        self._channel(p["channel_id"])
        return {"status": "queued"}

    def interrupt(self, params: Any, call: Call) -> dict:
        p = _params(params, parse_channel)
        self._channel(p["channel_id"]).adapter.interrupt()
        return {"status": "interrupted"}

    def truncate(self, params: Any, call: Call) -> dict:
        p = _params(params, parse_truncate)
        if not p["item_id"]:
            raise RpcError(INVALID_PARAMS, "item_id must be non-empty")
        channel = self._channel(p["channel_id"])
        channel.adapter.truncate(p["item_id"], p["content_index"], p["audio_played_ms"])
        return {"status": "truncated"}

    def commit_input(self, params: Any, call: Call) -> dict:
        p = _params(params, parse_commit)
        modality = p["response_modality"]
        if modality is not None:
            if not isinstance(modality, dict) or modality.get("modality") not in ("audio", "text"):
                raise RpcError(INVALID_PARAMS, f"invalid response_modality: {modality!r}")
            modality = modality["modality"]
        channel = self._channel(p["channel_id"])
        failure = channel.adapter.commit(modality or "audio")
        if failure is not None:
            # Accepted onto the queue, then terminal in the adapter's pump.
            call.after.append(lambda: channel.terminate(failure))
        return {"status": "committed"}

    def send_input(self, params: Any, call: Call) -> dict:
        p = _params(params, parse_send_input)
        channel_id = p["channel_id"]
        if not channel_id or len(channel_id.encode()) > lw.MAX_CHANNEL_ID_BYTES:
            reason = ({"kind": "other", "detail": "live_channel_id_empty"} if not channel_id else
                      {"kind": "input_too_large", "max_bytes": lw.MAX_CHANNEL_ID_BYTES,
                       "actual_bytes": len(channel_id.encode())})
            raise RpcError(INVALID_PARAMS, "live channel identity is empty or too large",
                           {"error_code": {"code": "config_rejected", "reason": reason}})
        raw = p["chunk"]
        try:
            chunk = lw.parse_chunk(raw)
        except lw.ChunkError as exc:
            if "base64" in str(exc):
                raise RpcError(INVALID_PARAMS, f"invalid base64 in live audio input chunk: {exc}") from None
            raise RpcError(INVALID_PARAMS, f"Invalid params: {exc}", null_id=True) from None
        channel = self._channel(channel_id)
        if channel.status != "ready":
            raise RpcError(INTERNAL_ERROR, lw.not_ready_message(channel.id, channel.status))
        if chunk["kind"] == "image":
            # The fake model takes images without looking; the receipt follows.
            item_id = self.host.ids.item()
            channel.adapter.reject_later({
                "observation": "user_content_committed", "idempotency_key": chunk["idempotency_key"],
                "item_id": item_id, "content_index": 0, "media_type": chunk["mime"]})
        else:
            deliver(channel, chunk, channel.id)
        return {"status": "sent"}

    # -- mob members ------------------------------------------------------------------------

    def _member(self, mob_id: str, identity: str) -> Session:
        known = self.host.options.mob
        if known is None or known[0] != mob_id:
            raise RpcError(INVALID_PARAMS, f"mob not found: {mob_id}")
        session = self.host.mob_session(mob_id, identity)
        if session is None:
            raise RpcError(INVALID_PARAMS, f"mob {mob_id} has no member {identity}")
        return session

    async def member_open(self, params: Any, call: Call) -> dict:
        p = _params(params, parse_member_open)
        session = self._member(p["mob_id"], p["agent_identity"])
        return await self._open_channel(session, p["turning_mode"], p["transport"])

    def _member_channel_params(self, value: Any, need_channel: bool = True) -> dict:
        o = obj(value, "MobMemberLiveChannelParams")
        out = {"mob_id": field_str(o, "mob_id"), "agent_identity": field_str(o, "agent_identity"),
               "channel_id": field_str(o, "channel_id", optional=not need_channel)}
        if "verb" in o:
            out["verb"] = o["verb"]
        return out

    def member_close(self, params: Any, call: Call) -> dict:
        p = _params(params, self._member_channel_params)
        session = self._member(p["mob_id"], p["agent_identity"])
        self._channel(p["channel_id"], session).close("mob/member_live_close")
        return {"status": "closed"}

    def member_status(self, params: Any, call: Call) -> dict:
        p = _params(params, lambda v: self._member_channel_params(v, need_channel=False))
        session = self._member(p["mob_id"], p["agent_identity"])
        channel_id = p["channel_id"] or (session.live.id if session.live is not None else "")
        channel = self._channel(channel_id, session, allow_closed=True)
        return {"channel_id": channel.id, "status": {"status": channel.status}}

    def member_control(self, params: Any, call: Call) -> dict:
        p = _params(params, self._member_channel_params)
        session = self._member(p["mob_id"], p["agent_identity"])
        verb = p.get("verb")
        name = verb.get("verb") if isinstance(verb, dict) else None
        if name not in ("commit_input", "interrupt", "truncate", "refresh"):
            raise RpcError(INVALID_PARAMS, f"Invalid params: unknown verb {name!r}", null_id=True)
        self._channel(p["channel_id"], session)
        forwarded = {"channel_id": p["channel_id"]}
        if name == "truncate":
            assert isinstance(verb, dict)
            forwarded.update({k: verb.get(k) for k in ("item_id", "content_index", "audio_played_ms")})
            return self.truncate(forwarded, call)
        if name == "commit_input":
            return self.commit_input(forwarded, call)
        if name == "interrupt":
            return self.interrupt(forwarded, call)
        return self.refresh(forwarded, call)
