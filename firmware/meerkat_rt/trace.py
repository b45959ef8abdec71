# meerkat_rt.trace: a compact line stream of what the device hears, plays, holds and decides,
# for the timeline picture (`meerkat-timeline trace.log out.png` on the host; `meerkat-sim
# --timeline out.png` draws it from the simulated board).
#
# Off by default; config.json "trace_ms": N (10..1000) turns it on: a sample line every N ms
# from the device's own task, and a line for each event that matters to the picture. On a board
# the lines go to the console, so `mpremote connect auto repl --capture trace.log` (or any
# serial logger) records them among the log lines; the host command picks them out by their
# prefix and ignores everything else.
#
#   ~ts T MIC THR ECHO SPK HELD CAPTURED SENT DROPPED DISCARDED     a sample
#   ~te T NAME [FIELDS...]                                           an event
#   ~tb T PERIOD VERSION                                             the start of a trace
#
# T is ms since the trace began (ticks, so it wraps after 12 days: the host unwraps it). MIC is
# the microphone level of the last 10 ms block (mean absolute amplitude), THR the VAD's
# threshold and ECHO its estimate of the speaker's echo in the microphone (the echo coupling
# applied to what the speaker played, 0 when silent), SPK the level leaving the speaker, HELD 1
# while the microphone is held (half duplex), then the uplink ring's cumulative counters
# (frames captured, sent, dropped by the network, discarded on purpose while held). Events:
#   ~te T barge_in REASON ITEM CURSOR_MS MIC THR SPK    (ITEM "-" and CURSOR_MS -1: no truncate)
#   ~te T state STATE, ~te T reconnect ATTEMPT DELAY_MS, ~te T error CODE,
#   ~te T assistant_transcript_truncated ITEM MS, and the server's turn events by name.
# Text fields never hold a space (an id with one has it replaced), so lines split on spaces.
#
# Cheap when on: a sample formats integers into one preallocated line buffer and writes it with
# the stream's write(buf, off, n) on MicroPython (no slice, no string): it allocates nothing.
# Event lines are formatted strings; events are a few per turn.
from . import vad as _vad
from .compat import IS_MICROPYTHON, sleep_ms, ticks_diff, ticks_ms

VERSION = 1
# App events drawn in the picture; the rest (text deltas, transcripts, tool calls) are left out.
EVENTS = (
    "state",
    "turn_started",
    "turn_committed",
    "turn_completed",
    "interrupted",
    "barge_in",
    "reply_done",
    "reconnect",
    "error",
    "assistant_transcript_truncated",
    "input_transcript_final",
)


def _stdout_sink():
    import sys

    if IS_MICROPYTHON:
        out = sys.stdout.buffer  # type: ignore

        def write(buf, n):
            out.write(buf, 0, n)  # type: ignore  # MicroPython streams: write(buf, off, n)

    else:

        def write(buf, n):
            sys.stdout.buffer.write(bytes(buf[:n]))
            sys.stdout.flush()

    return write


class Tracer:
    def __init__(self, period_ms, player, capture=None, ring=None, sink=None):
        """sink(buf, n): writes buf[:n] (bytes-like), one whole line; default the console."""
        self.period_ms = period_ms
        self.player = player
        self.capture = capture
        self.ring = ring
        self.sink = sink or _stdout_sink()
        self.on_event = None  # the app's handler, called after the trace line
        self.hook = None  # called after each sample (the simulator records its ground truth)
        self._buf = bytearray(128)  # one sample line: 10 fields of up to 11 characters and a space
        self._buf[0:4] = b"~ts "
        self.t0 = ticks_ms()
        self.samples = 0
        self._began = False

    def now(self):
        """ms since the trace began."""
        return ticks_diff(ticks_ms(), self.t0)

    def line(self, text):
        """Write one trace line (a str without the newline; allocates: not for the audio path)."""
        b = (text + "\n").encode()
        self.sink(b, len(b))

    def begin(self):
        # T stays counted from the Tracer's creation: events before the first sample keep
        # their times.
        self._began = True
        self.line("~tb %d %d %d" % (self.now(), self.period_ms, VERSION))

    def event(self, name, data):
        """An app event (Link.on_event): a trace line for those in EVENTS, then the app's handler."""
        if name in EVENTS:
            try:
                self.line("~te %d %s%s" % (self.now(), name, _fields(name, data)))
            except Exception:  # an odd event must not take the app's handler down with it
                pass
        if self.on_event is not None:
            self.on_event(name, data)

    def sample(self):
        """One sample line. Allocation-free: integers formatted into the preallocated buffer."""
        if not self._began:
            self.begin()
        b = self._buf
        i = _put(b, 4, self.now())
        cap = self.capture
        v = cap.vad if cap is not None else None
        i = _put(b, i, cap.level if cap is not None else 0)
        if v is not None:
            i = _put(b, i, v.threshold)
            env = v.env
            i = _put(b, i, _vad.exp2_q5(v.coupling + env) if env > -4096 else 0)
        else:
            i = _put(b, i, 0)
            i = _put(b, i, 0)
        i = _put(b, i, self.player.level_now())
        r = self.ring
        if r is not None:
            i = _put(b, i, 1 if r.held else 0)
            i = _put(b, i, r.captured)
            i = _put(b, i, r.sent)
            i = _put(b, i, r.dropped)
            i = _put(b, i, r.discarded)
        else:
            for _ in range(5):
                i = _put(b, i, 0)
        b[i - 1] = 10  # the last field's trailing space becomes the newline
        self.sink(b, i)
        self.samples += 1
        hook = self.hook
        if hook is not None:
            hook()

    async def run(self):
        """The sampling task: a line every period_ms until cancelled."""
        while True:
            self.sample()
            await sleep_ms(self.period_ms)


def _put(b, i, v):
    # Decimal digits of the int v at b[i:], then a space; returns the index after the space.
    if v < 0:
        b[i] = 45  # "-"
        i += 1
        v = -v
    start = i
    while True:
        b[i] = 48 + v % 10
        i += 1
        v //= 10
        if not v:
            break
    j = i - 1
    while start < j:  # the digits came out least significant first
        c = b[start]
        b[start] = b[j]
        b[j] = c
        start += 1
        j -= 1
    b[i] = 32
    return i + 1


def _word(s):
    # An id or code as one space-free field ("-" for none).
    if s is None or s == "":
        return "-"
    s = str(s)
    return s.replace(" ", "_") if " " in s else s


def _fields(name, d):
    if name == "barge_in":
        return " %s %s %d %d %d %d" % (
            _word(d.get("reason")),
            _word(d.get("item_id")),
            d.get("audio_played_ms", -1),
            d.get("mic_level", -1),
            d.get("threshold", -1),
            d.get("speaker_level", -1),
        )
    if name == "state":
        return " " + _word(d)
    if name == "reconnect":
        return " %d %d" % (d["attempt"], d["delay_ms"])
    if name == "error":
        return " " + _word(d.get("code"))
    if name == "assistant_transcript_truncated":
        return " %s %d" % (_word(d.get("item_id")), d.get("audio_played_ms", -1))
    return ""
