# simtruth: the simulator's ground truth for the timeline picture (meerkat-sim --timeline): what
# the fake speaker really played of each item a barge-in truncated, beside the cursor the
# firmware sent. Hooked into the firmware's trace (meerkat_rt.trace.Tracer) by the simulated
# board's main programs (sim/device.py, sim/repl_device.py); a board has no such truth.
import simworld


class Truth:
    """The speaker's true play position of each item, for the timeline's truncate points.

    The firmware only models what the DAC played (Player: bytes the driver accepted minus a
    model of its DMA queue); the fake speaker knows (machine.I2S.played: bytes clocked out).
    Both count one stream of bytes: the player's stream position of an item's first byte
    (_end - _acc while nothing of it was flushed) is where it sits among the fake's written
    bytes; what the fake played beyond it (less what deinit() flushed before the item
    started) is the item's truth. Sampled with the trace, so an item is placed within one
    trace period of its first byte; reads the player's private arrays (simulator only)."""

    def __init__(self, player, tracer):
        self.player = player
        self.tracer = tracer
        self.starts = {}  # item id -> stream position of its first byte, net of earlier flushes

    def watch(self):
        p = self.player
        spk = simworld.get().tx
        if spk is None:
            return
        for e in range(len(p._ids)):
            item = p._ids[e]
            if type(item) is str and item not in self.starts and p._acc[e] > 0 and not p._stop[e]:
                if len(self.starts) >= 16:
                    self.starts.pop(next(iter(self.starts)))
                self.starts[item] = (p._end[e] - p._acc[e]) - spk.flushed

    def event(self, name, data):
        if name != "barge_in" or not data.get("item_id"):
            return
        item = data["item_id"]
        w = simworld.get()
        spk = w.tx
        if item not in self.starts or spk is None:
            return
        w.service()  # the fake speaker up to now: the cursor was taken microseconds ago
        true_ms = max(0, spk.played - self.starts[item]) // 48
        self.tracer.line("~tx %d %s %d" % (self.tracer.now(), item.replace(" ", "_"), true_ms))


def attach(dev, on_event):
    """Trace the truth of the Device's barge-ins (when its trace is on); on_event: the
    handler the trace passes every app event on to."""
    if dev.trace is None:
        return None
    truth = Truth(dev.player, dev.trace)
    dev.trace.hook = truth.watch

    def traced(name, data):
        truth.event(name, data)
        if on_event is not None:
            on_event(name, data)

    dev.trace.on_event = traced
    return truth
