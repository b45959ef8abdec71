"""The REST proxy: `POST /realtime/open_info`, `/realtime/status`, `/realtime/capabilities`.

Like `rkat-rest --realtime-rpc-tcp`, every call opens a fresh TCP connection to the JSON-RPC
listener, writes one request with id 1 and reads one line back. JSON-RPC errors become a
`WireError` body with the HTTP status of its code; an unreachable RPC host is 502
PROVIDER_ERROR. Before any RPC call axum's `Json` extractor checks the body against the typed
request (corrections 6): a missing or other content type is 415, bad JSON 400, a body of the
wrong shape 422, each with a `text/plain` explanation; the typed value is what gets forwarded
(unknown fields dropped). A minimal HTTP/1.1 server (keep-alive, Content-Length bodies) is
enough for the device and for `http.client`. Reference section 1.3.
"""

from __future__ import annotations

import asyncio
import json
import logging
from http import HTTPStatus
from typing import Awaitable, Callable

from . import rpc, wire
from .v2_api import parse_open_request, parse_status_params

log = logging.getLogger("meerkat_devserver.rest")

ROUTES = {
    "/realtime/open_info": ("realtime/open_info", parse_open_request),
    "/realtime/status": ("realtime/status", parse_status_params),
    "/realtime/capabilities": ("realtime/capabilities", parse_status_params),
}
MSG_CONTENT_TYPE = "Expected request with `Content-Type: application/json`"

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
MAX_BODY = 2 << 20  # axum's default body limit


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
            "message": f"realtime RPC connection failed: {exc}",
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
            "message": "realtime RPC response was invalid: EOF while parsing a value at line 1 column 0",
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

    async def respond(writer: asyncio.StreamWriter, status: int, body: dict | str | None, close: bool) -> None:
        if isinstance(body, str):  # axum rejections: a text/plain explanation
            payload, content_type = body.encode(), "text/plain; charset=utf-8"
        else:
            payload = b"" if body is None else wire.dumps(body).encode()
            content_type = "application/json" if body is not None else None
        head = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            f"Content-Length: {len(payload)}",
            "Access-Control-Allow-Origin: *",
        ]
        if status == 204:
            head += ["Access-Control-Allow-Methods: POST, OPTIONS", "Access-Control-Allow-Headers: *"]
        if content_type is not None:
            head.append(f"Content-Type: {content_type}")
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
                    await respond(writer, 413, "Failed to buffer the request body: length limit exceeded", True)
                    break
                body = await reader.readexactly(length) if length else b""
                close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
                status, answer = await route(method, path.split("?", 1)[0], headers, body)
                await respond(writer, status, answer, close)
                if close:
                    break
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    async def route(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict | str | None]:
        entry = ROUTES.get(path)
        if entry is None:
            return 404, None
        if method == "OPTIONS":
            return 204, None
        if method != "POST":
            return 405, None
        rpc_method, parse = entry
        if not _json_content_type(headers.get("content-type", "")):
            return 415, MSG_CONTENT_TYPE
        try:
            value = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return 400, f"Failed to parse the request body as JSON: {exc}"
        try:
            params = parse(value)
        except ValueError as exc:
            return 422, f"Failed to deserialize the JSON body into the target type: {exc}"
        if unreachable():
            return 502, {
                "code": "PROVIDER_ERROR",
                "category": "provider",
                "message": "realtime RPC connection failed: devserver fault rest_rpc_unreachable",
            }
        status, answer = await proxy_call(rpc_addr(), rpc_method, params)
        log.info("POST %s -> %d", path, status)
        return status, answer

    return handle


def _json_content_type(value: str) -> bool:
    """application/json or application/<anything>+json, parameters allowed (axum)."""
    mime = value.split(";", 1)[0].strip().lower()
    kind, _, subtype = mime.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))
