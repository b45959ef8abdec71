# meerkat_rt.vad: voice activity detection that does not hear the device's own voice.
#
# Fed one block at a time (10 ms) with two mean absolute levels: the microphone's, and what
# the speaker played while that block was captured (Capture stamps each block with its capture
# time and asks Player.level() for that span, so a late pump or a DMA burst changes nothing).
# Levels are compared in log units (1/32 octave, 0.19 dB): small tables, integers only (a float
# op allocates on MicroPython, and this runs 100 times a second; every value stays far below
# the ESP32's 2**30 small-int limit).
#
# Expected level of a block, the two added as powers:
#   the room: the 80th percentile of blocks without speech or echo, never below the noise
#     floor (the quietest 10 ms of the last 0.6-1.3 s, + 3 dB), + the noise margin;
#   the echo: coupling + the speaker's level at the echo's delay (the loudest of the blocks one
#     either side of it, and back to the default delay's block when the learnt delay is longer),
#     or the room's ringing after it (6 dB below, -1.5 dB per block),
#     + the echo margin.
# Evidence: each block adds (mic - expected), within +-1.5 dB, to a sum that never drops below
# 0 (a CUSUM); onset at 3 dB (onset_ms 20): two blocks 1.5 dB over, three 1 dB over, a quiet
# opening 0.5 dB over in six, and a dip in between only sets it back. One loud block (a click)
# never; no decision hangs on one block.
# END after hangover_ms of blocks more than 3 dB under. When the speaker starts after silence,
# speech in progress is forgotten (the user's own turn is not a barge-in; new speech is).
#
# The echo path is learnt from blocks that can only be echo: the speaker is playing at the
# delay, nobody is speaking, the mic is 6 dB over the floor. Per block the observation is
# (mic less the room) over the speaker at the delay, and:
#   - it waits 16 more observations before it counts, and is thrown away if an onset comes
#     first: the quiet opening of an utterance precedes its onset, it never teaches the echo;
#   - the coupling is the maximum of the first 16 counted (plus a margin that shrinks as they
#     come), then a tracker of the 94th percentile that rises at most 0.09 dB per observation:
#     so a user the veto missed moves it slowly. It starts at the board's echo_coupling_db and
#     leaves it by at most 1 dB per observation (a board value that errs high costs only
#     sensitivity in the first reply's first moments; one too low, self-interruptions there);
#   - the delay (0..110 ms, lags of one block) is the shortest lag where mic - speaker varies
#     least (within 12 % of the best); until it is known, the reference spans lags 0..7.
# The estimate is kept across replies (the board does not move).
#
# audio.vad_sensitivity (1..10) sets the two margins (echo 4.5 dB .. 0.6 dB, room 10 dB ..
# 3.5 dB, 2 and 6 dB at the default 5) and the absolute minimum level ((11 - s) * 24
# mean-abs): higher catches softer speech sooner and barges in on babble and on echo the
# model reads low more often; meerkat-sweep's sensitivity slices show by how much.
from array import array

from .compat import const

ONSET = const(1)
END = const(-1)

# dB/10 over the echo model, sensitivity 1..10. 2 dB at 5: at 1.5 a -6 dB echo in a room
# (about -2 dB with its reflections) interrupted itself in the sweep; 2 costs 0-4 ms elsewhere.
_ECHO_MARGIN = (45, 40, 35, 25, 20, 16, 13, 10, 8, 6)
_NOISE_MARGIN = (100, 90, 80, 70, 60, 55, 50, 45, 40, 35)  # dB/10 over the room's typical level
_NONE = const(-4096)  # "no echo" in log units
_CAP = const(8)  # per-block evidence limit: 1.5 dB
_NEED = const(16)  # evidence for an onset (onset_ms 20): 3 dB, two blocks at the limit
_DECAY = const(8)  # the room's ringing: -1.5 dB per block (a reverberation time of 0.4 s)
_DRR = const(32)  # ... and it starts 6 dB below the direct echo
_HOLD = const(16)  # observations waiting before they count (the veto window)
_FREE = const(16)  # observations whose maximum is taken as it is (then the rise is limited)
_STEP = const(5)  # the board's coupling gives way to the learnt one by 1 dB per observation
_MARGIN = const(5)  # learnt coupling = the tracked percentile + 1 dB
_UP = const(128)  # the coupling's percentile tracker (Q8 log units): up 0.09 dB a step
_DOWN = const(8)  # ... down 0.006 dB: it settles where 6 % of observations are above it
_WIN = const(64)  # blocks per noise-floor window
_MIN_SPEAKER_LOG = const(160)  # log2_q5(32): speaker level below which nothing is learnt
_MIN_MIC_LOG = const(147)  # log2_q5(24): a mic level too close to the LSB to measure a ratio
_LAGS = const(12)  # echo delays considered: 0..110 ms behind the speaker's output (blocks)
_WIDE = const(7)  # until the delay is known, the echo may come from any of lags 0..7
_DEV0 = const(24 * 16)  # a lag's deviation before it has settled: 4.5 dB
_RAISE = const(32)  # relearn(): each start 6 dB above the last
_MAX_ORIGIN = const(106)  # ... up to +20 dB (the highest board echo_coupling_db)

