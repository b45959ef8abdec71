# meerkat_rt.ws frame logic against a scripted fake socket (no network): exact bytes out, byte-
# by-byte parsing, partial writes, control frames between data frames, close paths, keepalive
# with injected time. Runs on CPython and on the unix port (host_tests/test_portable.py).
from meerkat_rt import rpc
from meerkat_rt.compat import ticks_add, ticks_ms
from meerkat_rt.ws import BINARY, TEXT, WebSocket, WebSocketError, split_url
from wsmsg import MessageBuffer


class FakeSock:
    # MicroPython stream semantics: write -> count or None, readinto -> count, None, 0 at EOF.
    def __init__(self, incoming=b"", chunk=1 << 20, wcap=1 << 20):
        self.incoming = bytearray(incoming)
        self.pos = 0
        self.chunk = chunk
        self.wcap = wcap
        self.out = bytearray()
        self.eof = False
        self.closed = False

    def readinto(self, buf):
        left = len(self.incoming) - self.pos
        if left <= 0:
            return 0 if self.eof else None
        n = min(len(buf), self.chunk, left)
        buf[0:n] = self.incoming[self.pos : self.pos + n]
        self.pos += n
        return n

    def write(self, buf, off, n):
        n = min(n, self.wcap)
        if n <= 0:
            return None
        self.out += bytes(buf[off : off + n])
        return n

    def close(self):
        self.closed = True


class Recorder:
    # Checks the fragment flags: first exactly at a message's start, last exactly at its end.
    def __init__(self, streams=False):
        self.ready = False
        self.held = False
        self.streams = streams
        self.messages = []
        self.inside = False

    def hold(self):
        return self.held

    def feed(self, buf, off, n, first, last, is_text):
        assert bool(first) == (not self.inside), "first flag out of place"
        if first:
            self.messages.append([bytearray(), bool(is_text)])
        self.messages[-1][0] += buf[off : off + n]
        self.inside = not last


def frame(op, payload=b"", fin=True):
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | op])
    if n < 126:
        head += bytes([n])
    else:
        head += bytes([126, n >> 8, n & 255])
    return head + payload


def client_frames(data):
    # Decode what the client wrote: [(opcode, fin, payload, key)]; every frame must be masked.
    out = []
    i = 0
    while i < len(data):
        b0, b1 = data[i], data[i + 1]
        assert b1 & 0x80, "client frame not masked"
        n = b1 & 127
        i += 2
        if n == 126:
            n = (data[i] << 8) | data[i + 1]
            i += 2
        elif n == 127:
            n = 0
            for k in range(8):
                n = (n << 8) | data[i + k]
            i += 8
        key = bytes(data[i : i + 4])
        i += 4
        payload = bytes(data[i + k] ^ key[k & 3] for k in range(n))
        i += n
        out.append((b0 & 15, bool(b0 & 0x80), payload, key))
    return out


def opened(sock, sink=None, **kw):
    w = WebSocket(sink if sink is not None else MessageBuffer(kw.get("max_message", 16384)), **kw)
    w.sock = sock  # what connect() leaves behind
    w.state = 1  # _OPEN
    w.open = True
    return w


def pump(w, times=200):
    for _ in range(times):
        w.poll()


def test_split_url():
    assert split_url("ws://h/realtime/ws") == (False, "h", 80, "/realtime/ws")
    assert split_url("wss://h.example:8443") == (True, "h.example", 8443, "/")
    assert split_url("ws://10.0.0.2:4900/realtime/ws?x=1") == (False, "10.0.0.2", 4900, "/realtime/ws?x=1")
    for bad in ("http://h/", "ws://:80/", "ws://h:x/"):
        try:
            split_url(bad)
            raise AssertionError(bad)
        except WebSocketError:
            pass


def test_rewrite_ws_host():
    rw = rpc.rewrite_host
    assert rw("ws://0.0.0.0:4900/realtime/ws", "192.168.1.9") == "ws://192.168.1.9:4900/realtime/ws"
    assert rw("ws://127.0.0.1:4900/realtime/ws", "meerkat.lan") == "ws://meerkat.lan:4900/realtime/ws"
    assert rw("ws://localhost/realtime/ws", "10.0.0.1") == "ws://10.0.0.1/realtime/ws"
    assert rw("ws://[::1]:4900/x", "10.0.0.1") == "ws://10.0.0.1:4900/x"
    assert rw("ws://10.0.0.7:4900/realtime/ws", "10.0.0.1") == "ws://10.0.0.7:4900/realtime/ws"
    assert rw("wss://server.example/realtime/ws", "10.0.0.1") == "wss://server.example/realtime/ws"
    live = "ws://0.0.0.0:4900/live/ws?token=t&channel=c&format=pcm_24k_mono"
    assert rw(live, "10.0.0.1") == "ws://10.0.0.1:4900/live/ws?token=t&channel=c&format=pcm_24k_mono"
    assert rw("ws://127.0.0.1?token=t", "h") == "ws://h?token=t"


