# meerkat_rt.vad on synthetic block levels: onset and hangover, the noise floor, echo awareness
# with the adaptive coupling estimate, sensitivity. Deterministic (a fixed LCG for "noise").
from meerkat_rt.vad import END, ONSET, VAD


class _Rand:
    def __init__(self, seed=1):
        self.x = seed

    def __call__(self, n):
        self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
        return (self.x >> 12) % n


def _run(v, levels, speaker=None):
    events = []
    for i in range(len(levels)):
        ev = v.update(levels[i], speaker[i] if speaker else 0)
        if ev:
            events.append((i, ev))
    return events


def test_onset_after_a_run_of_loud_blocks_and_end_after_the_hangover():
    v = VAD(onset_ms=30, hangover_ms=300)
    levels = [3] * 100 + [2000] * 100 + [3] * 100
    assert _run(v, levels) == [(102, ONSET), (229, END)]
    # Two loud blocks are not an onset; a short pause inside speech does not end it.
    v = VAD(onset_ms=30, hangover_ms=300)
    levels = [3] * 50 + [2000] * 2 + [3] * 20 + [2000] * 40 + [3] * 20 + [2000] * 40 + [3] * 40
    assert _run(v, levels) == [(74, ONSET), (201, END)]


def test_noise_floor_tracks_noise_and_speech_still_triggers():
    r = _Rand()
    v = VAD()
    noise = [400 + r(100) for _ in range(300)]  # a steady fan, from the first block on
    assert _run(v, noise) == []
    assert 350 * 16 < v.floor < 500 * 16
    rising = [400 + i * 2 + r(100) for i in range(500)]  # the noise slowly doubles and more
    assert _run(v, rising) == []
    loud = [6000 + r(2000) for _ in range(30)]
    assert _run(v, loud) == [(2, ONSET)]
    # The floor goes down fast when the room gets quiet.
    v2 = VAD()
    _run(v2, [3000] * 5 + [20] * 20)
    assert v2.floor < 40 * 16


def test_own_playback_at_20_db_coupling_does_not_trigger_and_the_user_does():
    r = _Rand(3)
    v = VAD(coupling_db=-6)
    speaker = []
    for i in range(600):  # 6 s of "speech" out of the speaker: syllables and pauses
        speaker.append((5000 + r(3000)) if (i // 15) % 4 != 3 else r(200))
    mic = []
    for i in range(600):  # -20 dB, 30 ms late (DMA + air), plus a little noise
        echo = speaker[i - 3] // 10 if i >= 3 else 0
        mic.append(echo + 10 + r(20))
    assert _run(v, mic, speaker) == []
    assert 300 < v.coupling < 1000, v.coupling  # learnt: about 0.1 in Q12 (409)
    # The user talks over the reply at about the speaker's level: barge-in.
    talk = [mic[i] + 4000 + r(1000) for i in range(100)]
    events = _run(v, talk, speaker[:100])
    assert events and events[0] == (2, ONSET), events


def test_stronger_echo_than_the_initial_estimate_within_the_margin():
    # Coupling -10 dB while the VAD starts from -6 dB: still no self-interruption.
    r = _Rand(5)
    v = VAD(coupling_db=-6)
    speaker = [(3000 + r(4000)) if (i // 20) % 3 else 0 for i in range(400)]
    mic = [(speaker[i - 2] * 10 // 32 if i >= 2 else 0) + r(30) for i in range(400)]
    assert _run(v, mic, speaker) == []


def test_sensitivity_moves_the_threshold():
    quiet_speech = [40] * 100 + [300] * 30
    assert _run(VAD(sensitivity=10), quiet_speech) == [(102, ONSET)]
    assert _run(VAD(sensitivity=1), quiet_speech) == []
    for bad in (0, 11):
        try:
            VAD(sensitivity=bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_state_stays_integer():
    r = _Rand(9)
    v = VAD()
    for i in range(500):
        v.update(r(8000), r(8000) if i % 2 else 0)
    for name in ("floor", "speaker", "coupling", "threshold"):
        assert type(getattr(v, name)) is int, name
