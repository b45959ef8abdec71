# meerkat_rt.playback: assistant audio -> PCM ring -> I2S speaker, with a per-item cursor.
#
# Downlink audio is base64-decoded while it streams in from the socket, straight into a
# preallocated PCM ring: begin_chunk(), feed_b64() as text arrives (a partial quad is carried
# between calls), then commit_chunk(item_id, content_index) makes it playable and attributes it
# to its item, or abort_chunk() forgets it; flush_partial() makes what has been decoded of a
# chunk playable early (a chunk bigger than the ring streams through it). The caller keeps
# space() ahead of what it feeds.
#
# The cursor: for each assistant item (the current one and a few before it, a fixed table),
#   received = bytes committed, accepted = bytes the I2S driver took,
#   played   = accepted - what the DMA queue still holds, from a model of that queue: it grows
#              by what is written and drains at 48 bytes/ms (24 kHz, 16-bit mono), floored at
#              0 on underrun. Acceptance is timestamped after the write returns and the model
#              carries SLACK (one DMA descriptor, after an underrun new data can wait behind
#              the one being sent, plus 2 ms of tick rounding), so played never runs ahead of
#              what the DAC really clocked out;
#   heard_ms = max(0, min(played, received) // 48 - margin_ms)   (reference 9.3).
# stop_now() flushes the ring and, given the I2S init arguments, the DMA queue (deinit + init:
# the only flush machine.I2S has); later chunks of a stopped item are dropped. On the ESP32
# that init() re-allocates the DMA buffers in internal RAM, which Wi-Fi and TLS compete for:
# when it fails (ENOMEM) the channel is gone. It is retried once after gc.collect(); if that
# fails too the speaker is down: the player retries init() every _REVIVE_MS from its pump
# hook, discarding the audio queued when a retry fails (lost_bytes), and plays on without
# flushes once it is back (reinit_failures; logged).
#
# Speaker modes (board/config "speaker_mode"):
#   "drain": the run() task, asyncio out_buf/drain (reference/micropython-notes.md 1.3); the
#            default on MicroPython. CPython's asyncio cannot wrap a fake I2S: there it falls
#            back to "poll".
#   "irq":   I2S.irq(): write() returns at once, the driver copies in the background and calls
#            back; the callback only sets a flag and poll() accounts and re-arms from the pump
#            (no shared state touched in scheduler context). For ESP32-S3 with octal PSRAM,
#            where drain() hangs (micropython#16029). The port can lose a callback (its
#            mp_sched_schedule queue holds 8; the write's queue result is ignored): a write
#            whose callback has not come within its audio + the DMA queue + _IRQ_MARGIN_MS is
#            taken as done (irq_lost, logged once), or the player would never idle again.
#   "poll":  poll() from the pump writes what the DMA accepts right now (ASYNCIO mode, partial
#            writes). No allocation at all.
# Writes go straight from the ring (write(buf, off, n): MicroPython's stream write takes an
# offset and a length), so only "drain" slices (one memoryview per block).
import select
from array import array

from . import fast, log
from .capture import arm
from .compat import IS_MICROPYTHON, const, sleep_ms, ticks_add, ticks_diff, ticks_ms

POLL = "poll"
IRQ = "irq"
DRAIN = "drain"

_K = const(4)  # items tracked: the current one and three before it
_MASK = const(0x3FFFFFFF)  # DAC stream positions wrap here (stay small ints on the ESP32)
_HMS = const(5)  # level history granularity: ms of wall time per cell
_CELL = const(240)  # bytes per cell (5 ms at 48 bytes/ms)
_SLACK = const(608)  # one TX DMA descriptor (256 frames x 2 bytes) + 2 ms of tick rounding
_FREE = 0  # marks an unused item slot (ids are str, or None for anonymous audio)
RETIRED = "?-"  # the id of audio whose item could not be told (retire())
_IRQ_MARGIN_MS = const(50)  # beyond a write's audio and the DMA queue: scheduling, ticks
_REVIVE_MS = const(100)  # between init() retries of a speaker whose re-init failed


