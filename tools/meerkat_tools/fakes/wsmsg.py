# wsmsg: whole-message helpers around meerkat_rt.ws.WebSocket, for tests, the probe and the
# benchmarks (on CPython and the MicroPython unix port). The device never assembles whole
# messages (its downlink streams them) nor awaits one send at a time, so none of this lives in
# the firmware package: it allocates per message.
from meerkat_rt import fast
from meerkat_rt.compat import sleep_ms, ticks_diff, ticks_ms
from meerkat_rt.ws import BINARY, TEXT, WebSocketError


class MessageBuffer:
    """A sink that assembles one whole message (bounded by its capacity).

    While a complete message waits, hold() is true: the WebSocket hands nothing more on (the
    bytes wait in its staging buffer, then in the kernel: TCP back-pressure), so no message is
    ever overwritten. take() returns it (str for text, bytes for binary); release() drops it
    after reading buf[:length] in place (allocation-free)."""

    def __init__(self, capacity):
        self.buf = bytearray(capacity)
        self.length = 0
        self.is_text = False
        self.ready = False

    def hold(self):
        return self.ready

    def feed(self, buf, off, n, first, last, is_text):
        if first:
            self.length = 0
            self.is_text = is_text
        end = self.length + n
        if end > len(self.buf):
            raise ValueError("message exceeds the MessageBuffer capacity")
        fast.copy(self.buf, self.length, buf, off, n)
        self.length = end
        if last:
            self.ready = True

    def release(self):
        self.ready = False

    def take(self):
        self.ready = False
        data = bytes(memoryview(self.buf)[: self.length])
        return data.decode() if self.is_text else data


def client(max_message=16384, rx_size=1024, tx_size=4096):
    """A WebSocket with a MessageBuffer sink of max_message bytes."""
    from meerkat_rt.ws import WebSocket

    return WebSocket(MessageBuffer(max_message), max_message, rx_size, tx_size)


async def send(ws, data, timeout_ms=10000):
    """Send one text (str) or binary (bytes) message, waiting for the send buffer."""
    opcode = TEXT if type(data) is str else BINARY
    t0 = ticks_ms()
    while not ws.send_nowait(data, opcode):
        if not ws.open:
            raise WebSocketError("not open", ws.close_code)
        if ticks_diff(ticks_ms(), t0) > timeout_ms:
            raise WebSocketError("send timed out after %d ms" % timeout_ms)
        if not ws.poll():
            await sleep_ms(1)
    ws.poll()


async def recv(ws, timeout_ms=None):
    """The next message (str for text, bytes for binary), or None once closed. Raises the error
    that closed the link (oversized message, protocol violation) instead of None."""
    sink = ws.sink
    t0 = ticks_ms()
    while not sink.ready:
        if ws.sock is None:
            if ws.error is not None:
                raise ws.error
            return None
        if not ws.poll():
            if timeout_ms is not None and ticks_diff(ticks_ms(), t0) > timeout_ms:
                raise WebSocketError("no message within %d ms" % timeout_ms)
            await sleep_ms(1)
    return sink.take()
