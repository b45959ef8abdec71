"""The REST proxy: `POST /realtime/open_info`, `/realtime/status`, `/realtime/capabilities`.

Like `rkat-rest --realtime-rpc-tcp`, every call opens a fresh TCP connection to the JSON-RPC
listener, writes one request with id 1 and reads one line back. JSON-RPC errors become a
`WireError` body with the HTTP status of its code; an unreachable RPC host is 502
PROVIDER_ERROR. A minimal HTTP/1.1 server (keep-alive, Content-Length bodies) is enough for the
device and for `http.client`. Reference section 1.3.
"""

from __future__ import annotations

import asyncio
import json
import logging
from http import HTTPStatus
from typing import Awaitable, Callable

from . import rpc, wire

log = logging.getLogger("meerkat_devserver.rest")

ROUTES = {
    "/realtime/open_info": "realtime/open_info",
    "/realtime/status": "realtime/status",
    "/realtime/capabilities": "realtime/capabilities",
}

# ErrorCode: (wire name, category, HTTP status), keyed by JSON-RPC code
# (meerkat-contracts error/mod.rs).
WIRE_ERRORS = {
    rpc.SESSION_NOT_FOUND: ("SESSION_NOT_FOUND", "session", 404),
    -32002: ("SESSION_BUSY", "session", 409),
    -32003: ("SESSION_NOT_RUNNING", "session", 409),
    -32010: ("PROVIDER_ERROR", "provider", 502),
    rpc.CAPABILITY_UNAVAILABLE: ("CAPABILITY_UNAVAILABLE", "capability", 501),
    rpc.INVALID_PARAMS: ("INVALID_PARAMS", "validation", 400),
    rpc.INTERNAL_ERROR: ("INTERNAL_ERROR", "internal", 500),
}
MAX_BODY = 1 << 20


def wire_error(code: int, message: str) -> tuple[int, dict]:
    name, category, http_status = WIRE_ERRORS.get(code, ("INTERNAL_ERROR", "internal", 500))
    return http_status, {"code": name, "category": category, "message": message}


async def proxy_call(rpc_addr: tuple[str, int], method: str, params: object) -> tuple[int, dict]:
    """One JSON-RPC round trip on a new connection -> (HTTP status, JSON body)."""
    try:
        reader, writer = await asyncio.open_connection(rpc_addr[0], rpc_addr[1])
    except OSError as exc:
        return 502, {
            "code": "PROVIDER_ERROR",
            "category": "provider",
            "message": f"realtime rpc host unreachable: {exc}",
        }
    try:
        request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        writer.write(wire.dumps(request).encode() + b"\n")
        await writer.drain()
        line = await reader.readline()
    finally:
        writer.close()
    if not line:
        return 502, {
            "code": "PROVIDER_ERROR",
            "category": "provider",
            "message": "realtime rpc host closed the connection",
        }
    response = json.loads(line)
    if "error" in response:
        return wire_error(response["error"]["code"], response["error"]["message"])
    return 200, response["result"]


def rest_handler(
    rpc_addr: Callable[[], tuple[str, int]],
    unreachable: Callable[[], bool],
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """The connection handler of the REST listener."""

    async def respond(writer: asyncio.StreamWriter, status: int, body: dict | None, close: bool) -> None:
        payload = b"" if body is None else wire.dumps(body).encode()
        head = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            f"Content-Length: {len(payload)}",
            "Access-Control-Allow-Origin: *",
        ]
        if status == 204:
            head += ["Access-Control-Allow-Methods: POST, OPTIONS", "Access-Control-Allow-Headers: *"]
        if body is not None:
            head.append("Content-Type: application/json")
        if close:
            head.append("Connection: close")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
        await writer.drain()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line.strip():
                    break
                parts = request_line.decode("latin-1").split()
                headers: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                if len(parts) != 3:
                    await respond(writer, 400, None, True)
                    break
                method, path, version = parts
                length = int(headers.get("content-length", "0") or 0)
                if length > MAX_BODY:
                    await respond(writer, 413, None, True)
                    break
                body = await reader.readexactly(length) if length else b""
                close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
                status, answer = await route(method, path.split("?", 1)[0], body)
                await respond(writer, status, answer, close)
                if close:
                    break
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    async def route(method: str, path: str, body: bytes) -> tuple[int, dict | None]:
        rpc_method = ROUTES.get(path)
        if rpc_method is None:
            return 404, None
        if method == "OPTIONS":
            return 204, None
        if method != "POST":
            return 405, None
        try:
            params = json.loads(body or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return wire_error(rpc.INVALID_PARAMS, f"invalid JSON body: {exc}")
        if unreachable():
            return 502, {
                "code": "PROVIDER_ERROR",
                "category": "provider",
                "message": "realtime rpc host unreachable: devserver fault rest_rpc_unreachable",
            }
        status, answer = await proxy_call(rpc_addr(), rpc_method, params)
        log.info("POST %s -> %d", path, status)
        return status, answer

    return handle