class Player:
    def __init__(self, i2s, capacity: "int | bytearray" = 19200, ibuf=8192, mode=DRAIN, block_ms=20, gain_db=0, margin_ms=100, reinit=None):
        # capacity: bytes, or a preallocated bytearray (allocate the big buffers first, before
        # the heap fragments; like micropython.RingIO).
        buf = capacity if isinstance(capacity, bytearray) else bytearray(capacity & ~1)
        if len(buf) < 9600:
            raise ValueError("playback: capacity must hold a 200 ms chunk (9600 bytes)")
        if mode == DRAIN and not IS_MICROPYTHON:
            mode = POLL
        self.i2s = i2s
        self.mode = mode
        self.margin_ms = margin_ms
        self.clock = ticks_ms  # replaceable in tests
        self._reinit = reinit  # I2S.init() keyword arguments: enables the DMA flush
        self._cap = len(buf) & ~1
        self.buf = buf
        self._block = block_ms * 48
        self._ibuf = ibuf
        self._gain = int(256 * 10 ** (gain_db / 20) + 0.5)
        self._rd = self._n = self._t = self._busy = 0  # read index, committed, tentative, in flight
        self._carry = bytearray(4)
        self._nc = 0
        self._pad = False
        self._ids = [_FREE] * _K  # type: list[object]
        self._recv = array("i", bytes(4 * _K))
        self._acc = array("i", bytes(4 * _K))
        self._end = array("i", bytes(4 * _K))  # DAC stream position after the item's last byte
        self._stop = bytearray(_K)
        self._next = 0  # next table slot to (re)use: the oldest
        self._last = -1  # slot of the newest committed item
        self._se = bytearray(_K)  # segments of the ring: item slot, bytes (ring order)
        self._sn = array("i", bytes(4 * _K))
        self._sh = self._sc = 0
        self._q = self._tq = self._pos = 0  # DAC queue model: bytes at time _tq; stream position
        # What the speaker plays, as the level of each 5 ms of wall time (ticks since _hb, by
        # the DMA model): the echo-aware VAD looks up the time its microphone block was
        # captured, less the echo's delay. Covers the DMA queue ahead and ~150 ms behind.
        self._hist = array("H", bytes(2 * (ibuf // (48 * _HMS) + 32)))
        self._hb = -1  # tick of cell 0; -1: nothing played yet
        self._he = -1  # the last cell holding audio (later cells are silence)
        self._irq_done = False
        self._flush_req = False
        self._tw = 0  # irq mode: tick of the write in flight
        self._down = None  # init() arguments while the speaker's re-init keeps failing
        self._t_down = 0
        self.irq_lost = self.reinit_failures = self.lost_bytes = 0
        self.underruns = self.chunks = self.bytes = self.dropped = self.flushes = 0
        if mode == IRQ:
            self._cb = self._irq
            i2s.irq(self._cb)
        elif mode == POLL:
            arm(i2s, select.POLLOUT)

    ####################################################################
    # Downlink side

    def space(self):
        return self._cap - self._n - (self._t if self._t > 0 else 0)

    def queued(self):
        """Bytes playable and not yet handed to the speaker."""
        return self._n - self._busy

    def tentative(self):
        """Bytes decoded for the chunk in progress and not yet playable."""
        return self._t if self._t > 0 else 0

    def begin_chunk(self):
        self._t = self._nc = 0
        self._pad = False

    def abort_chunk(self):
        self._t = self._nc = 0

    def feed_b64(self, buf, off, n):
        """Decode base64 text into the ring, tentatively. False: invalid base64 (or more than
        space()); the caller then aborts the chunk."""
        if self._t < 0:
            return True  # the chunk was cut by stop_now(): swallow the rest of it
        nc = self._nc
        if self._pad and n or (nc + n) // 4 * 3 > self.space():
            return False  # text after '=' padding, or the caller overran space()
        if nc:
            k = min(4 - nc, n)
            fast.copy(self._carry, nc, buf, off, k)
            nc += k
            off += k
            n -= k
            if nc < 4:
                self._nc = nc
                return True
            if not self._dec(self._carry, 0, 4) or (self._pad and n):
                return False
        m = n & ~3
        if m and not self._dec(buf, off, m) or (self._pad and n > m):
            return False
        fast.copy(self._carry, 0, buf, off + m, n - m)
        self._nc = n - m
        return True

    def feed_pcm(self, buf, off, n):
        """Copy raw PCM into the ring, tentatively (for audio that arrives unencoded). False
        when it is more than space()."""
        if self._t < 0:
            return True
        if n > self.space():
            return False
        w = (self._rd + self._n + self._t) % self._cap
        k = min(n, self._cap - w)
        fast.copy(self.buf, w, buf, off, k)
        fast.copy(self.buf, 0, buf, off + k, n - k)
        self._t += n
        return True

    def _dec(self, src, off, n):
        k = fast.b64_decode(self.buf, self._cap, (self._rd + self._n + self._t) % self._cap, src, off, n)
        if k < 0:
            return False
        self._t += k
        self._pad = k < n // 4 * 3
        return True

    def flush_partial(self, item_id, content_index=0):
        """Make what has been decoded of the chunk in progress playable now, as part of
        item_id, and go on with the chunk: a chunk bigger than the ring streams through it.
        Returns the PCM bytes made playable, -2 if the audio was dropped (a stopped item, or no
        room in the item table: the caller skips the rest of the chunk)."""
        t = self._t
        if t <= 1:
            return 0  # nothing whole yet, or cut by stop_now()
        k = t & ~1  # whole samples only; an odd byte waits for its other half
        done = self._commit(k, item_id)
        self._t = t - k if done >= 0 else 0
        return done

    def commit_chunk(self, item_id, content_index=0):
        """End the chunk: make the rest of it playable as part of item_id (content parts of one
        item are counted together). Returns the PCM bytes it made playable, -1 if the base64
        was cut short (one stray character; unpadded base64 is accepted), -2 if dropped (a
        stopped item, or no room in the item table)."""
        if self._t >= 0 and self._nc:
            nc = self._nc
            if nc == 1 or self._pad:
                self.abort_chunk()
                return -1
            for i in range(nc, 4):
                self._carry[i] = 61  # "=": the server left the padding out
            if not self._dec(self._carry, 0, 4):
                self.abort_chunk()
                return -1
        t = self._t
        self._t = self._nc = 0
        if t < 0:
            return 0  # cut by stop_now()
        t &= ~1
        if not t:
            return 0
        done = self._commit(t, item_id)
        if done >= 0:
            self.chunks += 1
        return done

    def _commit(self, t, item_id):
        # t tentative bytes (even) become playable, attributed to item_id; t, or -2 dropped.
        se = self._se
        sc = self._sc
        j = (self._sh + sc - 1) % _K  # the newest segment
        e = self._find(item_id)
        if e < 0:  # a new item takes the oldest table slot, unless that one is still queued
            e = self._next
            for i in range(sc):
                if se[(self._sh + i) % _K] == e:
                    e = -1
            if e >= 0:
                self._ids[e] = item_id
                self._recv[e] = self._acc[e] = self._end[e] = self._stop[e] = 0
                self._next = (e + 1) % _K
        if e < 0 or self._stop[e] or sc == _K and se[j] != e:
            self.dropped += 1
            return -2
        if sc and se[j] == e:
            self._sn[j] += t
        else:
            j = (j + 1) % _K
            se[j] = e
            self._sn[j] = t
            self._sc = sc + 1
        if self._gain != 256:
            w = (self._rd + self._n) % self._cap
            k = min(t, self._cap - w)
            fast.scale(self.buf, w, k >> 1, self._gain)
            fast.scale(self.buf, 0, (t - k) >> 1, self._gain)
        self._n += t
        self._recv[e] += t
        self._last = e
        self.bytes = (self.bytes + t) & _MASK  # wraps: stays a small int on the ESP32
        return t

    def rename(self, old_id, new_id):
        """Audio committed as old_id (an assumption made while a big chunk streamed, before its
        ids arrived) belongs to new_id. Done only when new_id has no entry of its own; else
        the audio stays counted under old_id, and new_id's cursor errs low (the safe side)."""
        e = self._find(old_id)
        if e >= 0 and self._find(new_id) < 0:
            self._ids[e] = new_id
            return True
        return False

    def retire(self, item_id):
        """Audio committed as item_id (a provisional id) is nobody's: its entry can no longer
        be found, and no truncate names it; it plays and is counted as before."""
        e = self._find(item_id)
        if e >= 0:
            self._ids[e] = RETIRED

    def _find(self, item_id):
        for e in range(_K):
            if self._ids[e] is not _FREE and self._ids[e] == item_id:
                return e
        return -1

    ####################################################################
    # Speaker side

    def _span(self):
        # The next contiguous run of committed bytes to write (after any in flight).
        start = (self._rd + self._busy) % self._cap
        k = min(self._n - self._busy, self._cap - start)
        return k if self.mode == POLL or k < self._block else self._block

    def poll(self, now=None):
        """Pump hook (modes poll and irq): write what the speaker takes now. True if it did."""
        did = False
        if self._down is not None:
            self._revive()
            return False
        if self.mode == IRQ:
            if self._busy:
                t = self.clock()
                if self._irq_done:
                    self._done(self._busy, t)
                    did = True
                elif ticks_diff(t, self._tw) > (self._busy + self._ibuf) // 48 + _IRQ_MARGIN_MS:
                    self._lost_irq(t)
                    did = True
            k = self._span() if not self._busy else 0
            if k:
                self._irq_done = False
                self._busy = k
                self._tw = self.clock()
                self.i2s.write(self.buf, self._rd, k)  # returns at once; _irq() when copied
                did = True
        elif self.mode == POLL:
            k = self._span()
            if k:
                k = self.i2s.write(self.buf, self._rd, k)
                if k:
                    self._done(k, self.clock())
                    did = True
        if self._q and not self._queued(self.clock(), _SLACK):
            self._q = 0  # drained: forget the old timestamp (ticks wrap after days)
        return did

    def _irq(self, i2s):
        self._irq_done = True  # scheduler context: only a flag, poll() does the rest

    def _lost_irq(self, now):
        # The write in flight had all the time it could need and no callback came: take it as
        # copied (late by the model, so the cursor errs low). A callback that was only late
        # would now end the next block early, by at most one block, once.
        self.irq_lost += 1
        if self.irq_lost == 1:
            log.warn("playback", "speaker irq callback lost (none %d ms after a %d-byte write): taken as done, counted in irq_lost", ticks_diff(now, self._tw), self._busy)
        self._done(self._busy, now)

    async def run(self):
        """The speaker task for mode "drain": create it with asyncio.create_task(player.run())."""
        import asyncio

        sw = asyncio.StreamWriter(self.i2s, {})
        mv = memoryview(self.buf)
        while True:
            if self._down is not None:
                self._revive()
                await sleep_ms(5)
                continue
            k = self._span()
            if k:
                self._busy = k
                sw.out_buf = mv[self._rd : self._rd + k]  # type: ignore  # skip write(): drain() polls
                await sw.drain()
                self._done(k, self.clock())
                if self._flush_req:
                    self._flush()
            else:
                await sleep_ms(5)

    def _queued(self, now, slack):
        # Bytes still in the DMA queue by the model (+ slack while anything is queued).
        if not self._q:
            return 0
        d = ticks_diff(now, self._tq)
        q = self._q + slack - 48 * (d if d > 0 else 0)
        return q if q > 0 else 0

    def _done(self, k, now):
        # k bytes at the ring's read index were accepted by the I2S driver.
        q = self._queued(now, 0)
        self._history(ticks_add(now, q // 48), k)
        if not q and self._acc[self._se[self._sh]]:
            self.underruns += 1  # the DAC ran dry inside an item
        self._pos = self._consume(k, True)
        self._q = min(q + k, self._ibuf)
        self._tq = now
        self._busy = 0

    def _history(self, t, k):
        # The k bytes at the read index play from tick t on (by the model): their level per
        # 5 ms cell of wall time. Per cell, not one average per write: poll mode writes up to
        # ibuf at once, and a quiet start would hide a loud end from the echo-aware VAD.
        # A cell holds the mean over all of its 5 ms: each part a write puts in it adds its
        # share (and what the speaker did not play there counts as silence). Not the louder
        # part: poll mode writes a few ms at a time, and the loudest of the short pieces of a
        # cell read 3 dB over its level (median, 5.5 dB at the 90th percentile, measured on
        # the simulated board), which the VAD learnt as a lower echo coupling, and on the next
        # echo louder than that it barged in on its own voice.
        h = self._hist
        nc = len(h)
        if self._hb < 0:
            self._hb = t
        elif self._he > 1 << 16:  # keep cell numbers small ints: move the origin, whole laps
            lap = self._he // nc * nc
            self._hb = ticks_add(self._hb, _HMS * lap)  # type: ignore  # a tick here (-1 only before)
            self._he -= lap
        d = ticks_diff(t, self._hb)
        c = d // _HMS
        he = self._he
        i = max(he + 1, c - nc)
        while i < c:  # the speaker was silent since the last audio (idle, underrun)
            h[i % nc] = 0
            i += 1
        off = self._rd
        n = (_HMS - d % _HMS) * 48  # bytes to the next cell boundary
        while k > 0:
            if n > k:
                n = k
            level = fast.mean_abs(self.buf, off, n >> 1) * n // _CELL
            j = c % nc
            if c <= he:  # a cell shared with the previous write: the sum of the shares
                level += h[j]
            h[j] = level if level < 65535 else 65535
            off += n
            k -= n
            c += 1
            n = _CELL
        self._he = max(he, c - 1)

    def _consume(self, k, accepted):
        # Take k bytes off the front of the ring and its segments; returns the stream position.
        p = self._pos
        while k:
            j = self._sh
            e = self._se[j]
            m = min(k, self._sn[j])
            if accepted:
                self._acc[e] += m
                p = (p + m) & _MASK
                self._end[e] = p
            self._sn[j] -= m
            if not self._sn[j]:
                self._sh = (j + 1) % _K
                self._sc -= 1
            self._rd = (self._rd + m) % self._cap
            self._n -= m
            k -= m
        return p

    def stop_now(self):
        """Barge-in: silence now. Flushes the ring (not a block already handed to the driver
        in irq/drain mode) and, with reinit, the DMA queue; the current and unfinished items
        (with ids) are marked stopped and their late chunks dropped; a chunk being decoded is
        abandoned."""
        now = self.clock()
        for e in range(_K):
            i = self._ids[e]
            # Anonymous audio cannot be told apart from the next response's: whether a late
            # chunk without an id is wanted is the channel's call (it drops audio until the
            # next turn), so only items with ids stay stopped.
            if i is not _FREE and i is not None and (e == self._last or self._played(e, now) < self._recv[e]):
                self._stop[e] = 1
        keep = self._busy
        i = 0
        while i < self._sc and keep:
            j = (self._sh + i) % _K
            if self._sn[j] > keep:
                self._sn[j] = keep
            keep -= self._sn[j]
            i += 1
        self._sc = i
        self._n = self._busy
        self._t = -1
        if self._reinit is not None:
            if self.mode == DRAIN and self._busy:
                self._flush_req = True  # after the block being drained (<= block_ms)
            else:
                self._flush()

    def _flush(self):
        now = self.clock()
        for e in range(_K):
            self._acc[e] = self._played(e, now)  # the queued rest is never played
        self._q = 0
        if self._hb >= 0:
            self._he = min(self._he, ticks_diff(now, self._hb) // _HMS)  # nor heard
        self._flush_req = False
        self.flushes += 1
        self.i2s.deinit()
        if self.mode == IRQ:
            self._consume(self._busy, False)  # the transfer in flight died with the driver task
            self._busy = 0
        kw = self._reinit
        err = self._start(kw)
        if err is not None:
            import gc

            gc.collect()  # frees what finalisers hold (sockets, TLS contexts) in the IDF heap
            err = self._start(kw)
        if err is not None:
            self.reinit_failures += 1
            self._reinit = None  # no more flushes: a stop must not risk the speaker again
            self._down = kw
            self._t_down = now
            log.warn("playback", "speaker re-init failed twice (%r): retrying every %d ms, no DMA flush at later stops", err, _REVIVE_MS)

    def _start(self, kw):
        # init() + the mode's set-up; None, or the error (the channel is then gone).
        i2s = self.i2s
        try:
            i2s.init(**kw)  # type: ignore  # this also leaves ASYNCIO/irq mode: redo it
            if self.mode == IRQ:
                i2s.irq(self._cb)  # starts the port's copy task: 2 KB of internal RAM
            elif self.mode == POLL:
                arm(i2s, select.POLLOUT)
        except (OSError, RuntimeError, MemoryError) as e:  # ENOMEM; "failed to create I2S task"
            return e
        return None

    def _revive(self):
        # The speaker is down: init() is retried every _REVIVE_MS; the audio queued meanwhile
        # waits for it, and is discarded when it fails (lost_bytes; the cursor counts it as
        # never played), so that a speaker that stays down cannot hold the turn for ever.
        now = self.clock()
        if ticks_diff(now, self._t_down) < _REVIVE_MS:
            return
        self._t_down = now
        if self._start(self._down) is None:
            log.info("playback", "speaker back after a failed re-init")
            self._down = None
        elif self._n:
            self.lost_bytes += self._n
            self._consume(self._n, False)

    ####################################################################
    # The cursor and other queries

    def _played(self, e, now):
        a = self._acc[e]
        q = self._queued(now, _SLACK) - ((self._pos - self._end[e]) & _MASK)
        return a - (0 if q < 0 else q if q < a else a)

    def received_ms(self, item_id):
        e = self._find(item_id)
        return self._recv[e] // 48 if e >= 0 else 0

    def played_ms(self, item_id):
        e = self._find(item_id)
        return self._played(e, self.clock()) // 48 if e >= 0 else 0

    def heard_ms(self, item_id):
        """What to send as audio_played_ms: never more than was played and received."""
        e = self._find(item_id)
        if e < 0:
            return 0
        h = min(self._played(e, self.clock()), self._recv[e]) // 48 - self.margin_ms
        return h if h > 0 else 0

    def finished(self, item_id):
        """All audio received for the item has been played (True for an unknown item)."""
        e = self._find(item_id)
        return e < 0 or self._played(e, self.clock()) >= self._recv[e]

    def is_stopped(self, item_id):
        e = self._find(item_id)
        return e >= 0 and self._stop[e] == 1

    def current_item(self):
        """Id of the item being heard (the oldest not finished nor stopped), else the newest
        item; None when there is none (or it is anonymous)."""
        now = self.clock()
        for i in range(_K):
            e = (self._next + i) % _K
            if self._ids[e] is not _FREE and not self._stop[e] and self._played(e, now) < self._recv[e]:
                return self._ids[e]
        return self._ids[self._last] if self._last >= 0 else None

    def idle(self):
        """Nothing left to play: ring empty and the DMA queue drained."""
        return not self._n and not self._busy and not self._queued(self.clock(), _SLACK)

    def level(self, t0, ms):
        """Mean absolute level of what the speaker played in the ms milliseconds from tick t0
        on, by the DMA model (silence counts as 0). The model times a write's first sample
        when the queue ahead of it drains; the DAC may play it up to one DMA descriptor (11 ms)
        later, steadily so while it plays without a gap: the VAD learns that as echo delay."""
        if self._hb < 0 or ms <= 0:
            return 0
        h = self._hist
        nc = len(h)
        he = self._he
        d = ticks_diff(t0, self._hb)
        c = d // _HMS
        w = _HMS - (d - c * _HMS)  # ms of the first cell inside the span
        total = 0
        left = ms
        while left > 0:
            if w > left:
                w = left
            if he - nc < c <= he:
                total += w * h[c % nc]
            left -= w
            c += 1
            w = _HMS
        return total // ms

    def level_max(self, t0, t1):
        """The loudest 5 ms of what the speaker played between ticks t0 and t1 (0: silence)."""
        if self._hb < 0:
            return 0
        h = self._hist
        nc = len(h)
        he = self._he
        c = ticks_diff(t0, self._hb) // _HMS
        e = ticks_diff(t1, self._hb) // _HMS
        if e > he:
            e = he
        if c <= he - nc:
            c = he - nc + 1
        level = 0
        while c <= e:
            v = h[c % nc]
            if v > level:
                level = v
            c += 1
        return level

    def level_now(self):
        """Mean absolute level of the samples leaving the speaker now (0 when silent): the
        loudest 10 ms cell within the model's uncertainty around the play head (it may be a
        SLACK late, and the echo of what follows it arrives while a block is captured). For a
        VAD without block times; Capture(speaker=player) uses level()."""
        now = self.clock()
        return self.level_max(ticks_add(now, -13), ticks_add(now, 26))
