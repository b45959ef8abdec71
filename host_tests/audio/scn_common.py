# Shared set-up of the real-time audio scenarios (scn_*.py): one module per scenario, so that
# on the unix port (-X heapsize=110K) each run loads only its own code. Each scenario module
# has `async def run(fixtures_dir, boards_dir, *args) -> dict`:
#
#   micropython run_scenario.py <scn_module> <fixtures dir> <boards dir> [args...]
#
# Each scenario takes as long as its audio (a few seconds), drives the firmware the way the
# channel's pump does (non-blocking polls, sleep_ms(0) when busy, a few ms when idle), and
# returns a dict of measurements; test_audio.py asserts on them. Ground truth comes from the
# fakes: the WAV samples, the fake speaker's count of samples clocked out, fixtures/index.json.
import gc
import json
import sys

FRAME = 1920  # 40 ms
CHUNK = 4800  # 200 ms: the largest downlink chunk


def _board(boards, mic=False, speaker=False, ring=0, player=False):
    # In the order an app must keep at 110K (app.Device does the same): the board first (its
    # checker's garbage and the start-up-only module itself are dropped before anything else
    # lands around them), then the audio modules, then the big buffers. The firmware modules
    # are imported here, not at the top of this file, for that reason.
    from meerkat_rt import board

    b = board.load(boards + "/sim.json")
    gc.collect()
    b["mic_i2s"] = board.make_mic(b) if mic else None
    b["spk_i2s"] = board.make_speaker(b) if speaker else None
    b["spk_init"] = board.speaker_kwargs(b) if speaker else None
    del sys.modules["meerkat_rt.board"]
    import meerkat_rt

    del meerkat_rt.board  # the package keeps its submodules as attributes too
    board = None
    gc.collect()
    from meerkat_rt.ring import FrameRing

    b["ring"] = FrameRing(ring or b["ring_ms"] // 40, FRAME) if ring >= 0 else None
    b["pbuf"] = bytearray(b["playback_ms"] * 48) if player else None
    return b


def _player(b, mode):
    from meerkat_rt.playback import Player

    s = b["speaker"]
    return Player(b["spk_i2s"], b["pbuf"], ibuf=s["ibuf"], mode=mode, block_ms=s["block_ms"], margin_ms=0,
                  reinit=b["spk_init"])


def _capture(b, vad=None, speaker=None):
    # speaker: the Player, whose history by wall time the echo-aware VAD reads (as app.py).
    from meerkat_rt.capture import Capture

    m = b["mic"]
    return Capture(b["mic_i2s"], b["ring"], vad, bits=m["bits"], shift=m["shift"], highpass=m["highpass"],
                   speaker=speaker)


def _identity(r):
    return r.captured == r.sent + r.dropped + r.discarded + r.pending


def _mem():
    gc.collect()
    try:
        return gc.mem_free()  # type: ignore[attr-defined]
    except AttributeError:
        return -1


class Feeder:
    """Streams a WAV to a Player as 200 ms base64 chunks, as fast as space() allows (a server
    sends faster than real time), each chunk fed in 1600-character pieces as a socket would
    deliver it (the downlink decodes while the text streams in)."""

    def __init__(self, player):
        from meerkat_rt import fast
        from wavfile import open_wav

        self.encode = fast.b64_encode
        self.open_wav = open_wav
        self.p = player
        self.f = None
        self.b64 = bytearray(1600)  # 1200 PCM bytes are read into its end, encoded in place
        self.pcm = memoryview(self.b64)[400:]

    def open(self, path):
        self.close()
        self.f, _, _, _, self.left = self.open_wav(path)

    def poll(self, item):
        if not self.left or self.p.space() < CHUNK:
            return 0
        p = self.p
        p.begin_chunk()
        ok = True
        for _ in range(CHUNK // 1200):
            n = min(self.f.readinto(self.pcm) or 0, self.left)
            self.left -= n
            # Encoding forwards from offset 400 into offset 0 never overtakes what it reads.
            k = self.encode(self.b64, 0, self.b64, 400, n)
            ok = ok and p.feed_b64(self.b64, 0, k)
            if n < 1200:
                break
        return p.commit_chunk(item, 0) if ok else -1

    def close(self):
        if self.f is not None:
            self.f.close()
            self.f = None


def main(argv):
    import asyncio

    module = __import__(argv[1])
    print(json.dumps(asyncio.run(module.run(*argv[2:]))))
