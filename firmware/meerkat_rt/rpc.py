# meerkat_rt.rpc: a JSON-RPC 2.0 client over TCP JSON lines (rkat-rpc --tcp), non-blocking.
#
# Used for the bootstrap calls of both server surfaces (realtime/open_info, live/open) and for the
# live surface's control verbs (live/interrupt, live/truncate, live/commit_input, live/close),
# which must leave at once on a barge-in: so the connection stays open, requests are written by
# poll() from the device's pump, and answers are matched by id in a small table of pending calls
# (the server may interleave notifications, which are counted and ignored). Everything here is
# rare, so it may allocate; it is bounded: one answer line of at most `line_max` bytes (a bigger
# one is refused, not buffered), at most _PENDING calls waiting (the oldest is failed beyond).
#
# Errors: RpcError for a JSON-RPC error object; OSError (NetError) for the network; a call whose
# connection drops fails with "connection lost". Nothing here logs request parameters: the live
# open token and channel ids travel in them and in the answers.
import json

from . import log, net
from .compat import const, sleep_ms, ticks_diff, ticks_ms
from .shapes import ProtocolError, loads

_PENDING = const(8)


class RpcError(Exception):
    """A JSON-RPC error object returned by the server."""

    def __init__(self, code, message, data=None):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message
        self.data = data


def endpoint(spec):
    """"host:port" -> (host, port); ValueError when it is not that."""
    host, _, port = spec.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError("not host:port")
    return host, int(port)


_LOOPBACK = ("0.0.0.0", "127.0.0.1", "localhost", "[::]", "[::1]")


def rewrite_host(url, reached_host):
    """Replace a 0.0.0.0/loopback host in a ws:// URL by the host the device reached the server
    on (the server builds the URL from its bind address, which means nothing to a LAN device)."""
    i = url.find("://") + 3
    if i < 3:
        return url
    if url[i : i + 1] == "[":
        j = url.find("]", i) + 1
    else:
        j = i
        while j < len(url) and url[j] not in ":/?":
            j += 1
    if url[i:j] in _LOOPBACK:
        return url[:i] + reached_host + url[j:]
    return url


