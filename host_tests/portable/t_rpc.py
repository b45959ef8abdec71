# meerkat_rt.rpc.JsonRpc, the JSON-RPC client of both surfaces' bootstraps and the live
# surface's control calls: each call fails after its own timeout, not the connection's.
from meerkat_rt import rpc


class Sock:
    # Takes every write, never answers.
    def write(self, b):
        return len(b)

    def read(self, n):
        return None


class _clock:
    def __enter__(self):
        self.now = 5000
        self.real = rpc.ticks_ms
        rpc.ticks_ms = lambda: self.now
        return self

    def __exit__(self, *exc):
        rpc.ticks_ms = self.real


def test_a_call_fails_after_its_own_timeout():
    # live/open is asked with server.open_timeout_ms (binding the provider takes seconds),
    # longer than the connection's timeout_ms for everything else.
    with _clock() as clock:
        c = rpc.JsonRpc("127.0.0.1", 1, timeout_ms=100)
        c.sock = Sock()
        slow = c.call("live/open", {}, 300)
        quick = c.call("live/status", {})
        clock.now += 101
        c.poll()
        q = c.done(quick)
        assert q is not None and q[0] is None and "no answer within 100 ms" in str(q[1])
        assert c.done(slow) is None  # still waiting
        clock.now += 200
        c.poll()
        s = c.done(slow)
        assert s is not None and s[0] is None and "no answer within 300 ms" in str(s[1])
        assert c.waiting() == 0


def test_an_answer_in_time_is_taken():
    with _clock() as clock:
        c = rpc.JsonRpc("127.0.0.1", 1, timeout_ms=100)
        c.sock = Sock()
        rid = c.call("live/open", {}, 300)
        clock.now += 250
        c.poll()  # past the connection's 100 ms, within the call's 300: still waiting
        assert c.done(rid) is None
        c._take(b'{"jsonrpc":"2.0","id":%d,"result":{"channel_id":"c1"}}\n' % rid)
        assert c.done(rid) == ({"channel_id": "c1"}, None)
