# meerkat_rt.v2.bootstrap: fetch a RealtimeOpenInfo (realtime/open_info) from a Meerkat 0.6.x
# server: ws_url and a single-use open token (60 s), for every connection attempt.
#
# Two transports: JSON-RPC 2.0 as JSON lines over TCP (rkat-rpc --tcp; one call, then the
# connection is closed), or the REST proxy (POST /realtime/open_info on rkat-rest). Answers are
# bounded (a huge one is refused and the attempt retried). Loaded for each (re)connect and
# dropped again after use (about 4 KB of heap back while streaming). The open token is a
# bearer secret: it is never logged and never put in an error message.
import json

from .. import log, net
from ..compat import sleep_ms, ticks_add, ticks_diff, ticks_ms
from ..rpc import BootstrapError, JsonRpc, RpcError, bootstrap_error, endpoint, rewrite_host
from ..shapes import ProtocolError, loads
from . import protocol

_METHOD = "realtime/open_info"


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


async def fetch_open_info(settings, buf=None):
    """realtime/open_info for settings {rpc | rest, target, role, turning_mode,
    reconnect_policy?, channel_config?, timeout_ms?}: the validated RealtimeOpenInfo with its
    ws_url host rewritten to the host the device reached. buf: a buffer for the answer (its
    size bounds it; the idle downlink frame buffer), else 4 KB are allocated."""
    params = _open_params(settings)
    timeout_ms = settings.get("timeout_ms", 10000)
    path = ""
    try:
        if settings.get("rpc"):
            host, port = endpoint(settings["rpc"])
        else:
            host, port, path = _rest_endpoint(settings.get("rest") or "")
    except ValueError:
        raise BootstrapError("bootstrap needs 'rpc': 'host:port' or 'rest': 'http://host:port'", "invalid_params", False)
    where = "%s:%d" % (host, port)
    try:
        if settings.get("rpc"):
            client = JsonRpc(host, port, timeout_ms, buf)
            try:
                info = await client.request(_METHOD, params)
            finally:
                client.close()
        else:
            info = await _rest(host, port, path + "/" + _METHOD, params, where, timeout_ms, buf if buf is not None else bytearray(4096))
        protocol.check_open_info(info)
    except Exception as e:  # classified: network, server refusal, bad or huge answer
        err = bootstrap_error(_METHOD, where, e)
        if err.kind == "no_such_method":
            err = BootstrapError(
                "%s has no realtime/open_info: it does not speak protocol v2 (Meerkat 0.6.5 and later speak the live surface: set server.surface to live or auto)" % where,
                "no_such_method",
                False,
            )
        raise err
    info["ws_url"] = rewrite_host(info["ws_url"], host)
    log.info("bootstrap", "open_info: %s", log.esc(info["ws_url"]))  # never the token
    return info


def _rest_endpoint(rest):
    if not rest.startswith("http://"):
        raise ValueError("not http://")
    rest = rest[7:]
    i = rest.find("/")
    path = rest[i:].rstrip("/") if i >= 0 else ""
    hostport = rest[:i] if i >= 0 else rest
    if ":" not in hostport:
        return hostport, 80, path
    host, port = endpoint(hostport)
    return host, port, path


async def _rest(host, port, path, params, where, timeout_ms, buf):
    body = json.dumps(params).encode()
    s = net.stream(await net.connect(host, port, timeout_ms))
    n = 0
    try:
        req = (
            "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\nConnection: close\r\n\r\n" % (path, where, len(body))
        ).encode() + body
        deadline = ticks_add(ticks_ms(), timeout_ms)
        while req:
            k = s.write(req)
            if k:
                req = req[k:]
            else:
                await _wait(deadline, timeout_ms)
        mv = memoryview(buf)
        while True:
            if n == len(buf):
                raise OSError("the answer is longer than %d bytes" % len(buf))
            k = s.readinto(mv[n:])
            if k is None:
                await _wait(deadline, timeout_ms)
                continue
            if not k:
                break
            n += k
    finally:
        s.close()
    answer = bytes(mv[:n])
    end = answer.find(b"\r\n\r\n")
    if end < 0:
        raise OSError("connection closed before the answer")
    status = answer[: answer.find(b"\r\n")].decode()
    parts = status.split(" ")
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ProtocolError("not an HTTP response")
    code = int(parts[1])
    data = answer[end + 4 :]
    if 200 <= code < 300:
        return loads(data, "bootstrap response")
    err = protocol.parse_wire_error(data)
    if err is not None:
        # WireError codes are names (SESSION_NOT_FOUND, ...); map the ones that decide retrying.
        numbers = {"SESSION_NOT_FOUND": -32001, "CAPABILITY_UNAVAILABLE": -32020, "INVALID_PARAMS": -32602}
        if err[0] == "PROVIDER_ERROR":  # the proxy could not reach rkat-rpc (HTTP 502)
            raise OSError("the REST proxy cannot reach the RPC server: %s" % log.esc(err[1]))
        raise RpcError(numbers.get(err[0], err[0]), err[1])
    if code >= 500:
        raise OSError("%s answered '%s'" % (where, log.esc(status)))
    raise ProtocolError("HTTP status %d" % code)


async def _wait(deadline, timeout_ms):
    if ticks_diff(deadline, ticks_ms()) <= 0:
        raise OSError("no answer within %d ms" % timeout_ms)
    await sleep_ms(5)
