# meerkat_rt.net against sockets and poll() as the ESP32 port has them (modelled here on
# ports/esp32/modsocket.c and extmod/modselect.c, no network involved): poll() reports only
# the events registered (POLLHUP only if asked, POLLERR never) and lwIP marks a refused socket
# writable, so a connect must register POLLHUP to see a refusal before the first write; and
# getaddrinfo() blocks in lwIP's resolver, so a host is resolved once and cached.
import asyncio
import errno

from meerkat_rt import net

POLLIN, POLLOUT, POLLERR, POLLHUP = 1, 4, 8, 16  # MP_STREAM_POLL_*


class _Socket:
    def __init__(self, outcome):
        self.outcome = outcome  # "ok", "refused" or "pending"
        self.closed = False
        self.addr = None

    def setblocking(self, flag):
        pass

    def connect(self, addr):
        self.addr = addr
        raise OSError(errno.EINPROGRESS)

    def close(self):
        self.closed = True


class _SocketModule:
    AF_INET = 2
    SOCK_STREAM = 1

    def __init__(self, outcome="ok"):
        self.outcome = outcome
        self.lookups = 0
        self.made = []

    def getaddrinfo(self, host, port, af=0, kind=0, proto=0, flags=0):
        self.lookups += 1  # each one blocks the device for a DNS round trip
        if host.endswith(".invalid"):
            raise OSError(-202)  # the port's error for a failed lookup
        return [(2, 1, 0, "", ("10.0.0.7", port))]  # a new tuple every time

    def socket(self, af, kind):
        s = _Socket(self.outcome)
        self.made.append(s)
        return s


class _Poll:
    # modselect.c asks each object for the registered events only; modsocket.c answers from
    # lwIP's select(): writable for a failed socket too, and HUP only when it was asked.
    def __init__(self):
        self.reg = []

    def register(self, obj, mask=POLLIN | POLLOUT):
        self.reg.append((obj, mask))

    def unregister(self, obj):
        self.reg = [r for r in self.reg if r[0] is not obj]

    def poll(self, timeout=-1):
        out = []
        for obj, mask in self.reg:
            ev = 0
            if obj.outcome == "refused":
                ev = mask & (POLLOUT | POLLHUP)
            elif obj.outcome == "ok":
                ev = mask & POLLOUT
            if ev:
                out.append((obj, ev))
        return out


class _SelectModule:
    POLLIN = POLLIN
    POLLOUT = POLLOUT
    POLLERR = POLLERR
    POLLHUP = POLLHUP

    def poll(self):
        return _Poll()


def _on_port(outcome, fn):
    saved = net.socket, net.select
    sock = _SocketModule(outcome)
    net.socket, net.select = sock, _SelectModule()
    net._cache.clear()
    try:
        try:
            return sock, asyncio.run(fn()), None
        except net.NetError as exc:
            return sock, None, exc
    finally:
        net.socket, net.select = saved
        net._cache.clear()


def test_a_refused_connect_fails_at_once_not_at_the_first_write():
    sock, s, err = _on_port("refused", lambda: net.connect("srv.lan", 8080, 1000))
    assert s is None and "cannot connect to srv.lan:8080 (refused or unreachable)" in str(err), err
    assert sock.made[0].closed
    assert "srv.lan:8080" not in net._cache  # a failed connect forgets the address


def test_a_connect_that_completes_returns_the_socket():
    sock, s, err = _on_port("ok", lambda: net.connect("srv.lan", 8080, 1000))
    assert err is None and s is sock.made[0] and not s.closed and s.addr == ("10.0.0.7", 8080)


def test_a_connect_without_an_answer_times_out():
    sock, s, err = _on_port("pending", lambda: net.connect("srv.lan", 8080, 30))
    assert s is None and "no answer within 30 ms" in str(err) and sock.made[0].closed


def test_a_host_is_resolved_once():
    async def twice():
        a = await net.connect("srv.lan", 8080, 1000)
        b = await net.connect("srv.lan", 8080, 1000)
        return a, b, net.resolve("srv.lan", 8080)

    sock, (a, b, addr), err = _on_port("ok", twice)
    assert err is None and sock.lookups == 1 and a.addr is b.addr is addr


def test_a_failed_lookup_is_named_and_not_cached():
    sock, s, err = _on_port("ok", lambda: net.connect("nowhere.invalid", 80, 1000))
    assert s is None and "cannot resolve nowhere.invalid" in str(err) and not net._cache


def test_the_cache_stays_small():
    async def many():
        for i in range(20):
            net.resolve("h%d.lan" % i, 80)
        return len(net._cache)

    sock, n, err = _on_port("ok", many)
    assert err is None and 0 < n <= 8 and sock.lookups == 20
