# meerkat_rt.bootstrap: fetch a RealtimeOpenInfo (realtime/open_info) from a Meerkat server.
#
# Two transports (reference/meerkat-realtime-v2.md 1.2-1.3): JSON-RPC 2.0 as JSON lines over TCP
# (rkat-rpc --tcp), or the REST proxy (POST /realtime/open_info on rkat-rest). One request per
# connection. Bootstrap runs once per connection attempt, so it may allocate freely; the channel
# can drop this module from sys.modules after use and import it again for a reconnect.
#
# Every failure becomes a BootstrapError whose `kind` names the cause and whose `retryable`
# tells the channel whether to back off and retry (network, timeout, server trouble) or stop
# (the session does not exist, the target cannot do realtime, bad settings, a wrong server).
# The open token is a bearer secret: it is never logged and never put in an error message.
import asyncio
import json

from . import log, protocol

_KINDS = {
    -32001: "session_not_found",
    "SESSION_NOT_FOUND": "session_not_found",
    -32020: "capability_unavailable",
    "CAPABILITY_UNAVAILABLE": "capability_unavailable",
    -32602: "invalid_params",
    "INVALID_PARAMS": "invalid_params",
    -32601: "protocol",
    -32600: "protocol",
    -32700: "protocol",
    "PROVIDER_ERROR": "unreachable",  # the REST proxy could not reach rkat-rpc (HTTP 502)
}
_LOOPBACK = ("0.0.0.0", "127.0.0.1", "localhost", "[::]", "[::1]")


class BootstrapError(Exception):
    """A failed bootstrap request. kind: session_not_found, capability_unavailable,
    turning_mode_unsupported, invalid_params, unreachable, timeout, server, protocol, memory."""

    def __init__(self, message, kind, retryable):
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable


def rewrite_ws_host(url, reached_host):
    """Replace a 0.0.0.0/loopback host in ws_url by the host the device reached the server on
    (the server builds ws_url from its bind address, which means nothing to a LAN device)."""
    i = url.find("://") + 3
    if i < 3:
        return url
    if url[i : i + 1] == "[":
        j = url.find("]", i) + 1
    else:
        j = i
        while j < len(url) and url[j] not in ":/":
            j += 1
    if url[i:j] in _LOOPBACK:
        return url[:i] + reached_host + url[j:]
    return url


def _endpoint(settings):
    # -> (rest, host, port, path prefix)
    rpc = settings.get("rpc")
    rest = settings.get("rest")
    try:
        if rpc:
            i = rpc.rfind(":")
            return False, rpc[:i], int(rpc[i + 1 :]), ""
        if rest and rest.startswith("http://"):
            rest = rest[7:]
            i = rest.find("/")
            path = rest[i:].rstrip("/") if i >= 0 else ""
            hostport = rest[:i] if i >= 0 else rest
            i = hostport.rfind(":")
            if i < 0:
                return True, hostport, 80, path
            return True, hostport[:i], int(hostport[i + 1 :]), path
    except ValueError:
        pass
    raise BootstrapError("bootstrap needs 'rpc': 'host:port' or 'rest': 'http://host:port'", "invalid_params", False)


async def call(settings, method, params, check=None):
    """One bootstrap request; returns (result, host reached). check(result) validates it."""
    rest, host, port, path = _endpoint(settings)
    where = "%s:%d" % (host, port)
    timeout_ms = settings.get("timeout_ms", 10000)
    try:
        if rest:
            coro = _rest(host, port, path + "/" + method, params, where)
        else:
            coro = _rpc(host, port, method, params)
        result = await asyncio.wait_for(coro, timeout_ms / 1000)
        if check is not None:
            result = check(result)
        return result, host
    except asyncio.TimeoutError:  # before OSError: CPython's TimeoutError is an OSError
        raise BootstrapError("%s: no answer from %s within %d ms" % (method, where, timeout_ms), "timeout", True)
    except OSError as e:
        raise BootstrapError("%s: cannot reach %s (%s)" % (method, where, e), "unreachable", True)
    except protocol.RpcError as e:
        kind = _KINDS.get(e.code, "server")
        if kind == "capability_unavailable" and "turning mode" in e.message:
            kind = "turning_mode_unsupported"
        raise BootstrapError(
            "%s refused by %s: %s (%s)" % (method, where, e.message, e.code),
            kind,
            kind in ("unreachable", "server"),
        )
    except protocol.ProtocolError as e:
        raise BootstrapError("%s: bad answer from %s: %s" % (method, where, e.reason), "protocol", False)
    except MemoryError:  # the heap, not the server: say so (retrying will not help)
        raise BootstrapError("%s: out of memory reading the answer from %s (the heap is too small)" % (method, where), "memory", False)


async def _rpc(host, port, method, params):
    r, w = await asyncio.open_connection(host, port)
    try:
        w.write(protocol.rpc_request(1, method, params).encode())
        await w.drain()
        while True:
            line = await r.readline()
            if not line:
                raise OSError("connection closed before the answer")
            if line.strip():
                result = protocol.parse_rpc_response(line, 1)  # None: a notification, read on
                if result is not None:
                    return result
    finally:
        w.close()


async def _rest(host, port, path, params, where):
    body = json.dumps(params).encode()
    r, w = await asyncio.open_connection(host, port)
    try:
        w.write(
            (
                "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\nConnection: close\r\n\r\n" % (path, where, len(body))
            ).encode()
        )
        w.write(body)
        await w.drain()
        status = (await r.readline()).decode().strip()
        if not status:
            raise OSError("connection closed before the answer")
        parts = status.split(" ")
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise protocol.ProtocolError("not an HTTP response: '%s'" % status[:40])
        code = int(parts[1])
        length = -1
        while True:
            line = (await r.readline()).decode().strip().lower()
            if not line:
                break
            if line.startswith("content-length:"):
                length = int(line[15:])
        data = await (r.readexactly(length) if length >= 0 else r.read(-1))
    finally:
        w.close()
    if 200 <= code < 300:
        return protocol.loads(data, "bootstrap response")
    err = protocol.parse_wire_error(data)
    if err is not None:
        raise err
    raise BootstrapError(
        "%s answered '%s'" % (where, status), "server" if code >= 500 else "protocol", code >= 500
    )


def _open_params(settings):
    try:
        return protocol.open_request_params(
            settings.get("target"),
            settings.get("role", "primary"),
            settings.get("turning_mode", "provider_managed"),
            settings.get("reconnect_policy"),
            settings.get("channel_config"),
        )
    except ValueError as e:  # ProtocolError included
        raise BootstrapError("bad bootstrap settings: %s" % e, "invalid_params", False)


async def fetch_open_info(settings):
    """realtime/open_info for settings {rpc|rest, target, role, turning_mode, reconnect_policy?,
    channel_config?, timeout_ms?}: the validated RealtimeOpenInfo, ws_url host rewritten."""
    info, host = await call(settings, "realtime/open_info", _open_params(settings), protocol.check_open_info)
    info["ws_url"] = rewrite_ws_host(info["ws_url"], host)
    log.info("bootstrap", "open_info: %s", info["ws_url"])  # never the token
    return info


async def fetch_status(settings):
    """realtime/status: the target's RealtimeChannelStatus dict."""
    return (await call(settings, "realtime/status", {"target": _open_params(settings)["target"]}, protocol.check_status_result))[0]


async def fetch_capabilities(settings):
    """realtime/capabilities: the target's RealtimeCapabilities dict."""
    return (await call(settings, "realtime/capabilities", {"target": _open_params(settings)["target"]}, protocol.check_capabilities_result))[0]