def test_frames_are_masked_with_a_fresh_key_each_and_put_in_pieces():
    sock = FakeSock()
    w = opened(sock, max_message=256, tx_size=1024)
    payloads = [b"", b"hello", bytes(range(125)), bytes(range(126)) + b"x" * 174]
    for p in payloads:
        assert w.can_send()
        w.begin(len(p))
        # odd-sized pieces: the mask phase must carry over between put() calls
        w.put(p, 0, min(3, len(p)))
        if len(p) > 3:
            w.put(p, 3, len(p) // 2 - 3 if len(p) > 8 else len(p) - 3)
            done = 3 + (len(p) // 2 - 3 if len(p) > 8 else len(p) - 3)
            w.put(p, done, len(p) - done)
        w.end_frame()
        assert not w.can_send()
        w.poll()
    got = client_frames(sock.out)
    assert [f[2] for f in got] == payloads
    assert all(f[0] == 1 and f[1] for f in got)
    keys = [f[3] for f in got]
    assert len(set(keys)) == len(keys)
    assert w.frames_out == 4 and w.bytes_out == len(sock.out)


def test_frame_size_checks():
    w = opened(FakeSock(), max_message=64, tx_size=64)
    for bad in (59, 200):  # 6 header bytes + payload must fit in tx_size
        try:
            w.begin(bad)
            raise AssertionError(bad)
        except WebSocketError as e:
            assert "exceeds tx_size 64" in str(e)
    w.begin(4)
    try:
        w.put(b"12345", 0, 5)
        raise AssertionError("put beyond the frame")
    except WebSocketError:
        pass
    try:
        w.end_frame()
        raise AssertionError("end before the payload")
    except WebSocketError:
        pass


def test_pong_waits_for_the_data_frame_being_written():
    # The socket takes 7 bytes per write; a ping arrives mid-frame: the pong must follow the
    # frame, not cut into it.
    sock = FakeSock(wcap=7)
    w = opened(sock, max_message=256, tx_size=512)
    data = b"d" * 100
    w.begin(len(data))
    w.put(data, 0, len(data))
    w.end_frame()
    w.poll()
    assert len(sock.out) == 7
    sock.incoming += frame(9, b"ping!")
    pump(w, 100)
    got = client_frames(sock.out)
    assert [(f[0], f[2]) for f in got] == [(1, data), (10, b"ping!")]


def test_queued_pong_goes_before_the_next_frame_and_close_after_it():
    sock = FakeSock(frame(9, b"p1"), wcap=0)  # the socket takes nothing for now
    w = opened(sock, max_message=256, tx_size=512)
    assert w.send_nowait("first")  # published, not yet written
    pump(w, 5)  # reads the ping: the pong goes first (nothing of the data frame was written)
    assert not w.send_nowait("second")  # one data frame at a time
    w._close(1000, "bye")
    sock.wcap = 1 << 20
    pump(w, 5)
    got = client_frames(sock.out)
    assert [(f[0], f[2]) for f in got] == [(10, b"p1"), (1, b"first"), (8, b"\x03\xe8bye")]


def test_parse_everything_one_byte_at_a_time():
    stream = (
        frame(1, b"hello")
        + frame(2, b"\x01\x02", fin=False)
        + frame(9, b"mid")
        + frame(0, b"\x03", fin=False)
        + frame(0, b"", fin=True)
        + frame(1, b"")
        + frame(1, b"L" * 300)
    )
    sock = FakeSock(stream, chunk=1)
    rec = Recorder()
    w = opened(sock, max_message=1024, rx_size=16, sink=rec)
    pump(w, len(stream) + 10)
    assert not rec.inside
    assert [(bytes(m), t) for m, t in rec.messages] == [(b"hello", True), (b"\x01\x02\x03", False), (b"", True), (b"L" * 300, True)]
    assert client_frames(sock.out) == [(10, True, b"mid", client_frames(sock.out)[0][3])]
    assert w.frames_in == 7 and w.bytes_in == len(stream) and w.open


def test_message_buffer_holds_back_the_next_message():
    sock = FakeSock(frame(1, b"one") + frame(1, b"two") + frame(2, b"three"))
    w = opened(sock, max_message=64)
    sink = w.sink
    pump(w, 5)
    assert sink.ready and sink.take() == "one"
    pump(w, 5)
    assert bytes(sink.buf[: sink.length]) == b"two"
    sink.release()
    pump(w, 5)
    assert sink.take() == b"three" and not sink.ready


def test_server_close_is_echoed_then_socket_closed():
    sock = FakeSock(frame(1, b"x") + frame(8, b"\x0f\xa0bye"))
    w = opened(sock, max_message=64)
    pump(w, 3)
    assert w.sink.take() == "x"
    pump(w, 3)
    assert (w.open, w.close_code, w.close_reason, w.error) == (False, 4000, "bye", None)
    assert sock.closed and w.state == 3
    assert [(f[0], f[2]) for f in client_frames(sock.out)] == [(8, b"\x0f\xa0bye")]


def test_eof_is_1006():
    sock = FakeSock(frame(1, b"x"))
    sock.eof = True
    w = opened(sock, max_message=64)
    pump(w, 3)
    w.sink.take()
    pump(w, 3)
    assert (w.open, w.close_code, w.error) == (False, 1006, None) and sock.closed


def test_oversized_message_closes_1009():
    sock = FakeSock(frame(1, b"a" * 40, fin=False) + frame(0, b"b" * 40))
    w = opened(sock, max_message=64)
    pump(w, 5)
    assert not w.open and w.close_code == 1009
    assert str(w.error) == "message of 80+ bytes exceeds max_message 64" and w.error.code == 1009
    assert [(f[0], f[2][:2]) for f in client_frames(sock.out)] == [(8, b"\x03\xf1")]
    sock.eof = True  # the server answers by closing
    pump(w, 3)
    assert w.state == 3 and w.close_code == 1009


def test_a_streaming_sink_takes_messages_of_any_size():
    # The downlink bounds what it keeps itself (audio streams through): no 1009 for it.
    sock = FakeSock(frame(1, b"a" * 100, fin=False) + frame(0, b"b" * 150))
    rec = Recorder(streams=True)
    w = opened(sock, max_message=64, sink=rec)
    pump(w, 10)
    assert w.open and bytes(rec.messages[0][0]) == b"a" * 100 + b"b" * 150


def test_binary_frames_are_sent_with_their_opcode():
    sock = FakeSock()
    w = opened(sock, max_message=64, tx_size=256)
    w.begin(4, BINARY)
    w.put(b"\x01\x02\x03\x04", 0, 4)
    w.end_frame()
    pump(w, 2)
    assert w.send_nowait(b"\x09", BINARY) and w.fits(248) and not w.fits(249)
    pump(w, 2)
    assert w.send_nowait("text", TEXT)
    pump(w, 2)
    assert [(f[0], f[2]) for f in client_frames(sock.out)] == [(2, b"\x01\x02\x03\x04"), (2, b"\x09"), (1, b"text")]


def test_protocol_violations_close_1002():
    cases = [
        (b"\x81\x85abcd" + b"x" * 5, "masked"),
        (b"\xc1\x01x", "reserved"),
        (b"\x83\x00", "unknown opcode"),
        (frame(0, b"x"), "continuation"),
        (frame(1, b"x", fin=False) + frame(1, b"y"), "inside a fragmented"),
        (frame(9, b"p", fin=False), "control"),
        (b"\x89\x7e\x00\x80" + b"p" * 128, "control"),
    ]
    for data, words in cases:
        sock = FakeSock(data)
        w = opened(sock, max_message=1024, sink=Recorder())
        pump(w, 5)
        assert w.close_code == 1002 and w.error is not None and words in str(w.error), (data, w.error)
        assert client_frames(sock.out)[-1][0] == 8


def test_keepalive_pings_when_idle_then_declares_the_link_dead():
    sock = FakeSock()
    w = opened(sock, max_message=64)
    pump(w, 3)
    assert sock.out == b""  # no keepalive() yet: never a ping
    w.keepalive(100, 300)
    t0 = ticks_ms()
    w.poll(ticks_add(t0, 50))
    assert sock.out == b""
    w.poll(ticks_add(t0, 120))
    assert [f[0] for f in client_frames(sock.out)] == [9]
    w.poll(ticks_add(t0, 150))  # not again before another interval
    assert len(client_frames(sock.out)) == 1
    sock.incoming += frame(10)  # the pong: the link is alive
    w.poll(ticks_add(t0, 250))
    assert w.pongs == 1 and w.open
    w.poll(ticks_add(t0, 500))
    assert w.open
    w.poll(ticks_add(t0, 551))
    assert (w.open, w.close_code, w.close_reason) == (False, 1006, "keepalive timeout")


def test_message_buffer_capacity():
    m = MessageBuffer(4)
    m.feed(b"abcd", 0, 4, True, True, False)
    assert m.take() == b"abcd"
    try:
        m.feed(b"abcde", 0, 5, True, True, True)
        raise AssertionError("overflow accepted")
    except ValueError:
        pass


def test_sink_hold_pauses_reading_mid_frame():
    # A sink that cannot take more (say the speaker ring is full) sets hold: the ws stops
    # handing on bytes, even inside a frame, and stops reading the socket.
    data = frame(2, bytes(range(200)))
    sock = FakeSock(data, chunk=50)
    rec = Recorder()
    w = opened(sock, max_message=1024, rx_size=64, sink=rec)
    pump(w, 2)  # 2 reads of 50 bytes: a 4-byte header and 96 payload bytes handed on
    rec.held = True
    pump(w, 10)
    assert sock.pos == 150 and len(rec.messages[0][0]) == 96  # one more read, nothing handed on
    rec.held = False
    pump(w, 10)
    assert bytes(rec.messages[0][0]) == bytes(range(200)) and not rec.inside
