# meerkat_rt.vad: voice activity detection that does not hear the device's own voice.
#
# Fed one block at a time (10 ms), with two levels (mean absolute amplitude): the microphone's,
# and the loudest 10 ms the speaker played in the block's echo window (Capture looks it up in
# Player.level_at() from the block's capture time, echo_ms earlier). Levels are compared in
# log units (1/32 octave, about 0.19 dB; small tables, no floats: a float op allocates on
# MicroPython, and this runs 100 times a second).
#
# Expected level of a block = the noise floor (+) the echo model, added as powers:
#   echo model = coupling + speaker envelope (the window's level, held and decaying 1.5 dB per
#                block: the room rings on after the speaker stops)
#   noise floor = tracked in blocks without speech or echo: down fast, up slowly (so it sits
#                near the room's typical level, babble included)
# Evidence: every block adds (mic - expected - bias), at most +-10 dB, to a sum that never goes
# below 0 (a CUSUM); an onset when the sum reaches 20 dB. A loud start (10 dB over the bias)
# decides in 2 blocks, a quiet opening 3 dB over it in about 7, a click or a single loud block
# never: the decision does not hang on any one block or on when the pump reads it. End after
# hangover_ms without a block over the bias.
#
# The coupling (speaker to microphone, the board's acoustics) starts at the board's
# echo_coupling_db and is learnt from blocks that can only be echo:
#   - the speaker is playing in the block's window and the microphone is well above the floor;
#   - no evidence of anything else: the sum is 0 and nobody is speaking;
#   - the observation (mic above the floor, over the speaker envelope) waits for 12 more
#     observations before it counts, and is thrown away if evidence appears in the meantime:
#     the quiet opening of a user's utterance comes before its onset, never after;
#   - the estimate is the upper envelope of what was counted (+2 dB): up at once, but by at
#     most 0.1 dB per observation, and down about 2.4 dB per second of echo. It takes over from
#     the board's value gradually (1 dB per observation) and is kept across replies.
# So the estimate cannot climb on the user's voice before the loud part of the utterance
# arrives (the failure of the earlier design, which learnt from any block under the threshold).
#
# audio.vad_sensitivity (1..10) sets the bias: 10.5 dB at 1 (only speech clearly over the
# echo and the noise), 6.5 dB at 5, 2 dB at 10 (soft speech; more false barge-ins on babble
# and on a mis-estimated echo), and the absolute minimum level ((11 - s) * 24 mean-abs).
from array import array

from .compat import const

ONSET = const(1)
END = const(-1)

