# simworld: the acoustic world behind the fake machine.I2S (and the fake network.WLAN).
#
#   mic = mic_wav (from the moment the microphone starts)
#       + the speaker's output, attenuated by echo_db and delayed by echo_delay_ms (optional),
#         plus later, weaker copies of it (echo_tail: a room's reflections)
#       + inject_wav, starting inject_at_ms after the speaker first played audio (optional)
#       + noise_wav, looped from noise_offset_ms, at noise_db (optional: a fan, a cafe)
# at 24 kHz mono 16-bit, paced by the wall clock, or by a virtual clock that only moves when
# told (clock "virtual": advance_ms(); the barge-in sweep runs the audio path faster than real
# time that way, with the same fakes). WAVs are streamed from disk in small blocks; what the
# speaker plays (silence included) goes to the `record` WAV file, never into memory.
#
# Runs on CPython and on the MicroPython unix port, in the same heap as the firmware under test,
# so it stays small: its buffers are the speaker's DMA queue (ibuf bytes, which on a board is
# not Python heap), an echo delay line of 2048 samples when echo is on (more for long delays),
# and a few 512-byte blocks.
# There is no background thread: time advances for the fakes whenever any fake I2S method or
# service() is called (the capture's polling does that continuously).
#
# Configure with configure(**settings) (tests), or on the unix port / simulator through the
# MEERKAT_SIM environment variable: inline JSON ("{...}") or the path of a JSON file.
import time

from meerkat_rt import fast
from wavfile import header, open_wav

