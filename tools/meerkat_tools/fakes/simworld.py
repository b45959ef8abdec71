# simworld: the acoustic world behind the fake machine.I2S (and the fake network.WLAN).
#
#   mic = mic_wav (from the moment the microphone starts)
#       + the speaker's output, attenuated by echo_db and delayed by echo_delay_ms (optional)
#       + inject_wav, starting inject_at_ms after the speaker first played audio (optional)
# at 24 kHz mono 16-bit, paced by the wall clock. WAVs are streamed from disk in small blocks;
# what the speaker plays (silence included) goes to the `record` WAV file, never into memory.
#
# Runs on CPython and on the MicroPython unix port, in the same heap as the firmware under test,
# so it stays small: its buffers are the speaker's DMA queue (ibuf bytes, which on a board is
# not Python heap), an echo delay line of 2048 samples when echo is on, and two 512-byte blocks.
# There is no background thread: time advances for the fakes whenever any fake I2S method or
# service() is called (the capture's polling does that continuously).
#
# Configure with configure(**settings) (tests), or on the unix port / simulator through the
# MEERKAT_SIM environment variable: inline JSON ("{...}") or the path of a JSON file.
import time

from meerkat_rt import fast
from meerkat_rt.wavfile import header, open_wav

DEFAULTS = {
    "mic_wav": None,  # the user's speech; silence when None (and after the file ends)
    "mic_db": 0,
    "echo_db": None,  # e.g. -20: speaker-to-mic coupling; None: no echo
    "echo_delay_ms": 20,
    "inject_wav": None,  # a second talker (barge-in), relative to the speaker's first audio
    "inject_at_ms": 1000,
    "inject_db": 0,
    "record": None,  # path: the speaker output as a WAV file (0 ms = speaker creation)
    "raw_shift": 16,  # 32-bit microphone words are sample << raw_shift (INMP441-like at 16)
    "wifi_ssid": None,  # the only SSID the fake WLAN finds; None: any
    "wifi_key": None,  # None: any key
    "wifi_connect_ms": 200,
}

try:
    from time import ticks_diff, ticks_us  # type: ignore

    _last = ticks_us()
    _acc = 0

    def now_us():
        global _last, _acc
        t = ticks_us()
        _acc += ticks_diff(t, _last)  # accumulated: ticks_us wraps every 18 minutes
        _last = t
        return _acc

    def sleep_us(us):
        time.sleep_us(us)  # type: ignore

except ImportError:

    def now_us():
        return int(time.monotonic() * 1000000)

    def sleep_us(us):
        time.sleep(us / 1000000)


def _q8(db):
    return int(256 * 10 ** (db / 20) + 0.5)


class Wav:
    """A 24 kHz mono 16-bit WAV, mixed in by sample index, read in 512-byte blocks."""

    def __init__(self, path, db):
        self.f, rate, ch, bits, nbytes = open_wav(path)
        if (rate, ch, bits) != (24000, 1, 16):
            raise ValueError("%s: the simulator needs 24 kHz mono 16-bit" % path)
        self.base = self.f.tell()
        self.n = nbytes // 2
        self.gain = _q8(db)
        self.blk = bytearray(512)
        self.b0 = self.bn = 0

    def add(self, dst, off, idx, n):
        # dst[off:] += samples idx..idx+n-1 (nothing before 0 or after the end)
        if idx < 0:
            k = min(n, -idx)
            off += 2 * k
            idx += k
            n -= k
        n = min(n, self.n - idx)
        while n > 0:
            if not self.b0 <= idx < self.b0 + self.bn:
                self.f.seek(self.base + 2 * idx)
                self.bn = min(self.f.readinto(self.blk) or 0, 2 * (self.n - idx)) // 2
                self.b0 = idx
            k = min(n, self.b0 + self.bn - idx)
            fast.mix(dst, off, self.blk, 2 * (idx - self.b0), k, self.gain)
            off += 2 * k
            idx += k
            n -= k


