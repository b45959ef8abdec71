# meerkat_rt.capture: I2S microphone -> 16-bit frames -> VAD + the uplink ring.
#
# poll(now) reads whatever the microphone has, without waiting, and returns whether it did
# anything; the channel's pump calls it every few ms. Reads go into one fixed staging buffer and
# are copied (16-bit) or converted (32-bit slots, shift + clamp) into the frame at an offset:
# no slices, no per-frame objects, so steady-state capture allocates nothing.
# The VAD runs on short blocks (block_ms, 10 ms) as they complete, independent of the frame
# length; a full frame is base64-encoded into the ring, which never blocks (it drops the oldest).
import select

from . import fast
from .compat import ticks_add


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
    def __init__(self, i2s, ring, vad=None, bits=16, shift=0, highpass=False, block_ms=10, speaker_level=None):
        self.i2s = i2s
        self.ring = ring
        self.vad = vad
        self.speaker_level = speaker_level  # callable -> level of what the speaker plays now
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
        arm(i2s, select.POLLIN)

    def poll(self, now):
        busy = False
        while True:
            n = self.i2s.readinto(self._stage)
            if not n:
                return busy
            busy = True
            if self._take(n, now) or n < len(self._stage):
                return True  # a frame went to the ring: let the uplink run

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
                self._block(fill - bb)
            if fill == len(frame):
                # Time of the frame's first sample (DMA queueing delay not included).
                self.ring.push_pcm(frame, 0, ticks_add(now, -self.ring.frame_ms))
                self.frames += 1
                fill = 0
                pushed = True
            self._fill = fill
        return pushed

    def _block(self, off):
        n = self._bb >> 1
        if self._hp is not None:
            fast.highpass(self._frame, off, n, self._hp)
        self.level = fast.mean_abs(self._frame, off, n)
        vad = self.vad
        if vad is not None:
            ev = vad.update(self.level, self.speaker_level() if self.speaker_level else 0)
            if ev:
                self.event = ev
                self.event_block = self.blocks
        self.blocks += 1

    def take_vad_event(self):
        """The last VAD event (vad.ONSET > 0, vad.END < 0) since the previous call, or 0."""
        ev = self.event
        self.event = 0
        return ev
