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
#   - init() re-allocates the DMA buffers (machine_i2s.c: RX ibuf/2048 buffers of 2 KB, TX
#     ibuf/512 of 512 bytes, at least two) from simworld's i2s_ram, and fails with
#     OSError(ENOMEM) when they do not fit or while i2s_init_fail lasts; the channel is then
#     gone (deleted by the deinit that init() starts with) and every write raises OSError
#     until an init() succeeds. irq() with a handler starts the port's 2 KB copy task;
#   - irq mode as the port's task: one write being copied and one queued (a FreeRTOS queue of
#     one); a write beyond that is lost silently (xQueueSend's result is ignored); the
#     callbacks simworld's i2s_irq_lose names never come (mp_sched_schedule's queue was full).
# Counters (cumulative over init/deinit): written, played (bytes clocked out), flushed,
# underruns, overruns (samples), callbacks (irq completions, lost ones included), lost_writes.
# played is the cursor's ground truth.
# RTC: the ESP32's wall clock (gettimeofday, which mbedtls checks certificates against), from
# simworld's rtc setting: 2000-01-01 after a power-up.
import errno
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


_S2000 = 946684800  # seconds from 1970 (the host's epoch) to 2000 (the ESP32 port's)


def _days(y, m, d):
    # Days from 2000-01-01 to a civil date (proleptic Gregorian).
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 730425


class RTC:
    """machine.RTC of the ESP32 port: datetime() reads and sets the system time (8-tuples
    (year, month, day, weekday 0=Monday, hour, minute, second, microsecond))."""

    def __init__(self, id=0):
        pass

    def datetime(self, dt=None):
        w = simworld.get()
        now = w.now() // 24000
        if dt is not None:
            y, mo, d, _, h, mi, s = dt[:7]
            w.rtc_base = _days(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - now
            return None
        import time

        t = w.rtc_base + now
        tm = time.gmtime(t + _S2000)
        return (tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], 0)


def _dma(mode, ibuf):
    # The port's DMA for one channel (machine_i2s.c get_dma_buf_count): buffers of 256 frames,
    # at least two; an RX frame is always 32-bit stereo (8 bytes), a TX frame 16-bit mono here.
    frame = 8 if mode == 1 else 2
    return max(ibuf // (256 * frame), 2) * 256 * frame


_TASK = 2048  # I2S_TASK_STACK_SIZE: the irq mode's copy task


class I2S(io.IOBase):
    RX = 1
    TX = 2
    MONO = 0
    STEREO = 1

    def __init__(self, id, **kw):
        self.id = id
        self.written = self.played = self.flushed = self.underruns = self.overruns = 0
        self.callbacks = self.lost_writes = 0
        self.buf = None
        self.ram = 0  # internal RAM this channel holds (DMA, copy task), in world _w
        self._w = None
        self.live = False
        w = simworld.get()
        old = w.i2s_by_id.get(id)
        if old is not None:
            old.deinit()  # the port reuses the bus's object: a new I2S(id) deinits the old one
        self._setup(**kw)
        w.i2s_by_id[id] = self

    def init(self, **kw):
        self.deinit()  # as the port: the old channel goes first, whatever follows
        w = simworld.get()
        w.i2s_inits += 1
        if w.i2s_init_fail > 0:
            w.i2s_init_fail -= 1
            raise OSError(errno.ENOMEM, "ESP_ERR_NO_MEM")  # check_esp_err's mapping
        self._setup(**kw)

    def _setup(self, *, sck, ws, sd, mode, bits, format, rate, ibuf, mck=None):
        if mode not in (1, 2) or bits not in (16, 32) or format != 0 or rate != 24000 or mode == 2 and bits != 16:
            raise ValueError("fake I2S: only RX 16/32-bit or TX 16-bit, MONO, 24000 Hz")
        w = simworld.get()
        w.service()
        self._take(w, _dma(mode, ibuf))
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
            self.queued = None  # and the next one, waiting in the task's queue
            w.tx = self

    def _take(self, w, n):
        limit = w.cfg["i2s_ram"]
        if limit is not None and w.i2s_ram + n > limit:
            raise OSError(errno.ENOMEM, "ESP_ERR_NO_MEM")
        w.i2s_ram += n
        self.ram += n
        self._w = w

    def _release(self, n):
        if self._w is not None:
            self._w.i2s_ram -= n
        self.ram -= n

    def deinit(self):
        w = simworld.get()
        w.service()
        if self.live and self.mode == 2:
            self.flushed += self.q
            self.q = 0
            self.pend = self.queued = None
        self._release(self.ram)
        self.handler = None
        self.live = False

    def irq(self, handler):
        if not self.live:
            raise OSError(errno.EINVAL)
        w = simworld.get()
        if handler is not None and self.handler is None:
            try:
                self._take(w, _TASK)
            except OSError:
                raise RuntimeError("failed to create I2S task")
        elif handler is None and self.handler is not None:
            self._release(_TASK)
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
        if not self.live:
            raise OSError(errno.EINVAL)  # no channel (deinit, or a failed init)
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
            raise OSError(errno.EINVAL)  # no channel: i2s_channel_write(NULL) is ESP_ERR_INVALID_ARG
        if n < 0:
            n = len(buf) - off
        w = simworld.get()
        w.service()
        if self.handler is not None:
            if self.pend is None:
                self.pend = (buf, off, n)
                self._fill()
            elif self.queued is None:
                self.queued = (buf, off, n)
            else:
                self.lost_writes += 1  # the queue holds one: xQueueSend(..., 0) fails silently
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
            self.pend = self.queued
            self.queued = None
            self.callbacks += 1
            lose = simworld.world.cfg["i2s_irq_lose"]
            if not lose or self.callbacks not in lose:
                schedule(self.handler, self)
            if self.pend is not None:
                self._fill()
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