class World:
    def __init__(self, cfg):
        self.cfg = cfg
        self.t0 = now_us()
        self.mic = Wav(cfg["mic_wav"], cfg["mic_db"]) if cfg["mic_wav"] else None
        self.inject = Wav(cfg["inject_wav"], cfg["inject_db"]) if cfg["inject_wav"] else None
        self.rx0 = 0  # world sample index of the microphone's first sample
        self.tx = None  # the speaker (a fake I2S in TX mode), once created
        self.spk_start = -1  # world sample index of the speaker's first audio
        self.line = None
        if cfg["echo_db"] is not None:
            self.line = bytearray(4096)  # 2048 samples of speaker output, by world index
            self.echo_gain = _q8(cfg["echo_db"])
            self.echo_delay = cfg["echo_delay_ms"] * 24
        self.lw = 0  # the line holds speaker output up to this world index
        self.rec = None
        if cfg["record"]:
            self.rec = open(cfg["record"], "wb")
            self.rec.write(header(0))
            self.recbuf = bytearray(512)
            self.recn = 0
            self.recbytes = 0

    def now(self):
        """World time as a sample index (24 kHz)."""
        return (now_us() - self.t0) * 3 // 125

    def service(self):
        if self.tx is not None:
            self.tx._advance(self.now())

    def mic_samples(self, dst, off, g, n):
        """dst[off:] = n microphone samples from world index g."""
        fast.scale(dst, off, n, 0)
        if self.mic is not None:
            self.mic.add(dst, off, g - self.rx0, n)
        if self.line is not None:
            # Echo of what the speaker played echo_delay earlier, if still in the line.
            s = g - self.echo_delay
            lo = max(s, self.lw - 2048)
            hi = min(s + n, self.lw)
            while lo < hi:
                i = lo % 2048
                k = min(hi - lo, 2048 - i)
                fast.mix(dst, off + 2 * (lo - s), self.line, 2 * i, k, self.echo_gain)
                lo += k
        if self.inject is not None and self.spk_start >= 0:
            self.inject.add(dst, off, g - self.spk_start - self.cfg["inject_at_ms"] * 24, n)

    def played(self, src, soff, g, n):
        # The speaker outputs n samples from world index g (src None: silence).
        if src is not None and self.spk_start < 0:
            self.spk_start = g
        line = self.line
        rec = self.rec
        done = 0
        while done < n:
            if line is not None:
                i = (g + done) % 2048
                k = min(n - done, 2048 - i)
                if src is None:
                    fast.scale(line, 2 * i, k, 0)
                else:
                    fast.copy(line, 2 * i, src, soff + 2 * done, 2 * k)
            else:
                k = n - done
            if rec is not None:
                k = min(k, 256 - self.recn)
                if src is None:
                    fast.scale(self.recbuf, 2 * self.recn, k, 0)
                else:
                    fast.copy(self.recbuf, 2 * self.recn, src, soff + 2 * done, 2 * k)
                self.recn += k
                if self.recn == 256:
                    rec.write(self.recbuf)
                    self.recbytes += 512
                    self.recn = 0
            done += k
        self.lw = g + n

    def close(self):
        """Finish the recording (a valid WAV file) and close the streams."""
        self.service()  # the speaker's output up to now
        rec = self.rec
        if rec is not None:
            rec.write(self.recbuf[: 2 * self.recn])
            self.recbytes += 2 * self.recn
            rec.seek(0)
            rec.write(header(self.recbytes))
            rec.close()
            self.rec = None
        for w in (self.mic, self.inject):
            if w is not None:
                w.f.close()


world = None


def configure(**settings):
    """Start a new world (the clock restarts) with DEFAULTS overridden by settings."""
    global world
    cfg = dict(DEFAULTS)
    for k in settings:
        if k not in DEFAULTS:
            raise ValueError("simworld: unknown setting %s" % k)
        cfg[k] = settings[k]
    if world is not None:
        world.close()
    world = World(cfg)
    return world


def get():
    """The current world, configured from MEERKAT_SIM on first use."""
    if world is None:
        import json
        import os

        spec = os.getenv("MEERKAT_SIM") or "{}"
        if not spec.startswith("{"):
            with open(spec) as f:
                spec = f.read()
        configure(**json.loads(spec))
    return world


def service():
    """Let the fake hardware catch up with the clock (DMA progress, irq callbacks)."""
    get().service()
