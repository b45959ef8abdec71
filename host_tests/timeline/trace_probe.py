# Runs on the MicroPython unix port and CPython (host_tests/timeline/test_trace.py): the
# firmware's Tracer over stand-ins for the player, capture and ring; prints the lines it wrote
# and, on MicroPython, the heap allocated by 200 samples (expected: none).
import gc
import sys

from meerkat_rt import trace
from meerkat_rt.vad import VAD


class Player:
    def __init__(self):
        self.lvl = 0

    def level_now(self):
        return self.lvl


class Ring:
    held = False
    captured = sent = dropped = discarded = 0


class Cap:
    def __init__(self):
        self.level = 0
        self.vad = VAD()


lines = []
used = [0]


def sink(b, n):
    used[0] += n  # counts only: the sink itself allocates nothing


def lines_sink(b, n):
    lines.append(bytes(b[:n]).decode())


player, ring, cap = Player(), Ring(), Cap()
t = trace.Tracer(20, player, cap, ring, sink=lines_sink)
t.begin()
cap.level = 1234
player.lvl = 321
ring.held = True
ring.captured, ring.sent, ring.dropped, ring.discarded = 1000000007, 5, 0, 2
cap.vad.update(1234, 321)
t.sample()
t.event("barge_in", {"reason": "vad", "item_id": "item 1", "audio_played_ms": 2444, "mic_level": 900, "threshold": 500, "speaker_level": 300})
t.event("output_text_delta", {"delta": "not traced"})
t.event("state", "open")
t.event("turn_committed", {})
for line in lines:
    print("LINE " + line.rstrip("\n"))

if sys.implementation.name == "micropython":
    t.sink = sink
    t.sample()
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for i in range(200):
        cap.level = i * 37
        ring.captured = i
        t.sample()
    after = gc.mem_alloc()
    gc.enable()
    print("ALLOC %d" % (after - before))
    print("BYTES %d" % used[0])
    print("SAMPLES %d" % t.samples)
