# meerkat_rt.capture: I2S microphone -> 16-bit frames -> VAD + the uplink ring.
#
# poll(now) reads whatever the microphone has, without waiting, and returns whether it did
# anything; the channel's pump calls it every few ms. Reads go into one fixed staging buffer and
# are copied (16-bit) or converted (32-bit slots, shift + clamp) into the frame at an offset:
# no slices, no per-frame objects, so steady-state capture allocates nothing.
# The VAD runs on short blocks (block_ms, 10 ms) as they complete, independent of the frame
# length; a full frame is base64-encoded into the ring, which never blocks (it drops the oldest).
#
# Block times. The echo in a block is what the speaker played while the block was captured (less
# the echo's delay), not what it plays when the pump gets round to the block: after a stall of
# 40 ms the pump reads four blocks at once. So each block gets the tick at which its last sample
# was captured, from the sample count: +block_ms per block, held at or below what every read
# that drained the DMA allows (its samples were captured no later than now), and moved up once
# a second by the smallest slack such reads saw (samples the DMA lost in an overrun). The speaker
# side is Player.level(): what it played, per 5 ms of wall time.
import select

from . import fast
from .compat import ticks_add, ticks_diff


def arm(stream, events):
    """Make an ESP32 machine.I2S non-blocking for good: until the first MP_STREAM_POLL ioctl its
    readinto/write block until the whole buffer is done; that ioctl switches it to ASYNCIO mode
    (partial, immediate transfers) permanently (reference/micropython-notes.md 1.3). I2S.init()
    undoes it, so call this again after a re-init. events: select.POLLIN for a microphone,
    POLLOUT for a speaker (the port raises EPERM for the other direction)."""
    try:
        p = select.poll()
        p.register(stream, events)
        p.poll(0)
        p.unregister(stream)
    except (TypeError, ValueError, OSError):
        # Not a stream select can take: a fake I2S under CPython (no fileno) or a plain test
        # object on the unix port. The fakes answer the ioctl directly.
        stream.ioctl(3, events)


class Capture:
    def __init__(self, i2s, ring, vad=None, bits=16, shift=0, highpass=False, block_ms=10, speaker=None, speaker_level=None):
        # speaker: the Player (level(t0, ms)): the VAD is given the level the speaker played
        # over the block's own capture time (it learns the echo's delay behind that itself).
        # speaker_level: a callable giving the level playing now, for a speaker without that
        # history (tests).
        self.i2s = i2s
        self.ring = ring
        self.vad = vad
        self.speaker = speaker
        self.speaker_level = speaker_level
        self.block_ms = block_ms
        self._bb = block_ms * 48  # PCM bytes per VAD block
        if ring.frame_bytes % self._bb:
            raise ValueError("capture: the frame must be a whole number of %d ms blocks" % block_ms)
        self._wide = 2 if bits == 32 else 1  # bytes read per PCM byte kept
        self._shift = shift
        self._stage = bytearray(self._bb * self._wide)
        self._frame = bytearray(ring.frame_bytes)
        self._hp = bytearray(4) if highpass else None  # DC blocker state
        self._fill = 0
        self.frames = 0
        self.blocks = 0
        self.level = 0  # mic level of the last block (mean absolute amplitude)
        self.event = 0  # last VAD event not yet taken
        self.event_block = -1  # block index of the last VAD event (audio time = index * block_ms)
        self.block_t = -1  # tick when the last block's last sample was captured (-1: none yet)
        self._slack = 1 << 20  # the least slack a draining read saw since the last check
        self._checks = 0
        arm(i2s, select.POLLIN)

    def poll(self, now):
        busy = False
        while True:
            n = self.i2s.readinto(self._stage)
            if not n:
                self._drained(now)
                return busy
            busy = True
            if self._take(n, now):
                return True  # a frame went to the ring: let the uplink run
            if n < len(self._stage):
                self._drained(now)
                return True

    def _drained(self, now):
        # The DMA had nothing more: every sample read so far was captured by now.
        if self.block_t < 0:
            return
        t = ticks_add(now, -((self._fill % self._bb) // 48))  # the end of the last whole block
        d = ticks_diff(t, self.block_t)
        if d < 0:
            self.block_t = t  # our count ran ahead of the clock
        elif d < self._slack:
            self._slack = d

    def _take(self, n, now):
        pushed = False
        stage = self._stage
        frame = self._frame
        bb = self._bb
        wide = self._wide
        src = 0
        while src < n:
            fill = self._fill
            k = min((n - src) // wide, bb - fill % bb)
            if k <= 0:
                break  # a torn sample: cannot happen with whole-sample reads, but never spin
            if wide == 2:
                fast.s32_to_s16(frame, fill, stage, src, k >> 1, self._shift)
            else:
                fast.copy(frame, fill, stage, src, k)
            src += k * wide
            fill += k
            if fill % bb == 0:
                self._block(fill - bb, now)
            if fill == len(frame):
                # Time of the frame's first sample (DMA queueing delay not included).
                self.ring.push_pcm(frame, 0, ticks_add(now, -self.ring.frame_ms))
                self.frames += 1
                fill = 0
                pushed = True
            self._fill = fill
        return pushed

    def _block(self, off, now):
        n = self._bb >> 1
        if self._hp is not None:
            fast.highpass(self._frame, off, n, self._hp)
        self.level = fast.mean_abs(self._frame, off, n)
        if self.block_t < 0:
            self.block_t = now
        else:
            self.block_t = ticks_add(self.block_t, self.block_ms)  # type: ignore  # -1 only before the first block
            self._checks += 1
            if self._checks >= 1000 // self.block_ms:
                # A second of blocks: if every draining read left slack, samples were lost
                # (an overrun) or the start was guessed early: catch up by the least of it.
                if self._slack < 1 << 20:
                    self.block_t = ticks_add(self.block_t, self._slack)
                self._slack = 1 << 20
                self._checks = 0
        vad = self.vad
        if vad is not None:
            if self.speaker is not None:  # what it played while this block was captured
                s = self.speaker.level(ticks_add(self.block_t, -self.block_ms), self.block_ms)
            elif self.speaker_level is not None:
                s = self.speaker_level()
            else:
                s = 0
            ev = vad.update(self.level, s)
            if ev:
                self.event = ev
                self.event_block = self.blocks
        self.blocks += 1

    def take_vad_event(self):
        """The last VAD event (vad.ONSET > 0, vad.END < 0) since the previous call, or 0."""
        ev = self.event
        self.event = 0
        return ev