DEFAULTS = {
    "mic_wav": None,  # the user's speech; silence when None (and after the file ends)
    "mic_db": 0,
    "echo_db": None,  # e.g. -20: speaker-to-mic coupling; None: no echo
    "echo_delay_ms": 20,
    "echo_tail": None,  # e.g. [[15, -6], [40, -12]]: more echoes, ms after echo_delay_ms, dB vs echo_db
    "inject_wav": None,  # a second talker (barge-in), relative to the speaker's first audio
    "inject_at_ms": 1000,
    "inject_db": 0,
    "noise_wav": None,  # background noise, looped; None: a silent room
    "noise_db": 0,
    "noise_offset_ms": 0,  # where in the noise file the microphone's first sample falls
    "mic_dma_frames": 0,  # >0: microphone samples become readable in whole DMA buffers of this
    #                       many frames (the ESP32 port's are 256), as on a board; 0: at once
    "clock": "wall",  # "wall", or "virtual": time moves only by advance_ms() (and fake sleeps)
    "track_sound": False,  # keep last_sound: the world index just after the speaker's last
    #                        non-zero sample (onset-to-silence in the barge-in sweep)
    "record": None,  # path: the speaker output as a WAV file (0 ms = speaker creation)
    "raw_shift": 16,  # 32-bit microphone words are sample << raw_shift (INMP441-like at 16)
    "wifi_ssid": None,  # the only SSID the fake WLAN finds; None: any
    "wifi_key": None,  # None: any key
    "wifi_connect_ms": 200,  # one association attempt of the driver
    "wifi_fail": None,  # e.g. [205, 202]: ESP-IDF disconnect reasons that the driver's next
    #                     association attempts end with, in order, whatever the key (a busy or
    #                     flaky AP: 205 CONNECTION_FAIL, 202 AUTH_FAIL, 204 HANDSHAKE_TIMEOUT)
    "rtc": "cold",  # the RTC at world start: "cold" reads 2000-01-01 00:00:00 (a power-up),
    #                 "set" the host's UTC time (a soft reset keeps the RTC running)
    "ntp_hosts": None,  # the NTP servers the fake ntptime reaches; None: any host
    "ntp_fail": 0,  # the first n NTP queries time out (a lost UDP answer)
    "i2s_ram": None,  # bytes of internal RAM for the fake I2S's DMA buffers and irq tasks,
    #                   allocated as the ESP32 port does; None: unlimited
    "i2s_init_fail": 0,  # the next n I2S.init() calls fail with ENOMEM (after their deinit)
    "i2s_irq_lose": None,  # e.g. [3]: ordinals (1-based) of TX irq callbacks that never come
    "idf_heaps": None,  # the fake esp32.idf_heap_info(): [[total, free, largest, min_free,
    #                     caps], ...]; None: a WROOM's after Wi-Fi joined (esp32.py)
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

    def _sleep_us(us):
        time.sleep_us(us)  # type: ignore

except ImportError:

    def now_us():
        return int(time.monotonic() * 1000000)

    def _sleep_us(us):
        time.sleep(us / 1000000)


def sleep_us(us):
    """What a blocking fake I2S call waits: real time, or virtual time that passes at once."""
    if world is not None and world.virtual:
        world.vt += us
    else:
        _sleep_us(us)


def _q8(db):
    return int(256 * 10 ** (db / 20) + 0.5)


class Wav:
    """A 24 kHz mono 16-bit WAV, mixed in by sample index, read in 512-byte blocks; with loop,
    sample i is sample i % n of the file (for background noise)."""

    def __init__(self, path, db, loop=False):
        self.f, rate, ch, bits, nbytes = open_wav(path)
        if (rate, ch, bits) != (24000, 1, 16):
            raise ValueError("%s: the simulator needs 24 kHz mono 16-bit" % path)
        self.base = self.f.tell()
        self.n = nbytes // 2
        self.gain = _q8(db)
        self.blk = bytearray(512)
        self.b0 = self.bn = 0
        self.loop = loop

    def add(self, dst, off, idx, n):
        # dst[off:] += samples idx..idx+n-1 (nothing before 0 or after the end)
        if self.loop:
            while n > 0:
                i = idx % self.n
                k = min(n, self.n - i)
                self._add(dst, off, i, k)
                off += 2 * k
                idx += k
                n -= k
            return
        self._add(dst, off, idx, n)

    def _add(self, dst, off, idx, n):
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
        self.noise = Wav(cfg["noise_wav"], cfg["noise_db"], True) if cfg["noise_wav"] else None
        self.noise_at = cfg["noise_offset_ms"] * 24
        self.virtual = cfg["clock"] == "virtual"
        if cfg["clock"] not in ("wall", "virtual"):
            raise ValueError("simworld: clock must be wall or virtual")
        self.vt = 0  # virtual time, us
        self.dma = cfg["mic_dma_frames"]
        self.track = cfg["track_sound"]
        self.last_sound = -1
        self.rx0 = 0  # world sample index of the microphone's first sample
        self.tx = None  # the speaker (a fake I2S in TX mode), once created
        self.spk_start = -1  # world sample index of the speaker's first audio
        self.line = None
        self.taps = []  # (delay in samples, gain q8)
        if cfg["echo_db"] is not None:
            self.taps.append((cfg["echo_delay_ms"] * 24, _q8(cfg["echo_db"])))
            for extra_ms, db in cfg["echo_tail"] or ():
                self.taps.append(((cfg["echo_delay_ms"] + extra_ms) * 24, _q8(cfg["echo_db"] + db)))
            size = 2048  # samples of speaker output, by world index: the longest delay + a read
            while size < max(d for d, _ in self.taps) + 1024:
                size *= 2
            self.size = size
            self.line = bytearray(2 * size)
        self.lw = 0  # the line holds speaker output up to this world index
        # The ESP32 port's other state (fakes machine.RTC and I2S, network, ntptime):
        self.rtc_base = 0 if cfg["rtc"] == "cold" else int(time.time()) - 946684800  # s since 2000 at t=0
        if cfg["rtc"] not in ("cold", "set"):
            raise ValueError("simworld: rtc must be cold or set")
        self.wifi_fail = list(cfg["wifi_fail"] or ())
        self.ntp_fail = cfg["ntp_fail"]
        self.ntp_queries = 0
        self.i2s_ram = 0  # bytes the fake I2S objects hold
        self.i2s_init_fail = cfg["i2s_init_fail"]
        self.i2s_inits = 0  # init() calls (not the constructors')
        self.i2s_by_id = {}  # the port keeps one I2S object per bus
        self.rec = None
        if cfg["record"]:
            self.rec = open(cfg["record"], "wb")
            self.rec.write(header(0))
            self.recbuf = bytearray(512)
            self.recn = 0
            self.recbytes = 0

    def now(self):
        """World time as a sample index (24 kHz)."""
        if self.virtual:
            return self.vt * 3 // 125
        return (now_us() - self.t0) * 3 // 125

    def rx_ready(self):
        """World index up to which microphone samples can be read now: all of them, or (with
        mic_dma_frames) those in completed DMA buffers."""
        g = self.now()
        if self.dma:
            g -= (g - self.rx0) % self.dma
        return g

    def service(self):
        if self.tx is not None:
            self.tx._advance(self.now())

    def mic_samples(self, dst, off, g, n):
        """dst[off:] = n microphone samples from world index g."""
        fast.scale(dst, off, n, 0)
        if self.mic is not None:
            self.mic.add(dst, off, g - self.rx0, n)
        if self.line is not None:
            # Echoes of what the speaker played that long earlier, if still in the line.
            size = self.size
            for delay, gain in self.taps:
                s = g - delay
                lo = max(s, self.lw - size)
                hi = min(s + n, self.lw)
                while lo < hi:
                    i = lo % size
                    k = min(hi - lo, size - i)
                    fast.mix(dst, off + 2 * (lo - s), self.line, 2 * i, k, gain)
                    lo += k
        if self.inject is not None and self.spk_start >= 0:
            self.inject.add(dst, off, g - self.spk_start - self.cfg["inject_at_ms"] * 24, n)
        if self.noise is not None:
            self.noise.add(dst, off, g - self.rx0 + self.noise_at, n)

    def played(self, src, soff, g, n):
        # The speaker outputs n samples from world index g (src None: silence).
        if src is not None and self.spk_start < 0:
            self.spk_start = g
        if self.track and src is not None and fast.mean_abs(src, soff, n):
            e = n
            while e > 0:  # the last non-zero sample, to 1 ms
                k = min(e, 24)
                if fast.mean_abs(src, soff + 2 * (e - k), k):
                    break
                e -= k
            self.last_sound = g + e
        line = self.line
        rec = self.rec
        done = 0
        while done < n:
            if line is not None:
                i = (g + done) % self.size
                k = min(n - done, self.size - i)
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
        for w in (self.mic, self.inject, self.noise):
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


def advance_ms(ms):
    """Virtual clock only: let ms pass (the fakes catch up on their next call)."""
    w = get()
    if not w.virtual:
        raise ValueError("simworld: advance_ms needs clock virtual")
    w.vt += ms * 1000


def ticks_ms():
    """The world's clock in ms (virtual or wall, from configure()), for Player.clock and the
    capture's poll(now) when the clock is virtual."""
    w = get()
    return w.vt // 1000 if w.virtual else (now_us() - w.t0) // 1000
