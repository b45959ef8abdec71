# Fake `machine` (Pin, I2S) for host tests and the simulator, on CPython and the unix port
# (a machine.py on MICROPYPATH shadows the built-in module there). I2S behaves like the ESP32
# port's (reference/micropython-notes.md 1.1-1.3) where the firmware can tell the difference:
#   - blocking until the first MP_STREAM_POLL ioctl (ASYNCIO mode, partial transfers after it,
#     for good) or irq() (non-blocking, callback when a write has been copied); init() resets;
#   - RX at 24 kHz real time from simworld (readable in whole DMA buffers with its
#     mic_dma_frames); it holds ibuf/8 samples (the port's DMA stores 32-bit stereo frames),
#     beyond that the oldest are lost and counted (overruns);
#   - TX consumes exactly 24 kHz real time from an ibuf-byte queue; when it runs dry it plays
#     silence (auto_clear) and counts an underrun; deinit() drops what is queued (flushed).
# Counters (cumulative over init/deinit): written, played (bytes clocked out), flushed,
# underruns, overruns (samples). played is the cursor's ground truth.
import io
import struct

import simworld
from meerkat_rt import fast

try:
    from micropython import schedule  # type: ignore
except ImportError:

    def schedule(f, arg):
        f(arg)


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1

    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        self._v = value or 0

    def value(self, v=None):
        if v is None:
            return self._v
        self._v = 1 if v else 0

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self._v = 1

    def off(self):
        self._v = 0


class I2S(io.IOBase):
    RX = 1
    TX = 2
    MONO = 0
    STEREO = 1

    def __init__(self, id, **kw):
        self.id = id
        self.written = self.played = self.flushed = self.underruns = self.overruns = 0
        self.buf = None
        self.init(**kw)

    def init(self, *, sck, ws, sd, mode, bits, format, rate, ibuf, mck=None):
        if mode not in (1, 2) or bits not in (16, 32) or format != 0 or rate != 24000 or mode == 2 and bits != 16:
            raise ValueError("fake I2S: only RX 16/32-bit or TX 16-bit, MONO, 24000 Hz")
        w = simworld.get()
        w.service()
        self.mode = mode
        self.bits = bits
        self.ibuf = ibuf
        self.asyncio = False
        self.handler = None
        self.live = True
        self.g = w.now()  # RX: next sample to deliver; TX: output decided up to here
        if mode == 1:
            w.rx0 = self.g
            if bits == 32 and self.buf is None:
                self.buf = bytearray(512)
        else:
            if self.buf is None or len(self.buf) != ibuf:
                self.buf = bytearray(ibuf)
            self.rd = self.q = 0
            self.pend = None  # irq mode: (buf, off, n) being copied
            w.tx = self

    def deinit(self):
        simworld.get().service()
        if self.mode == 2:
            self.flushed += self.q
            self.q = 0
            self.pend = None
        self.live = False

    def irq(self, handler):
        self.handler = handler

    def ioctl(self, req, flags):
        if req != 3:  # only MP_STREAM_POLL; -1 also answers MP_STREAM_GET_FILENO, which the unix
            return -1  # port's select asks first: 0 would make it poll stdin instead of us
        self.asyncio = True  # the port switches for good on the first poll
        if flags & (4 if self.mode == 1 else 1):
            raise OSError(1)  # EPERM, as the port answers a poll for the other direction
        w = simworld.get()
        w.service()
        if self.mode == 1:
            return flags & 1 if w.rx_ready() > self.g else 0
        return flags & 4 if self.q < self.ibuf else 0

    ####################################################################
    # RX

    def readinto(self, buf, n=-1):
        w = simworld.get()
        w.service()
        size = self.bits // 8
        want = (len(buf) if n < 0 else min(n, len(buf))) // size
        while True:
            due = w.rx_ready() - self.g  # whole DMA buffers only, with mic_dma_frames
            cap = self.ibuf // 8
            if due > cap:
                self.overruns += due - cap
                self.g += due - cap
                due = cap
            if due >= want or self.asyncio:
                break
            simworld.sleep_us((want - due) * 125 // 3 + 100)  # blocking mode: wait for it
        k = min(due, want)
        if size == 2:
            w.mic_samples(buf, 0, self.g, k)
        else:
            done = 0
            shift = w.cfg["raw_shift"]
            while done < k:
                m = min(k - done, 256)
                w.mic_samples(self.buf, 0, self.g + done, m)
                for i in range(m):
                    v = struct.unpack_from("<h", self.buf, 2 * i)[0]
                    struct.pack_into("<i", buf, 4 * (done + i), v << shift)
                done += m
        self.g += k
        return k * size

    ####################################################################
    # TX

    def write(self, buf, off=0, n=-1):
        if not self.live:
            raise OSError(1)  # EPERM, as the port after deinit()
        if n < 0:
            n = len(buf) - off
        w = simworld.get()
        w.service()
        if self.handler is not None:
            self.pend = (buf, off, n)
            self._fill()
            return n
        while not self.asyncio and self.ibuf - self.q < n:
            simworld.sleep_us((n - self.ibuf + self.q) * 125 // 6 + 100)  # blocking mode
            w.service()
        k = min(n, self.ibuf - self.q) & ~1
        self._put(buf, off, k)
        return k

    def _put(self, src, off, k):
        i = (self.rd + self.q) % self.ibuf
        m = min(k, self.ibuf - i)
        fast.copy(self.buf, i, src, off, m)
        fast.copy(self.buf, 0, src, off + m, k - m)
        self.q += k
        self.written += k

    def _fill(self):
        # irq mode: the driver task copies the pending buffer as the queue frees up.
        buf, off, n = self.pend
        k = min(n, self.ibuf - self.q) & ~1
        self._put(buf, off, k)
        if k == n:
            self.pend = None
            schedule(self.handler, self)
        else:
            self.pend = (buf, off + k, n - k)

    def _advance(self, g):
        # Output from self.g to world index g: queued samples, then silence.
        e = g - self.g
        if e <= 0:
            return
        w = simworld.world
        c = min(e, self.q >> 1)
        done = 0
        while done < c:
            k = min(c - done, (self.ibuf - self.rd) >> 1)
            w.played(self.buf, self.rd, self.g + done, k)
            self.rd = (self.rd + 2 * k) % self.ibuf
            done += k
        self.q -= 2 * c
        self.played += 2 * c
        if c < e:
            if c or not self.dry:
                self.underruns += 1  # ran dry while playing (the end of the audio included)
            w.played(None, 0, self.g + c, e - c)
        self.dry = c < e
        self.g = g
        if self.pend is not None:
            self._fill()

    dry = True

    @staticmethod
    def shift(*, buf, bits, shift):
        size = bits // 8
        fmt = "<h" if size == 2 else "<i"
        for i in range(0, len(buf) - size + 1, size):
            v = struct.unpack_from(fmt, buf, i)[0]
            struct.pack_into(fmt, buf, i, v << shift if shift >= 0 else v >> -shift)