class JsonRpc:
    def __init__(self, host, port, timeout_ms=10000, buf=None):
        # buf: the answer-line buffer (its size bounds an answer); default 4 KB. A bootstrap
        # between channels may lend the idle downlink frame buffer instead of allocating.
        self.host = host
        self.port = port
        self.timeout_ms = timeout_ms
        self.sock = None
        self._line = buf if buf is not None else bytearray(4096)
        self._n = 0
        self._skipping = False  # inside an answer line that was too long
        self._out = b""
        self._next = 1
        self._pending = {}  # id -> [method, t0, done, result, error, timeout_ms]
        self.notifications = 0
        self.refused = 0  # answers too long, or not JSON-RPC

    @property
    def connected(self):
        return self.sock is not None

    async def connect(self):
        if self.sock is None:
            self.sock = net.stream(await net.connect(self.host, self.port, self.timeout_ms))
            self._n = 0
            self._skipping = False

    def close(self, why="connection closed"):
        s = self.sock
        self.sock = None
        self._out = b""
        if s is not None:
            try:
                s.close()
            except OSError:
                pass
        self._fail_all(why)

    def call(self, method, params, timeout_ms=None):
        """Queue a request; returns its id (see done()). The connection must be open. It fails
        with "no answer" after timeout_ms (default: the connection's timeout_ms)."""
        if len(self._pending) >= _PENDING:
            self._fail_oldest("no answer; too many calls waiting")
        rid = self._next
        self._next = rid % 0x3FFFFFFF + 1
        line = json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}, separators=(",", ":"))
        self._out += line.encode() + b"\n"
        limit = timeout_ms if timeout_ms is not None else self.timeout_ms
        self._pending[rid] = [method, ticks_ms(), False, None, None, limit]
        return rid

    def done(self, rid):
        """None while waiting; else (result, error) once answered (the entry is removed)."""
        entry = self._pending.get(rid)
        if entry is None or not entry[2]:
            return None
        del self._pending[rid]
        return entry[3], entry[4]

    def waiting(self):
        return len(self._pending)

    def poll(self):
        """Write what can be written, read and match what has arrived. True when it did."""
        s = self.sock
        if s is None:
            return False
        did = False
        try:
            while self._out:
                k = s.write(self._out)
                if not k:
                    break
                self._out = self._out[k:]
                did = True
            while True:
                data = s.read(512)
                if data is None:
                    break
                if not data:
                    self.close("connection closed before the answer")
                    return True
                did = True
                self._take(data)
        except OSError as e:
            log.warn("rpc", "connection to %s:%d lost (%s)", self.host, self.port, e)
            self.close("connection lost (%s)" % e)
            return True
        now = ticks_ms()
        for rid in list(self._pending):
            entry = self._pending[rid]
            if not entry[2] and ticks_diff(now, entry[1]) > entry[5]:
                self._finish(rid, None, OSError("no answer within %d ms" % entry[5]))
        return did

    async def request(self, method, params, timeout_ms=None):
        """One call, awaited: the result, or RpcError / OSError."""
        await self.connect()
        rid = self.call(method, params, timeout_ms)
        t0 = ticks_ms()
        limit = self._pending[rid][5]
        while True:
            self.poll()
            answer = self.done(rid)
            if answer is not None:
                if answer[1] is not None:
                    raise answer[1]
                return answer[0]
            if self.sock is None and rid not in self._pending:
                raise OSError("connection lost")
            if ticks_diff(ticks_ms(), t0) > limit:
                self._pending.pop(rid, None)
                raise OSError("no answer within %d ms" % limit)
            await sleep_ms(5)

    def _take(self, data):
        line = self._line
        for c in data:
            if c == 10:  # \n
                if self._skipping:
                    self._skipping = False
                    self.refused += 1
                    self._fail_oldest("the answer is longer than %d bytes" % len(line))
                elif self._n:
                    self._answer(memoryview(line)[: self._n])
                self._n = 0
            elif not self._skipping:
                if self._n == len(line):
                    self._skipping = True  # refused, not buffered: memory stays bounded
                else:
                    line[self._n] = c
                    self._n += 1

    def _answer(self, raw):
        try:
            msg = loads(raw, "JSON-RPC answer")
            if type(msg) is not dict:
                raise ProtocolError("JSON-RPC answer is not an object")
        except ProtocolError as e:
            # Not JSON-RPC: the answer to the oldest call, most likely; it fails with the reason.
            self.refused += 1
            log.warn("rpc", "%s", e.reason)
            self._fail_oldest(e)
            return
        rid = msg.get("id")
        if rid is None:
            if "method" in msg:
                self.notifications += 1  # a server notification (0.9.x sends some): not ours
                return
            # An error answered with "id": null (the live handlers do that for bad params):
            # it belongs to the oldest waiting call.
            if "error" in msg and self._pending:
                rid = min(self._pending)
        entry = self._pending.get(rid) if type(rid) is int else None
        if entry is None:
            self.notifications += 1
            return
        err = msg.get("error")
        if err is not None:
            if type(err) is not dict or type(err.get("code")) is not int:
                self._finish(rid, None, ProtocolError("malformed JSON-RPC error"))
            else:
                self._finish(rid, None, RpcError(err["code"], str(err.get("message", "")), err.get("data")))
        elif "result" in msg:
            self._finish(rid, msg["result"], None)
        else:
            self._finish(rid, None, ProtocolError("JSON-RPC answer has neither result nor error"))

    def _finish(self, rid, result, error):
        entry = self._pending.get(rid)
        if entry is not None:
            entry[2] = True
            entry[3] = result
            entry[4] = error

    def _fail_oldest(self, why):
        # why: an exception, or the text of an OSError
        waiting = [r for r in self._pending if not self._pending[r][2]]
        if waiting:
            self._finish(min(waiting), None, why if isinstance(why, Exception) else OSError(why))

    def _fail_all(self, why):
        for rid in self._pending:
            if not self._pending[rid][2]:
                self._finish(rid, None, OSError(why))


class BootstrapError(Exception):
    """A failed bootstrap request (realtime/open_info, live/open). kind: session_not_found,
    capability_unavailable, turning_mode_unsupported, invalid_params, no_such_method,
    unreachable, timeout, server, protocol, too_large, memory; retryable: whether backing off
    and retrying may help (the network, the server's trouble) or not (the session does not
    exist, the target cannot do realtime, bad settings, a wrong server)."""

    def __init__(self, message, kind, retryable):
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable


_KINDS = {-32001: "session_not_found", -32020: "capability_unavailable", -32602: "invalid_params", -32601: "no_such_method", -32600: "protocol", -32700: "protocol"}


def bootstrap_error(method, where, exc):
    """The BootstrapError for what a bootstrap call raised."""
    if isinstance(exc, BootstrapError):
        return exc
    if isinstance(exc, RpcError):
        kind = _KINDS.get(exc.code, "server") if type(exc.code) is int else "server"
        if kind == "capability_unavailable" and "turning mode" in exc.message:
            kind = "turning_mode_unsupported"
        return BootstrapError("%s refused by %s: %s (%s)" % (method, where, log.esc(exc.message), exc.code), kind, kind == "server")
    if isinstance(exc, ProtocolError):
        return BootstrapError("%s: bad answer from %s: %s" % (method, where, exc.reason), "protocol", False)
    if isinstance(exc, MemoryError):
        # The answer was bounded; a MemoryError here is a momentarily fragmented heap.
        return BootstrapError("%s: out of memory reading the answer from %s" % (method, where), "memory", True)
    if isinstance(exc, OSError):
        why = str(exc)
        if "longer than" in why:
            return BootstrapError("%s: the answer from %s is too large (%s)" % (method, where, why), "too_large", True)
        kind = "timeout" if "no answer within" in why else "unreachable"
        return BootstrapError("%s: %s (%s)" % (method, why, where), kind, True)
    raise exc
