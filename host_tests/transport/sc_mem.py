# Memory scenarios: audio frames through the poll-driven send path the channel uses, and the
# bytes allocated per sent and per received frame (gc.mem_alloc deltas, MicroPython only).
#
#   stream:  n frames of 40 ms audio (2560 base64 characters in the AudioInputTemplate) as fast
#            as the socket accepts them; the server checks each one (wspeers._ws_mem).
#   alloc:   the same send loop and a receive loop with a counting sink, measured.
import gc
import json

import wsmsg
from meerkat_rt import fast
from meerkat_rt.compat import sleep_ms, ticks_diff, ticks_ms
from meerkat_rt.v2 import protocol
from meerkat_rt.ws import WebSocket

_PCM = 1920
_B64 = 2560


def _pcm():
    # Mirrors wspeers.pcm_pattern: a fixed body, the frame number in the first 4 bytes.
    pcm = bytearray(_PCM)
    for i in range(_PCM):
        pcm[i] = (i * 7 + 3) & 255
    pcm[3] = 0
    return pcm


def _mem():
    try:
        return gc.mem_alloc()  # type: ignore[attr-defined]
    except AttributeError:  # CPython: nothing to measure
        return 0


class Counter:
    # A sink that allocates nothing: counts bytes and messages.
    def __init__(self):
        self.ready = False
        self.messages = 0
        self.bytes = 0

    def hold(self):
        return False

    def feed(self, buf, off, n, first, last, is_text):
        self.bytes += n
        if last:
            self.messages += 1


async def _stream(w, t, pcm, slot, n, seq0, measure_from):
    # The uplink as the channel's pump runs it: build a frame when the ws can take one, poll,
    # yield with the allocation-free sleep_ms. Returns bytes allocated after `measure_from`.
    sent = 0
    m0 = 0
    plen = len(t.prefix)
    slen = len(t.suffix)
    flen = t.frame_len(_B64)
    while sent < n or not w.can_send():
        if sent == measure_from:
            gc.collect()
            gc.disable()
            m0 = _mem()
            measure_from = -1
        if sent < n and w.can_send():
            seq = seq0 + sent
            pcm[0] = seq & 255
            pcm[1] = (seq >> 8) & 255
            pcm[2] = (seq >> 16) & 255
            fast.b64_encode(slot, 0, pcm, 0, _PCM)
            w.begin(flen)
            w.put(t.prefix, 0, plen)
            w.put(slot, 0, _B64)
            w.put(t.suffix, 0, slen)
            w.end_frame()
            sent += 1
        if not w.poll():
            if not w.open:
                raise OSError("link closed while streaming")
            await sleep_ms(0)
    used = _mem() - m0
    gc.enable()
    return used


async def stream(a):
    n = a["n"]
    t = protocol.AudioInputTemplate()
    pcm = _pcm()
    slot = bytearray(_B64)
    w = wsmsg.client(1024, rx_size=512, tx_size=a.get("tx", 2800))
    ctx = None
    if a.get("ca"):
        from meerkat_rt import tls

        ctx = tls.context(ca_file=a["ca"])
    gc.collect()
    free0 = gc.mem_free() if hasattr(gc, "mem_free") else -1
    await w.connect(a["url"], tls=ctx)
    t0 = ticks_ms()
    await _stream(w, t, pcm, slot, n, 0, -1)
    ms = ticks_diff(ticks_ms(), t0)
    await wsmsg.send(w, "done")
    reply = json.loads(await wsmsg.recv(w, timeout_ms=15000))
    await w.close()
    gc.collect()
    return {"reply": reply, "ms": ms, "frames_out": w.frames_out, "bytes_out": w.bytes_out,
            "mem_free_before": free0, "mem_free_after": gc.mem_free() if hasattr(gc, "mem_free") else -1}


async def alloc(a):
    n = a["n"]
    warm = 20
    t = protocol.AudioInputTemplate()
    pcm = _pcm()
    slot = bytearray(_B64)
    counter = Counter()
    w = WebSocket(counter, 4096)
    await w.connect(a["sink_url"])
    sent = await _stream(w, t, pcm, slot, warm + n, 0, warm)
    await w.close()
    # Receiving: the server sends n + warm audio-sized messages; measure the last n.
    r = WebSocket(counter, 4096)
    await r.connect(a["flood_url"])
    await wsmsg.send(r, "go")
    total = warm + n
    m0 = 0
    t0 = ticks_ms()
    while counter.messages < total and ticks_diff(ticks_ms(), t0) < 20000:
        if counter.messages == warm and m0 == 0:
            gc.collect()
            gc.disable()
            m0 = _mem()
        if not r.poll():
            await sleep_ms(0)
    received = _mem() - m0
    gc.enable()
    got = counter.messages
    await r.close()
    return {"sent_frames": n, "send_bytes": sent, "received_frames": got - warm,
            "recv_bytes": received, "recv_payload": counter.bytes}
