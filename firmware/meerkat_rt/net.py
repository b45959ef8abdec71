# meerkat_rt.net: name resolution and non-blocking TCP connects, for the WebSocket and the
# JSON-RPC client.
#
# Two ESP32 facts shape it (the port's modsocket.c):
#   - getaddrinfo() blocks inside lwIP's resolver while the microphone's DMA keeps filling (a
#     WROOM's RX DMA holds ~85 ms; overruns are dropped silently), so a host is resolved once and
#     the address cached for the life of the device (a LAN server's address rarely changes; a
#     failed connect forgets it, so a moved server is found again);
#   - poll() reports POLLHUP/POLLERR only when they were asked for, and lwIP marks a refused
#     socket writable, so both are registered with POLLOUT; a refusal then shows up at once
#     rather than as a failure of the first write.
import errno
import select
import socket

from .compat import IS_MICROPYTHON, sleep_ms, ticks_add, ticks_diff, ticks_ms

_cache = {}  # "host:port" -> sockaddr


class NetError(OSError):
    pass


def resolve(host, port):
    """The IPv4 socket address of host:port, from the cache after the first lookup."""
    key = "%s:%d" % (host, port)
    addr = _cache.get(key)
    if addr is None:
        try:
            addr = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)[0][-1]
        except OSError as e:
            raise NetError("cannot resolve %s (%s)" % (host, e))
        if len(_cache) >= 8:  # a handful of servers at most; never grow without bound
            _cache.clear()
        _cache[key] = addr
    return addr


def forget(host, port):
    _cache.pop("%s:%d" % (host, port), None)


async def connect(host, port, timeout_ms):
    """A connected non-blocking TCP socket. Raises NetError (refused, unreachable, timeout)."""
    where = "%s:%d" % (host, port)
    addr = resolve(host, port)
    deadline = ticks_add(ticks_ms(), timeout_ms)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ok = False
    try:
        s.setblocking(False)
        try:
            s.connect(addr)
        except OSError as e:
            if e.args[0] != errno.EINPROGRESS:
                raise NetError("cannot connect to %s (%s)" % (where, e))
        p = select.poll()
        p.register(s, select.POLLOUT | select.POLLERR | select.POLLHUP)
        while True:
            ev = p.poll(0)
            if ev:
                if ev[0][1] & (select.POLLERR | select.POLLHUP):
                    raise NetError("cannot connect to %s (refused or unreachable)" % where)
                break
            if ticks_diff(deadline, ticks_ms()) <= 0:
                raise NetError("cannot connect to %s (no answer within %d ms)" % (where, timeout_ms))
            await sleep_ms(2)
        p.unregister(s)
        ok = True
        return s
    finally:
        if not ok:
            forget(host, port)
            s.close()


def stream(s):
    """The socket with MicroPython's non-blocking stream semantics on either runtime."""
    if IS_MICROPYTHON:
        return s
    from ._host import HostStream

    return HostStream(s)
