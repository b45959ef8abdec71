"""The v2 bootstrap methods: `realtime/open_info`, `realtime/status`, `realtime/capabilities`.

Checks run in the order of the v0.6.2 router (reference corrections 6; router.rs L760-960,
L1646-1670; handlers/realtime.rs L148-216):

1. structural target checks on the raw params: "missing params", "missing target",
   "missing target.type", "missing target.session_id", a session id that is not a UUID
   (-32602 with `SessionId::parse`'s text), "unsupported target.type 'x'";
2. the target parsed as a typed value ("invalid params: ..."), then resolved by the mob
   state: a mob-owned bridge session addressed as `session_target`, an unknown mob or
   identity (-32602, "internal error: ...");
3. the session registered (-32001 "Session not found: <id>");
4. the typed request ("Invalid params: ..."): role, turning mode, reconnect policy, channel
   config;
5. eligibility, then the turning mode against the capabilities (-32020).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from . import wire
from .live_wire import is_uuid, uuid_error
from .rpc import (
    CAPABILITY_UNAVAILABLE,
    INVALID_PARAMS,
    SESSION_NOT_FOUND,
    Call,
    RpcError,
    field_enum,
    field_str,
    field_uint,
    obj,
)
from .tokens import token_prefix

if TYPE_CHECKING:
    from .host import Host, Session

log = logging.getLogger("meerkat_devserver.rpc")

_POLICY_FIELDS = ("max_attempts", "initial_backoff_ms", "max_backoff_ms", "max_total_ms")
_TOOL_TIMEOUT_TYPES = ("default", "disabled", "finite")


def _invalid(message: str) -> RpcError:
    return RpcError(INVALID_PARAMS, message)


def parse_target(value: Any) -> dict:
    """The typed RealtimeChannelTarget (ValueError with serde's reason)."""
    target = obj(value, "RealtimeChannelTarget")
    kind = field_enum(target, "type", ("session_target", "mob_member"))
    if kind == "session_target":
        return {"type": kind, "session_id": field_str(target, "session_id")}
    return {"type": kind, "mob_id": field_str(target, "mob_id"), "agent_identity": field_str(target, "agent_identity")}


def parse_open_request(value: Any) -> dict:
    """The typed RealtimeOpenRequest (ValueError with serde's reason)."""
    params = obj(value, "RealtimeOpenRequest")
    if "target" not in params:
        raise ValueError("missing field `target`")
    out: dict[str, Any] = {
        "target": parse_target(params["target"]),
        "role": field_enum(params, "role", wire.ROLES),
        "turning_mode": field_enum(params, "turning_mode", wire.TURNING_MODES),
    }
    raw = params.get("reconnect_policy")
    if raw is not None:
        policy = obj(raw, "RealtimeReconnectPolicy")
        out["reconnect_policy"] = {  # max_attempts is a u32, the durations u64
            name: field_uint(policy, name, 0xFFFFFFFF, width="u32") if name == "max_attempts"
            else field_uint(policy, name)
            for name in _POLICY_FIELDS
        }
    raw = params.get("channel_config")
    if raw is not None:
        config = obj(raw, "RealtimeChannelConfig")
        timeout = config.get("tool_timeout")
        if timeout is not None:
            timeout = obj(timeout, "RealtimeToolTimeoutPolicy")
            if field_enum(timeout, "type", _TOOL_TIMEOUT_TYPES) == "finite":
                field_uint(timeout, "timeout_ms")
        out["channel_config"] = config
    return out


def parse_status_params(value: Any) -> dict:
    params = obj(value, "RealtimeStatusParams")
    if "target" not in params:
        raise ValueError("missing field `target`")
    return {"target": parse_target(params["target"])}


class V2Api:
    def __init__(self, host: Host):
        self.host = host

    def methods(self) -> dict:
        return {
            "realtime/open_info": self.open_info,
            "realtime/status": self.status,
            "realtime/capabilities": self.capabilities,
        }

    # -- the shared target resolution (router pre-dispatch) ---------------------------------

    def _structural(self, params: Any) -> None:
        if params is None:
            raise _invalid("missing params")
        target = params.get("target") if isinstance(params, dict) else None
        if target is None:
            raise _invalid("missing target")
        kind = target.get("type") if isinstance(target, dict) else None
        if not isinstance(kind, str):
            raise _invalid("missing target.type")
        if kind == "session_target":
            session_id = target.get("session_id")
            if not isinstance(session_id, str):
                raise _invalid("missing target.session_id")
            if not is_uuid(session_id):
                raise _invalid(uuid_error(session_id))
        elif kind != "mob_member":
            raise _invalid(f"unsupported target.type '{kind}'")

    def _resolve(self, params: Any) -> tuple[dict, Session]:
        self._structural(params)
        try:
            try:
                target = parse_open_request(params)["target"]
            except ValueError:
                target = parse_status_params(params)["target"]
        except ValueError as exc:
            raise _invalid(f"invalid params: {exc}") from None
        host = self.host
        if target["type"] == "mob_member":
            mob_id, identity = target["mob_id"], target["agent_identity"]
            known = host.options.mob
            if known is None or known[0] != mob_id:
                raise _invalid(f"internal error: mob not found: {mob_id}")
            session = host.mob_session(mob_id, identity)
            if session is None:
                raise _invalid(f"internal error: mob {mob_id} has no realtime binding for identity {identity}")
            return target, session
        session = host.sessions.get(target["session_id"])
        if session is not None and session.mob is not None:
            raise _invalid(
                f"internal error: session target {session.session_id} is a mob-owned bridge session; use "
                "realtime target type 'mob_member' with mob_id and agent_identity"
            )
        if session is None:
            raise RpcError(SESSION_NOT_FOUND, f"Session not found: {target['session_id']}")
        return target, session

    # -- methods ----------------------------------------------------------------------------

    def open_info(self, params: Any, call: Call) -> dict:
        target, _session = self._resolve(params)
        try:
            request = parse_open_request(params)
        except ValueError as exc:
            raise _invalid(f"Invalid params: {exc}") from None
        host = self.host
        forced = host.faults.bootstrap_error
        if forced is not None:
            raise RpcError(forced[0], forced[1])
        mode = request["turning_mode"]
        if mode not in host.options.turning_modes:
            raise RpcError(CAPABILITY_UNAVAILABLE, f"turning mode '{mode}' is not supported for this realtime target")
        grant = host.mint(request["role"], mode, target, request.get("reconnect_policy"), request.get("channel_config"))
        log.info("open_info: %s %s token %s expires %s", grant.role, mode, token_prefix(grant.token), grant.expires_at)
        return {
            "ws_url": host.ws_url,
            "open_token": grant.token,
            "expires_at": grant.expires_at,
            "target": target,
            "supported_protocol_versions": [wire.PROTOCOL_VERSION],
            "default_protocol_version": wire.PROTOCOL_VERSION,
            "capabilities": grant.capabilities,
        }

    def status(self, params: Any, call: Call) -> dict:
        _target, session = self._resolve(params)
        try:
            parse_status_params(params)
        except ValueError as exc:
            raise _invalid(f"Invalid params: {exc}") from None
        return {"status": dict(session.target.status)}

    def capabilities(self, params: Any, call: Call) -> dict:
        self._resolve(params)
        try:
            parse_status_params(params)
        except ValueError as exc:
            raise _invalid(f"Invalid params: {exc}") from None
        options = self.host.options
        return {"capabilities": wire.capabilities(options.turning_modes, options.input_rate_hz)}
