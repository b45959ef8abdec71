# meerkat_rt.vad: energy voice activity detection that does not hear the device's own voice.
#
# Fed one short block at a time (10 ms by default, independent of the frame length, so onset
# latency is a few blocks), with two levels: the microphone's mean absolute amplitude and the
# speaker's (what is coming out of it right now, from Player.level_now()). A block is loud when
# the mic level exceeds
#     max(floor * snr + min_level,  floor + coupling * speaker_envelope * echo_margin)
# - floor: the tracked noise floor, starting at the first block's level (capped at twice
#   min_level, in case someone is already talking), fast down, slow up (slower still during
#   speech, frozen while the speaker plays: the echo is not "noise");
# - speaker_envelope: peak-held speaker level with a slow decay, because the echo arrives late
#   (DMA queues, the air, the room) and rings on after the speaker stops;
# - coupling: mic level / speaker level, learnt from blocks where the speaker plays and nobody
#   speaks: it follows that ratio up quickly and down slowly (an upper envelope), and only from
#   blocks within the current threshold, so a user talking over the reply never teaches it.
#   It starts from the board's coupling_db (conservative: too high costs sensitivity until it
#   has adapted, too low makes the device interrupt itself) and is kept across turns. Only
#   blocks where the speaker is playing right now teach it.
# Onset after onset_ms of consecutive loud blocks; end after hangover_ms without one.
# Integer arithmetic only: a float op allocates on MicroPython, and this runs 100 times a second.
from .compat import const

ONSET = const(1)
END = const(-1)

_MIN_SPEAKER = const(32)  # speaker level below which the coupling is not learnt (silence)
_MAX_COUPLING = const(16384)  # +12 dB in Q12; keeps products under 2**30 (ESP32 small ints)


def _q(db, one):
    return int(one * 10 ** (db / 20) + 0.5)


class VAD:
    def __init__(self, sensitivity=5, block_ms=10, onset_ms=30, hangover_ms=500, coupling_db=-6):
        if not 1 <= sensitivity <= 10:
            raise ValueError("vad: sensitivity must be 1..10")
        self.block_ms = block_ms
        self.onset_blocks = max(1, onset_ms // block_ms)
        self.hangover_blocks = max(1, hangover_ms // block_ms)
        self.snr_q4 = _q(15 - sensitivity, 16)  # 5: 10 dB over the floor; 10: 5 dB; 1: 14 dB
        self.min_level = (11 - sensitivity) * 24  # 5: 144 (about -47 dBFS mean-abs)
        self.echo_q4 = _q(6, 16)  # 6 dB over the expected echo
        self.coupling = min(_MAX_COUPLING, _q(coupling_db, 4096))  # Q12
        self.floor = -1  # Q4; -1: not measured yet (set from the first block)
        self.speaker = 0  # peak-held speaker level
        self.threshold = 0
        self.speaking = False
        self._run = 0
        self._quiet = 0

    def update(self, mic, speaker):
        """One block: returns ONSET, END or 0."""
        s = self.speaker - (self.speaker >> 4)  # -6 dB in about 110 ms
        if speaker > s:
            s = speaker
        self.speaker = s
        if self.floor < 0:  # first block: the room, or already a talker (then assume less)
            self.floor = min(mic, 2 * self.min_level) << 4
        floor = self.floor >> 4
        t = (floor * self.snr_q4 >> 4) + self.min_level
        e = floor + ((self.coupling * s >> 12) * self.echo_q4 >> 4)
        if e > t:
            t = e
        self.threshold = t
        loud = mic > t
        # Noise floor (Q4 so that slow rises still move at low levels).
        m = mic << 4
        f = self.floor
        if m < f:
            f -= (f - m) >> 2
        elif s < _MIN_SPEAKER:
            f += ((m - f) >> (10 if self.speaking else 6)) + 1
        self.floor = f
        # Echo coupling, from blocks that look like echo only: the speaker must be playing now
        # (not just its decaying envelope: after a stop or in a pause nothing comes back, and
        # learning from that silence would talk the coupling down until the device's own
        # voice trips it).
        if speaker >= _MIN_SPEAKER and not loud and not self.speaking and not self._run:
            r = (mic - floor) * 4096 // s if mic > floor else 0
            c = self.coupling
            if r > c:
                c += (r - c) >> 2
            else:
                # Down at half the old rate (about 1.3 s): blocks where the echo lags the
                # peak-held envelope read low, and a fast decay made the estimate drift below
                # the true coupling until the reply's own onset tripped the detector.
                d = (c - r) >> 7
                c -= d if d else 1
            self.coupling = min(_MAX_COUPLING, max(4, c))
        if loud:
            self._quiet = 0
            if not self.speaking:
                self._run += 1
                if self._run >= self.onset_blocks:
                    self.speaking = True
                    self._run = 0
                    return ONSET
            return 0
        self._run = 0
        if self.speaking:
            self._quiet += 1
            if self._quiet >= self.hangover_blocks:
                self.speaking = False
                self._quiet = 0
                return END
        return 0