# 32 * log2(1 + i/32): the mantissa of the log; 64 * 2**(i/32): the mantissa of the antilog;
# 16 * log2(1 + 2**(-d/16)) for d = 0, 4, 8, ...: adding two levels as powers.
_LOG = b"\x00\x01\x03\x04\x05\x07\x08\x09\x0a\x0b\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x16\x17\x18\x19\x1a\x1b\x1b\x1c\x1d\x1e\x1f\x1f"
_EXP = b"\x40\x41\x43\x44\x46\x47\x49\x4a\x4c\x4e\x50\x51\x53\x55\x57\x59\x5b\x5d\x5f\x61\x63\x65\x68\x6a\x6c\x6f\x71\x74\x76\x79\x7c\x7e"
_ADD = b"\x10\x0e\x0c\x0b\x09\x08\x07\x06\x05\x04\x04\x03\x03\x02\x02\x02\x01\x01\x01\x01\x01\x01\x01"


def log2_q5(x):
    """32 * log2(x) for a level x >= 1 (0 below): 0..479 for 16-bit levels."""
    if x < 2:
        return 0
    e = 5
    if x >= 2048:
        x >>= 6
        e = 11
    while x >= 64:
        x >>= 1
        e += 1
    while x < 32:
        x <<= 1
        e -= 1
    return (e << 5) + _LOG[x - 32]


def exp2_q5(v):
    """The level whose log2_q5 is v (v >= 0)."""
    if v <= 0:
        return 1
    e = v >> 5
    m = _EXP[v & 31]
    return (m << e) >> 6 if e < 6 else m << (e - 6)


def _add(a, b):
    # Two levels in log units added as powers (uncorrelated sources: noise and echo).
    d = a - b
    if d < 0:
        a = b
        d = -d
    d >>= 2
    return a + (_ADD[d] if d < len(_ADD) else 0)


def _lu(db):
    return int(db * 5.3151 + (0.5 if db >= 0 else -0.5))  # dB to log units (set-up only)