_NONE = const(-4096)  # "no echo" in log units
_CAP = const(53)  # per-block evidence limit: 10 dB
_NEED = const(106)  # evidence for an onset: 20 dB (two blocks at the limit)
_DECAY = const(8)  # the room's ringing: -1.5 dB per block (a reverberation time of 0.4 s)
_DRR = const(32)  # ... and it starts 6 dB below the direct echo
_HOLD = const(12)  # observations waiting before they count (the veto window)
_FREE = const(24)  # observations whose maximum is taken as it is (then the rise is limited)
_STEP = const(5)  # the board's coupling gives way to the learnt one by 1 dB per observation
_MARGIN = const(11)  # learnt coupling = upper envelope + 2 dB
_RISE = const(8)  # the envelope rises at most 0.1 dB per observation (Q4): 10 dB per second of echo
_FALL = const(2)  # ... and falls 0.024 dB per observation (Q4): ~1.5 dB per second of echo
_MIN_SPEAKER_LOG = const(160)  # log2_q5(32): speaker level below which nothing is learnt
_LAGS = const(12)  # echo delays considered: 0..110 ms behind the speaker's output (blocks)
_DEV0 = const(24 * 16)  # a lag's deviation before it has settled: 4.5 dB

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
        # Capture gives the speaker's level over the block's own capture time (ms before its
        # end: echo_lo_ms..echo_hi_ms + block_ms); the echo's delay behind it is learnt here.
        self.echo_lo_ms = self.echo_hi_ms = 0
        self._spk = array("h", bytes(2 * _LAGS))  # speaker level per block, last _LAGS blocks
        self._si = 0
        self._lmean = array("h", bytes(2 * _LAGS))  # per lag: mean of mic - speaker (Q4)
        self._ldev = array("h", [_DEV0] * _LAGS)  # ... and its mean absolute deviation (Q4)
        self._lagn = 0
        self.lag = max(0, min(_LAGS - 2, echo_ms // block_ms))  # blocks; see _lags()
        self._wide = True  # until the first choice, the window spans lags 0..lag+1
        self.need = _NEED * max(1, onset_ms // block_ms) // 2
        self.bias = _lu(11.5 - sensitivity if sensitivity < 10 else 2)
        self.min_level = (11 - sensitivity) * 24  # 5: 144 (about -47 dBFS mean-abs)
        self._min = log2_q5(self.min_level)
        self.board_coupling = _lu(coupling_db)
        self.coupling = self.board_coupling  # log units (16/3 per dB); see coupling_db()
        self._peak = 0  # upper envelope of counted observations, Q4 log units
        self.learnt = 0  # observations counted
        self._held = bytearray(2 * _HOLD)  # observations waiting (int16, little-endian)
        self._nheld = 0
        self._ih = 0
        self.floor = -1  # noise floor, Q2 log units; -1: not measured yet
        self.env = _NONE  # speaker envelope, log units
        self._tail = _NONE
        self.speaker = 0  # the speaker level given with the last block
        self.threshold = 0  # the mic level (mean-abs) at which evidence starts to add up
        self.evidence = 0
        self.speaking = False
        self._quiet = 0

    def coupling_db(self):
        """The coupling in use, in dB (for logs and tests)."""
        return self.coupling * 1000 // 5315

    def update(self, mic, speaker):
        """One block: returns ONSET, END or 0."""
        self.speaker = speaker
        m = log2_q5(mic)
        # The speaker's history by block, and the echo reference: the loudest of the blocks
        # around the echo's delay, held with a decay for the room's ringing.
        S = self._spk
        i = self._si = (self._si + 1) % _LAGS
        S[i] = log2_q5(speaker)
        lag = self.lag
        lo = 0 if self._wide or not lag else lag - 1
        ref = 0
        while lo <= lag + 1:
            v = S[(i - lo) % _LAGS]
            if v > ref:
                ref = v
            lo += 1
        # The room's ringing: starts _DRR below the direct echo and decays _DECAY per block.
        tail = self._tail - _DECAY
        if ref - _DRR > tail:
            tail = ref - _DRR
        self._tail = tail
        env = ref if ref > tail else tail
        if env < 64:  # below a level of 4: silence
            env = _NONE
        self.env = env
        if self.floor < 0:  # first block: the room, or already a talker (then assume less)
            self.floor = min(m, log2_q5(2 * self.min_level)) << 2
        floor = self.floor >> 2
        echo = self.coupling + env if env > _NONE else _NONE
        x = _add(floor, echo) if echo > _NONE else floor
        if x < self._min:
            x = self._min
        bias = self.bias
        self.threshold = exp2_q5(x + bias)
        d = m - x - bias
        if d > _CAP:
            d = _CAP
        elif d < -_CAP:
            d = -_CAP
        g = self.evidence + d
        if g < 0:
            g = 0
        self.evidence = g
        # The noise floor (Q2): down fast when the room gets quieter; up slowly, and only
        # where neither speech nor the echo can be what the microphone hears.
        f = self.floor
        if m << 2 < f:
            f -= ((f - (m << 2)) >> 3) + 1
        elif not g and not self.speaking and echo < floor - 16 and m > floor:
            f += ((m << 2) - f >> 6) + 1
        self.floor = f
        # The echo coupling, from blocks that can only be echo (see the top of the file).
        if g or self.speaking:
            self._nheld = 0  # evidence: what was waiting may be the user's opening
        elif ref >= _MIN_SPEAKER_LOG and m > floor + 32:
            e = mic - exp2_q5(floor)
            if e > 0:
                e = log2_q5(e)
                self._hold(e - env)
                self._lags(e, i)
        if self.speaking:
            if d > -bias // 2:
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
            return ONSET
        return 0

    def _lags(self, e, i):
        # Which delay explains the echo best: per lag, how much mic - speaker varies (the
        # right lag follows the speaker's syllables; a wrong one sees them come and go).
        S = self._spk
        mean = self._lmean
        dev = self._ldev
        for L in range(_LAGS):
            s = S[(i - L) % _LAGS]
            if s < _MIN_SPEAKER_LOG:
                continue
            v = (e - s) << 4
            if dev[L] == _DEV0:  # first sight of this lag
                mean[L] = v
                dev[L] = _DEV0 - 1
                continue
            d = v - mean[L]
            mean[L] += d >> 4
            dev[L] += ((d if d > 0 else -d) - dev[L]) >> 4
        n = self._lagn + 1
        if n >= 48:
            n = 16
            best = cur = self.lag
            for L in range(_LAGS - 1):
                if dev[L] < dev[best]:
                    best = L
            if self._wide or dev[best] < dev[cur] - (dev[cur] >> 3):
                self.lag = best
                self._wide = False
        self._lagn = n

    def _hold(self, r):
        # Queue an observation; count the one that has waited _HOLD observations.
        h = self._held
        i = self._ih
        if self._nheld == _HOLD:
            old = h[2 * i] | (h[2 * i + 1] << 8)
            self._count(old - 65536 if old & 0x8000 else old)
        else:
            self._nheld += 1
        r &= 0xFFFF
        h[2 * i] = r & 0xFF
        h[2 * i + 1] = r >> 8
        self._ih = (i + 1) % _HOLD

    def _count(self, r):
        r <<= 4
        p = self._peak
        if not self.learnt or r > p and self.learnt < _FREE:
            p = r  # the first observations: their plain maximum
        elif r > p + _RISE:
            p += _RISE
        elif r > p:
            p = r
        else:
            p -= _FALL
        self._peak = p
        n = self.learnt + 1
        c = (p >> 4) + _MARGIN
        # From the board's value down to what was learnt, 1 dB per observation: the first few
        # blocks of a reply see the echo arrive late behind its own envelope and read low.
        b = self.board_coupling - _STEP * n
        self.coupling = c if c > b else b
        self.learnt = n if n < 1 << 20 else 1 << 20  # stays a small int
