"""JSON-RPC 2.0 over TCP, one JSON object per line, like `rkat-rpc --tcp`: the framing, the
dispatcher and the recording of every call. The method sets are `v2_api` (`realtime/*`) and
`live_api` (`live/*`, `mob/member_live_*`); a method of a surface the server does not serve is
`-32601 Method not found: <method>`, as on a real server started without that listener.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from . import wire

if TYPE_CHECKING:
    from .host import Host

log = logging.getLogger("meerkat_devserver.rpc")

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SESSION_NOT_FOUND = -32001
CAPABILITY_UNAVAILABLE = -32020


class RpcError(Exception):
    """An error answer. `null_id`: answered with "id": null (the live handlers' params-parse
    errors are built without the request id, meerkat-live.md 2.1)."""

    def __init__(self, code: int, message: str, data: Any = None, null_id: bool = False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.null_id = null_id

    def to_json(self) -> dict:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            out["data"] = self.data
        return out


class Call:
    """One request being handled: actions registered with `after` run once its response has
    been written (a channel that ends *after* answering, e.g. a terminal commit_input)."""

    def __init__(self) -> None:
        self.after: list[Callable[[], Any]] = []


Method = Callable[[Any, Call], Any]


class Dispatcher:
    def __init__(self, host: Host, methods: dict[str, Method]):
        self.host = host
        self.methods = methods

    async def call(self, method: str, params: Any, call: Call | None = None) -> Any:
        """Run one method in-process (raises RpcError)."""
        if method == "initialize":
            return {"server_info": {"name": "meerkat-devserver", "surface": self.host.options.surface}}
        handler = self.methods.get(method)
        if handler is None:
            raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")
        result = handler(params, call or Call())
        if inspect.isawaitable(result):
            result = await result
        return result

    async def handle_line(self, line: bytes) -> tuple[dict | None, Call]:
        """One request line -> (the response object or None for a notification, its Call)."""
        call = Call()
        started = time.monotonic()
        try:
            request = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _response(None, error=RpcError(PARSE_ERROR, f"Parse error: {exc}")), call
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            req_id = request.get("id") if isinstance(request, dict) else None
            return _response(req_id, error=RpcError(INVALID_REQUEST, "Invalid Request")), call
        is_notification = "id" not in request
        req_id = request.get("id")
        method = request["method"]
        try:
            result = await self.call(method, request.get("params"), call)
            response = _response(req_id, result=result)
        except RpcError as exc:
            response = _response(None if exc.null_id else req_id, error=exc)
        except Exception as exc:  # a bug in the dev server; still answer
            log.exception("rpc method %s failed", method)
            response = _response(req_id, error=RpcError(INTERNAL_ERROR, str(exc)))
        if is_notification:
            return None, call
        self.host.recorder.rpc(method, request, response, started)
        return response, call


def _response(req_id: Any, result: Any = None, error: RpcError | None = None) -> dict:
    if error is not None:
        return {"jsonrpc": "2.0", "id": req_id, "error": error.to_json()}
    return {"jsonrpc": "2.0", "id": req_id, "result": result}


def rpc_handler(dispatcher: Dispatcher) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """The connection handler of the TCP listener: JSON lines in, JSON lines out. Closing the
    connection does not end the channels opened through it."""

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
                response, call = await dispatcher.handle_line(line)
                if response is not None:
                    writer.write(wire.dumps(response).encode() + b"\n")
                    await writer.drain()
                for action in call.after:
                    result = action()
                    if inspect.isawaitable(result):
                        await result
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    return handle


# -- serde-like typed params helpers (shared by both method sets) --------------------------


def json_kind(value: Any) -> str:
    return wire._json_kind(value)


def obj(value: Any, what: str = "params") -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"invalid type: {json_kind(value)}, expected struct {what}")
    return value


def field_str(o: dict, name: str, optional: bool = False) -> str | None:
    if name not in o or (optional and o[name] is None):
        if optional:
            return None
        raise ValueError(f"missing field `{name}`")
    value = o[name]
    if not isinstance(value, str):
        raise ValueError(f"invalid type: {json_kind(value)}, expected a string")
    return value


def field_enum(o: dict, name: str, options: tuple[str, ...], optional: bool = False) -> str | None:
    value = field_str(o, name, optional)
    if value is not None and value not in options:
        raise ValueError(f"unknown variant `{value}`, expected {wire._variants(options)}")
    return value


def field_uint(o: dict, name: str, limit: int = 0xFFFFFFFFFFFFFFFF, optional: bool = False,
               width: str = "u64") -> int | None:
    if name not in o or (optional and o[name] is None):
        if optional:
            return None
        raise ValueError(f"missing field `{name}`")
    value = o[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"invalid type: {json_kind(value)}, expected {width}")
    if not 0 <= value <= limit:
        raise ValueError(f"invalid value: integer `{value}`, expected {width}")
    return value