class VAD:
    def __init__(self, sensitivity=5, block_ms=10, onset_ms=20, hangover_ms=500, coupling_db=-6, echo_ms=20):
        if not 1 <= sensitivity <= 10:
            raise ValueError("vad: sensitivity must be 1..10")
        self.sensitivity = sensitivity
        self.block_ms = block_ms
        self.hangover_blocks = max(1, hangover_ms // block_ms)
        # echo_ms: where the echo is expected before its delay is learnt (the DAC may be a DMA
        # descriptor behind the player's model, plus the air).
        self._spk = array("h", bytes(2 * _LAGS))  # speaker level per block, last _LAGS blocks
        self._si = 0
        self._lmean = array("h", bytes(2 * _LAGS))  # per lag: mean of mic - speaker (Q4)
        self._ldev = array("h", [_DEV0] * _LAGS)  # ... and its mean absolute deviation (Q4)
        self._lseen = bytearray(_LAGS)  # ... and how often it was seen (up to 255)
        self._lagn = self._lagc = 0
        self.lag = self._lag0 = max(0, min(_LAGS - 2, echo_ms // block_ms))  # blocks; _lags()
        self.lag_known = False
        self.need = _NEED * max(1, onset_ms // block_ms) // 2
        # Margins over the echo model and over the room's level, tenths of a dB, by
        # sensitivity (the trade-off the sweep shows: softer speech caught at 10, fewer false
        # barge-ins on babble and on an echo the model reads low at 1).
        self.echo_margin = _lu(_ECHO_MARGIN[sensitivity - 1] / 10)
        self.noise_margin = _lu(_NOISE_MARGIN[sensitivity - 1] / 10)
        self.min_level = (11 - sensitivity) * 24  # 5: 144 (about -47 dBFS mean-abs)
        self._min = log2_q5(self.min_level)
        self.board_coupling = _lu(coupling_db)
        self.coupling = self.board_coupling  # log units (16/3 per dB); see coupling_db()
        self._origin = self.board_coupling  # where the learnt coupling starts (relearn())
        self._peak = 0  # tracked percentile of counted observations, Q8 log units
        self.learnt = 0  # observations counted
        self._held = array("h", bytes(2 * _HOLD))  # observations waiting to count
        self._nheld = 0
        self._ih = 0
        self.floor = -1  # noise floor, Q2 log units; -1: not measured yet
        self._wmin = self._pmin = 1 << 12  # quietest block of this window and the last
        self._noise = 0  # the room's typical level (Q2 log units)
        self._wn = 0
        self.env = _NONE  # speaker envelope, log units
        self._tail = _NONE
        self.speaker = 0  # the speaker level given with the last block
        self.threshold = 0  # the mic level (mean-abs) at which evidence starts to add up
        self.evidence = 0
        self.speaking = False
        self._quiet = 0

    def relearn(self):
        """Forget the learnt echo coupling and learn it again from the next reply, starting
        6 dB above where the last start was (the board's value the first time), up to +20 dB.
        For a device that keeps interrupting itself: the learner only moves down fast, so a
        board value that errs low (an echo louder than the board file says) is not undone by
        learning (the blocks that would show the louder echo end in an onset and are thrown
        away as a possible user), only by a start that errs high."""
        o = self._origin + _RAISE
        self._origin = o if o < _MAX_ORIGIN else _MAX_ORIGIN
        self.coupling = self._origin
        self._peak = 0
        self.learnt = 0
        self._nheld = 0
        self._ih = 0

    def coupling_db(self):
        """The coupling in use, in dB (for logs, status and tests; not for the hot path)."""
        return round(self.coupling / 5.3151, 1)

    def update(self, mic, speaker):
        """One block: returns ONSET, END or 0."""
        self.speaker = speaker
        m = log2_q5(mic)
        # The speaker's history by block, and the echo reference: the loudest of the blocks
        # around the echo's delay, and the room's ringing after it.
        S = self._spk
        i = self._si = (self._si + 1) % _LAGS
        S[i] = log2_q5(speaker)
        lag = self.lag
        lo = lag - 1 if lag else 0
        if lo > self._lag0:  # a learnt delay beyond the default: the default's echo still counts
            lo = self._lag0
        hi = lag + 1 if lag >= self._lag0 else self._lag0 + 1  # never shorter than the default
        if not self.lag_known:  # until the delay has been seen, any of 0.._WIDE blocks
            lo = 0
            hi = _WIDE
        ref = 0
        while lo <= hi:
            v = S[(i - lo) % _LAGS]
            if v > ref:
                ref = v
            lo += 1
        tail = self._tail - _DECAY  # starts _DRR below the direct echo, decays _DECAY a block
        if ref - _DRR > tail:
            tail = ref - _DRR
        self._tail = tail
        env = ref if ref > tail else tail
        if env < 64:  # below a level of 4: silence
            env = _NONE
        elif self.env == _NONE and self.speaking:
            # The speaker starts: speech that began before it (the user's turn, or the room
            # holding the detector in speech) is not a barge-in; speech from now on is.
            self.speaking = False
            self.evidence = 0
        self.env = env
        floor = self._floor(m)
        # The room's typical level: the 80th percentile of blocks without speech or echo
        # (babble has peaks well above its minimum), never below the floor.
        q = self._noise
        if not self.evidence and not self.speaking and (env == _NONE or self.coupling + env < floor - 16):
            q += 4 if m << 2 > q else -1
        if q < floor << 2:
            q = floor << 2
        self._noise = q
        # Expected: the room's level plus its margin (+) the echo model plus its margin.
        x = (q >> 2) + self.noise_margin
        if env > _NONE:
            x = _add(x, self.coupling + env + self.echo_margin)
        if x < self._min:
            x = self._min
        self.threshold = exp2_q5(x)
        over = m - x
        d = _CAP if over > _CAP else -_CAP if over < -_CAP else over
        g = self.evidence + d
        if g < 0:
            g = 0
        self.evidence = g
        # The echo coupling and delay, from blocks that can only be echo (see the top).
        if not self.speaking and ref >= _MIN_SPEAKER_LOG and m > floor + 32 and m >= _MIN_MIC_LOG:
            e = log2_q5(mic - exp2_q5(floor))  # the echo: the mic less the room
            self._hold(e - env)
            if not g:
                self._lagc += 1
                if not self._lagc & 3:  # every fourth: slow statistics, a quarter of the CPU
                    self._lags(e, i)
        if self.speaking:
            if over > -16:  # within 3 dB of the threshold: still speech
                self._quiet = 0
            else:
                self._quiet += 1
                if self._quiet >= self.hangover_blocks:
                    self.speaking = False
                    self._quiet = 0
                    self.evidence = 0
                    return END
            self.evidence = 0
            return 0
        if g >= self.need:
            self.speaking = True
            self._quiet = 0
            self.evidence = 0
            self._nheld = 0  # what led up to the onset may be the user's opening: not echo
            return ONSET
        return 0

    def _floor(self, m):
        # The noise floor: the quietest block of the last one to two windows of _WIN blocks,
        # + 3 dB (a 10 ms level of steady noise sits about that far above its minimum); down
        # at once, up by a sixteenth of the way per block. Speech and echo pause often enough
        # for their gaps to show the room; a steady tone becomes the floor (and only a louder
        # sound over it counts).
        if m < self._wmin:
            self._wmin = m
        self._wn += 1
        if self._wn >= _WIN:
            self._pmin = self._wmin
            self._wmin = 1 << 12
            self._wn = 0
        t = (self._wmin if self._wmin < self._pmin else self._pmin) + 16
        if self.floor < 0:  # the first block: the room (up to 4 x min_level: a fan), or
            t = self._min + 64  # already a talker (then assume less)
            if m < t:
                t = m
            self.floor = self._noise = t << 2
        f = self.floor
        if t << 2 < f:
            f = t << 2
        else:
            f += ((t << 2) - f >> 4) + 1
        self.floor = f
        return f >> 2

    def _lags(self, e, i):
        # Which delay explains the echo best: per lag, how much mic - speaker varies (the
        # right lag follows the speaker's syllables; a wrong one sees them come and go).
        S = self._spk
        mean = self._lmean
        dev = self._ldev
        seen = self._lseen
        for L in range(_LAGS):
            s = S[(i - L) % _LAGS]
            if s < _MIN_SPEAKER_LOG:
                continue
            v = (e - s) << 4
            k = seen[L]
            if not k:
                mean[L] = v
            d = v - mean[L]
            mean[L] += d >> 4
            dev[L] += ((d if d > 0 else -d) - dev[L]) >> 4
            if k < 255:
                seen[L] = k + 1
        n = self._lagn + 1
        if n >= 8:
            # The shortest lag within 12 % of the best (a lag chosen too long would miss the
            # echo of every phrase's start, a too short one only overestimates there), once
            # every lag has been seen 16 times (12 for a change).
            n = 4
            k = 12 if self.lag_known else 16
            top = 1 << 14
            for L in range(_LAGS - 1):
                if seen[L] >= k and dev[L] < top:
                    top = dev[L]
            if top < 1 << 14:
                top += top >> 3
                for L in range(_LAGS - 1):
                    if seen[L] >= k and dev[L] <= top:
                        self.lag = L
                        self.lag_known = True
                        break
        self._lagn = n

    def _hold(self, r):
        # Queue an observation; count the one that has waited _HOLD observations.
        h = self._held
        i = self._ih
        if self._nheld == _HOLD:
            self._count(h[i])
        else:
            self._nheld += 1
        h[i] = r
        self._ih = (i + 1) % _HOLD

    def _count(self, r):
        # The coupling: the maximum of the first _FREE observations, then a tracker of their
        # 94th percentile (up 0.09 dB when an observation is above it, down 0.006 dB when
        # below); it leaves the board's value by at most 1 dB per observation.
        r <<= 8
        p = self._peak
        n = self.learnt
        if not n or r > p and n < _FREE:
            p = r
        elif r > p:
            p += _UP
        else:
            p -= _DOWN
        self._peak = p
        n += 1
        c = (p >> 8) + _MARGIN
        if n < _FREE:
            c += (_FREE - n) << 1  # the maximum of a few observations reads low: more margin
        b = self._origin - _STEP * n
        self.coupling = c if c > b else b
        self.learnt = n if n < 1 << 20 else 1 << 20  # stays a small int
