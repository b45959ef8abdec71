"""Bootstrap over JSON-RPC 2.0: `realtime/open_info`, `realtime/status`, `realtime/capabilities`.

`BootstrapApi` holds the method logic (shared with the REST proxy's error mapping);
`rpc_handler` exposes it as JSON lines over TCP like `rkat-rpc --tcp`. Reference section 1.2.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from . import wire
from .tokens import token_prefix

if TYPE_CHECKING:
    from .host import RealtimeHost

log = logging.getLogger("meerkat_devserver.rpc")

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SESSION_NOT_FOUND = -32001
CAPABILITY_UNAVAILABLE = -32020

_POLICY_FIELDS = ("max_attempts", "initial_backoff_ms", "max_backoff_ms", "max_total_ms")
_TOOL_TIMEOUT_TYPES = ("default", "disabled", "finite")


class RpcError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def to_json(self) -> dict:
        return {"code": self.code, "message": self.message}


def _invalid(reason: str) -> RpcError:
    return RpcError(INVALID_PARAMS, f"Invalid params: {reason}")


def _obj(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise _invalid(f"{what} must be an object")
    return value


def _str_field(obj: dict, name: str) -> str:
    if name not in obj:
        raise _invalid(f"missing field `{name}`")
    value = obj[name]
    if not isinstance(value, str):
        raise _invalid(f"field `{name}` must be a string")
    return value


def _enum_field(obj: dict, name: str, options: tuple[str, ...]) -> str:
    value = _str_field(obj, name)
    if value not in options:
        raise _invalid(f"unknown variant `{value}` for `{name}`, expected one of {list(options)}")
    return value


def _uint_field(obj: dict, name: str) -> int:
    if name not in obj:
        raise _invalid(f"missing field `{name}`")
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _invalid(f"field `{name}` must be a non-negative integer")
    return value


def parse_target(params: dict) -> dict:
    if "target" not in params:
        raise _invalid("missing field `target`")
    target = _obj(params["target"], "target")
    kind = _enum_field(target, "type", ("session_target", "mob_member"))
    if kind == "session_target":
        return {"type": kind, "session_id": _str_field(target, "session_id")}
    return {
        "type": kind,
        "mob_id": _str_field(target, "mob_id"),
        "agent_identity": _str_field(target, "agent_identity"),
    }


def parse_policy(params: dict) -> dict | None:
    raw = params.get("reconnect_policy")
    if raw is None:
        return None
    policy = _obj(raw, "reconnect_policy")
    return {name: _uint_field(policy, name) for name in _POLICY_FIELDS}


def parse_channel_config(params: dict) -> dict | None:
    raw = params.get("channel_config")
    if raw is None:
        return None
    config = _obj(raw, "channel_config")
    if "tool_timeout" in config and config["tool_timeout"] is not None:
        timeout = _obj(config["tool_timeout"], "tool_timeout")
        if _enum_field(timeout, "type", _TOOL_TIMEOUT_TYPES) == "finite":
            _uint_field(timeout, "timeout_ms")
    return config


class BootstrapApi:
    """The three realtime methods, plus `initialize` (optional, never gated on)."""

    def __init__(self, host: RealtimeHost):
        self.host = host

    def call(self, method: str, params: Any) -> Any:
        if method == "initialize":
            return {"server_info": {"name": "meerkat-devserver", "protocol": "realtime-v2"}}
        handler = {
            "realtime/open_info": self.open_info,
            "realtime/status": self.status,
            "realtime/capabilities": self.capabilities,
        }.get(method)
        if handler is None:
            raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")
        if params is None:
            raise _invalid("missing params")
        return handler(_obj(params, "params"))

    def _resolve(self, target: dict) -> None:
        if target["type"] == "mob_member":
            raise _invalid(f"unknown mob '{target['mob_id']}'")
        if target["session_id"] != self.host.options.session_id:
            raise RpcError(SESSION_NOT_FOUND, f"Session not found: {target['session_id']}")

    def open_info(self, params: dict) -> dict:
        target = parse_target(params)
        role = _enum_field(params, "role", wire.ROLES)
        mode = _enum_field(params, "turning_mode", wire.TURNING_MODES)
        policy = parse_policy(params)
        config = parse_channel_config(params)
        self._resolve(target)
        forced = self.host.faults.bootstrap_error
        if forced is not None:
            raise RpcError(forced[0], forced[1])
        if mode not in self.host.options.turning_modes:
            raise RpcError(
                CAPABILITY_UNAVAILABLE,
                f"turning mode '{mode}' is not supported for this realtime target",
            )
        grant = self.host.mint(role, mode, target, policy, config)
        log.info(
            "open_info: %s %s token %s expires %s",
            role,
            mode,
            token_prefix(grant.token),
            grant.expires_at,
        )
        return {
            "ws_url": self.host.ws_url,
            "open_token": grant.token,
            "expires_at": grant.expires_at,
            "target": target,
            "supported_protocol_versions": [wire.PROTOCOL_VERSION],
            "default_protocol_version": wire.PROTOCOL_VERSION,
            "capabilities": grant.capabilities,
        }

    def status(self, params: dict) -> dict:
        target = parse_target(params)
        self._resolve(target)
        return {"status": dict(self.host.target.status)}

    def capabilities(self, params: dict) -> dict:
        target = parse_target(params)
        self._resolve(target)
        options = self.host.options
        return {"capabilities": wire.capabilities(options.turning_modes, options.input_rate_hz)}

    def handle_line(self, line: bytes) -> dict | None:
        """One JSON-RPC request line -> the response object (None for a notification)."""
        try:
            request = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _response(None, error=RpcError(PARSE_ERROR, f"Parse error: {exc}"))
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            req_id = request.get("id") if isinstance(request, dict) else None
            return _response(req_id, error=RpcError(INVALID_REQUEST, "Invalid Request"))
        is_notification = "id" not in request
        req_id = request.get("id")
        try:
            result = self.call(request["method"], request.get("params"))
        except RpcError as exc:
            return None if is_notification else _response(req_id, error=exc)
        except Exception as exc:  # a bug in the dev server; still answer
            log.exception("rpc method %s failed", request["method"])
            return None if is_notification else _response(req_id, error=RpcError(INTERNAL_ERROR, str(exc)))
        return None if is_notification else _response(req_id, result=result)


def _response(req_id: Any, result: Any = None, error: RpcError | None = None) -> dict:
    if error is not None:
        return {"jsonrpc": "2.0", "id": req_id, "error": error.to_json()}
    return {"jsonrpc": "2.0", "id": req_id, "result": result}


def rpc_handler(api: BootstrapApi) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """The connection handler of the TCP listener: JSON lines in, JSON lines out."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    break  # a line longer than the limit: give up on this connection
                if not line:
                    break
                if not line.strip():
                    continue
                response = api.handle_line(line)
                if response is not None:
                    writer.write(wire.dumps(response).encode() + b"\n")
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    return handle
