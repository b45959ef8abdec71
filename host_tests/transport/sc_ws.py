# WebSocket client scenarios, run on CPython (in-process) and on the MicroPython unix port
# (wscli.py). Each takes a dict of arguments and returns a JSON-able dict the test checks.
import binascii

import wsmsg
from meerkat_rt.compat import sleep_ms, ticks_diff, ticks_ms
from meerkat_rt.ws import BINARY, TEXT, WebSocketError


def _text(n):
    return ("abcdefghijklmnopqrstuvwxyz" * (n // 26 + 1))[:n]


def _state(w, **extra):
    extra["close_code"] = w.close_code
    extra["close_reason"] = w.close_reason
    extra["open"] = w.open
    return extra


async def _send(w, data, binary=False):
    t0 = ticks_ms()
    while not w.send_nowait(data, BINARY if binary else TEXT):
        assert w.open and ticks_diff(ticks_ms(), t0) < 5000, "cannot send"
        if not w.poll():
            await sleep_ms(1)


async def _run_for(w, ms):
    t0 = ticks_ms()
    while w.open and ticks_diff(ticks_ms(), t0) < ms:
        if not w.poll():
            await sleep_ms(2)


async def echo(a):
    w = wsmsg.client()
    await w.connect(a["url"])
    bad = []
    for n in (0, 1, 125, 126, 127, 1000, 4000):
        m = _text(n)
        await wsmsg.send(w, m)
        if await wsmsg.recv(w, timeout_ms=5000) != m:
            bad.append(n)
    b = bytes(range(256))
    await _send(w, b, True)
    if await wsmsg.recv(w, timeout_ms=5000) != b:
        bad.append("binary")
    await w.close(1000, "done")
    return _state(w, bad=bad, frames_in=w.frames_in, frames_out=w.frames_out, bytes_out=w.bytes_out)


async def recv_all(a):
    # Receive messages until the link closes; binary ones as hex. Then close if still open.
    w = wsmsg.client(a.get("max", 16384))
    await w.connect(a["url"])
    got = []
    error = None
    try:
        while len(got) < a.get("n", 100):
            m = await wsmsg.recv(w, timeout_ms=5000)
            if m is None:
                break
            got.append(m if type(m) is str else "hex:" + binascii.hexlify(m).decode())
    except WebSocketError as e:
        error = [str(e), e.code]
    if w.open:
        await w.close(1000, "")
    return _state(w, got=got, error=error, pongs=w.pongs)


async def connect_error(a):
    w = wsmsg.client(1024)
    t0 = ticks_ms()
    try:
        await w.connect(a["url"], timeout_ms=a.get("timeout_ms", 5000))
    except WebSocketError as e:
        return {"error": str(e), "ms": ticks_diff(ticks_ms(), t0), "state": w.state}
    return {"error": None}


async def keepalive_ok(a):
    # A live server answers pings: the link stays up well past the keepalive timeout.
    w = wsmsg.client(1024)
    await w.connect(a["url"])
    w.keepalive(50, 300)
    await _run_for(w, 800)
    result = _state(w, pongs=w.pongs)
    await w.close()
    return result


async def keepalive_dead(a):
    # The server reads but never answers. No ping may go out before keepalive() (the channel
    # calls it after channel.opened); after it, pings go out and the link is declared dead.
    w = wsmsg.client(1024)
    await w.connect(a["url"])
    await _run_for(w, 300)
    await wsmsg.send(w, "keepalive on")
    w.keepalive(60, 300)
    t0 = ticks_ms()
    await _run_for(w, 3000)
    return _state(w, ms=ticks_diff(ticks_ms(), t0))


async def send_after_close(a):
    w = wsmsg.client(1024)
    await w.connect(a["url"])
    await w.close(4001, "client bye")
    try:
        await wsmsg.send(w, "too late")
        err = None
    except WebSocketError as e:
        err = str(e)
    return _state(w, error=err, can_send=w.can_send(), nowait=w.send_nowait("x"))


async def connect_cancelled(a):
    # A connect cancelled from outside (here by wait_for) leaves no socket behind.
    import asyncio

    w = wsmsg.client(1024)
    try:
        await asyncio.wait_for(w.connect(a["url"], timeout_ms=5000), 0.3)
        return {"cancelled": False}
    except asyncio.TimeoutError:
        pass
    return _state(w, cancelled=True, sock=w.sock is None, state=w.state)
