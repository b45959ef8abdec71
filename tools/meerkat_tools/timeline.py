"""meerkat-timeline: the picture of a conversation, from the firmware's trace lines.

    meerkat-timeline trace.log out.png          # a trace captured from a board's console
    meerkat-timeline trace.log out.png --json   # also print the data the picture is drawn from
    meerkat-sim --timeline out.png              # the simulated board's conversation, with truth

The firmware writes the trace when config.json has "trace_ms" (firmware/meerkat_rt/trace.py
documents the line format); capture it with `mpremote connect auto repl --capture trace.log`
(or any serial logger). Lines that are not trace lines (log lines, the REPL) are ignored, so
the capture needs no cleaning. A capture holding several runs (the board was reset) draws the
last one unless --run N says otherwise.

The picture, top to bottom, on one time axis (seconds from the start of the run):
  microphone  its level, the VAD's threshold and its echo estimate (dBFS of the mean absolute
              amplitude), and each barge-in the VAD decided, with the levels it decided on;
  speaker     the level leaving the speaker;
  uplink      frames captured / sent / dropped / discarded (cumulative), grey where the
              microphone was held (half duplex);
  events      the server's turn events, interrupts, barge-ins, truncations, state changes;
  truncates   for each truncate, the cursor sent (audio_played_ms) against the speaker's true
              play position when the trace has it (the simulator knows; a board only the cursor).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

_WRAP = 1 << 30  # MicroPython ticks wrap here; ticks_diff gives T in [-2**29, 2**29)
SAMPLE_FIELDS = ("mic", "thr", "echo", "spk", "held", "captured", "sent", "dropped", "discarded")
# Events drawn in the events lane, with their label and colour.
EVENT_STYLE = {
    "turn_started": ("turn started", "tab:blue"),
    "turn_committed": ("turn committed", "tab:cyan"),
    "input_transcript_final": ("user transcribed", "tab:cyan"),
    "turn_completed": ("turn completed", "tab:green"),
    "interrupted": ("interrupted", "tab:orange"),
    "barge_in": ("barge-in", "tab:red"),
    "assistant_transcript_truncated": ("truncated", "tab:purple"),
    "reply_done": ("reply done", "tab:olive"),
    "reconnect": ("reconnect", "tab:brown"),
    "error": ("error", "black"),
    "state": ("state", "tab:gray"),
}


class TraceError(ValueError):
    pass


@dataclass
class Truncate:
    t_ms: int
    item: str
    cursor_ms: int  # what the device sent as audio_played_ms
    true_ms: int | None  # what the speaker really played of the item (simulator only)
    reason: str


@dataclass
class Run:
    """One trace run (from a ~tb line to the next), times in ms from its start."""

    period_ms: int = 0
    samples: dict[str, list[int]] = field(default_factory=lambda: {k: [] for k in ("t", *SAMPLE_FIELDS)})
    events: list[tuple[int, str, list[str]]] = field(default_factory=list)
    truths: list[tuple[int, str, int]] = field(default_factory=list)
    bad_lines: int = 0

    @property
    def n(self) -> int:
        return len(self.samples["t"])

    def truncates(self) -> list[Truncate]:
        """Each barge-in that sent a truncate, with the speaker's truth when the trace has it
        (a ~tx line for the same item at the same moment)."""
        out = []
        for t, name, f in self.events:
            if name != "barge_in" or len(f) < 3:
                continue
            cursor = int(f[2])
            if cursor < 0:
                continue
            truth = next((ms for tt, item, ms in self.truths if item == f[1] and abs(tt - t) <= 50), None)
            out.append(Truncate(t, f[1], cursor, truth, f[0]))
        return out

    def barge_ins(self) -> list[dict]:
        out = []
        for t, name, f in self.events:
            if name == "barge_in" and len(f) >= 6:
                out.append({"t_ms": t, "reason": f[0], "item": f[1], "cursor_ms": int(f[2]),
                            "mic": int(f[3]), "threshold": int(f[4]), "speaker": int(f[5])})
        return out

    def summary(self) -> dict:
        """The data the picture is drawn from, for --json and the tests."""
        s = self.samples
        return {
            "period_ms": self.period_ms,
            "samples": self.n,
            "duration_ms": (s["t"][-1] - s["t"][0]) if self.n else 0,
            "events": [{"t_ms": t, "name": name, "fields": f} for t, name, f in self.events],
            "barge_ins": self.barge_ins(),
            "truncates": [vars(x) for x in self.truncates()],
            "frames": {k: (s[k][-1] if self.n else 0) for k in ("captured", "sent", "dropped", "discarded")},
            "held_ms": sum(self.period_ms for h in s["held"] if h),
            "bad_lines": self.bad_lines,
        }


def parse(lines: Iterable[str]) -> list[Run]:
    """The runs in a capture. A line counts when it starts with ~t (after any prompt or
    carriage return in front of it); a malformed trace line is counted, not fatal."""
    runs: list[Run] = []
    run: Run | None = None
    last = 0
    offset = 0
    for raw in lines:
        i = raw.find("~t")
        if i < 0:
            continue
        parts = raw[i:].split()
        kind = parts[0]
        if kind not in ("~tb", "~ts", "~te", "~tx"):
            continue
        try:
            t = int(parts[1])
        except (IndexError, ValueError):
            if run is not None:
                run.bad_lines += 1
            continue
        if kind == "~tb":
            run = Run(period_ms=int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0)
            runs.append(run)
            last, offset = t, 0
            continue
        if run is None:  # a capture that started mid-run
            run = Run()
            runs.append(run)
            last = t
        if t + offset < last - (_WRAP >> 2):  # T wrapped (ticks_diff is modulo 2**30)
            offset += _WRAP
        t += offset
        last = max(last, t)
        try:
            if kind == "~ts":
                values = [int(v) for v in parts[2:]]
                if len(values) != len(SAMPLE_FIELDS):
                    raise ValueError(kind)
                run.samples["t"].append(t)
                for k, v in zip(SAMPLE_FIELDS, values):
                    run.samples[k].append(v)
            elif kind == "~te":
                run.events.append((t, parts[2], parts[3:]))
            else:
                run.truths.append((t, parts[2], int(parts[3])))
        except (IndexError, ValueError):
            run.bad_lines += 1
    return [r for r in runs if r.n or r.events]


def load(path: str | Path, run: int = -1) -> Run:
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    runs = parse(text.splitlines())
    if not runs:
        raise TraceError(f"{path} holds no trace lines (~ts/~te): set \"trace_ms\" in config.json (e.g. 20) and capture the console")
    try:
        return runs[run]
    except IndexError:
        raise TraceError(f"{path} holds {len(runs)} trace run(s); --run {run} is not one of them") from None


def _dbfs(level: int) -> float:
    return 20 * math.log10(max(level, 1) / 32768)


def draw(run: Run, out: str | Path, title: str = "", width_px: int = 1600, height_px: int = 1000, dpi: int = 100) -> Path:
    """Write the picture as a PNG of exactly width_px x height_px."""
    import matplotlib

    matplotlib.use("Agg")  # no display; the ecosystem's default for files
    import matplotlib.pyplot as plt

    s = run.samples
    t = [v / 1000 for v in s["t"]]
    fig, axes = plt.subplots(5, 1, sharex=True, figsize=(width_px / dpi, height_px / dpi), dpi=dpi,
                             gridspec_kw={"height_ratios": [3, 2, 2, 1.4, 2]})
    mic_ax, spk_ax, up_ax, ev_ax, tr_ax = axes
    held = _spans(t, s["held"])
    for ax in (mic_ax, up_ax):
        for a, b in held:
            ax.axvspan(a, b, color="0.9", lw=0)

    floor = -90.0
    mic_ax.plot(t, [_dbfs(v) for v in s["mic"]], lw=0.8, color="tab:blue", label="microphone")
    mic_ax.plot(t, [_dbfs(v) for v in s["thr"]], lw=1.2, color="tab:red", label="VAD threshold")
    mic_ax.plot(t, [_dbfs(v) if v else floor for v in s["echo"]], lw=1.0, ls="--", color="tab:orange", label="echo estimate")
    for b in run.barge_ins():
        x = b["t_ms"] / 1000
        for ax in axes:
            ax.axvline(x, color="tab:red", lw=1, alpha=0.6)
        if b["mic"] >= 0:
            mic_ax.plot([x], [_dbfs(b["mic"])], "v", color="tab:red", ms=8)
            mic_ax.annotate(f"barge-in ({b['reason']})\nmic {_dbfs(b['mic']):.0f} / thr {_dbfs(b['threshold']):.0f} dBFS",
                            (x, _dbfs(b["mic"])), xytext=(4, 6), textcoords="offset points", fontsize=8, color="tab:red")
        else:
            mic_ax.annotate(f"barge-in ({b['reason']})", (x, -6), xytext=(4, 0), textcoords="offset points", fontsize=8,
                            color="tab:red", va="top")
    mic_ax.set_ylim(floor, 0)
    mic_ax.set_ylabel("dBFS")
    mic_ax.set_title(title or "meerkat-rt conversation timeline", loc="left")
    mic_ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, ncol=3, frameon=False)

    spk_ax.plot(t, [_dbfs(v) if v else floor for v in s["spk"]], lw=0.8, color="tab:green", label="speaker")
    spk_ax.set_ylim(floor, 0)
    spk_ax.set_ylabel("dBFS")
    spk_ax.legend(loc="lower right", fontsize=8)

    for k, colour in (("captured", "0.5"), ("sent", "tab:blue"), ("dropped", "tab:red"), ("discarded", "tab:orange")):
        up_ax.step(t, s[k], where="post", lw=1, color=colour, label=k)
    up_ax.set_ylabel("frames")
    up_ax.legend(loc="upper left", fontsize=8, ncol=4, title="uplink (grey: mic held)", title_fontsize=8)

    lanes = {}
    for tm, name, f in run.events:
        label, colour = EVENT_STYLE.get(name, (name, "black"))
        if name == "state":
            label = f[0] if f else "state"
        lane = lanes.setdefault(name if name != "state" else "state", len(lanes))
        x = tm / 1000
        ev_ax.plot([x], [lane], "|", color=colour, ms=12, mew=2)
        ev_ax.annotate(label, (x, lane), xytext=(3, 3), textcoords="offset points", fontsize=7, color=colour)
    ev_ax.set_yticks(range(len(lanes)))
    ev_ax.set_yticklabels([EVENT_STYLE.get(n, (n,))[0] for n in lanes], fontsize=7)
    ev_ax.set_ylim(-0.5, max(len(lanes), 1) - 0.5 + 0.6)
    ev_ax.set_ylabel("events")

    truncs = run.truncates()
    for x in truncs:
        xs = x.t_ms / 1000
        tr_ax.plot([xs], [x.cursor_ms], "s", color="tab:purple", ms=7)
        note = f"{x.item}: sent {x.cursor_ms} ms"
        if x.true_ms is not None:
            tr_ax.plot([xs], [x.true_ms], "o", color="tab:green", ms=7)
            tr_ax.plot([xs, xs], [x.cursor_ms, x.true_ms], color="0.4", lw=1)
            note += f", played {x.true_ms} ms ({x.true_ms - x.cursor_ms:+d})"
        right = bool(t) and xs > t[0] + 0.65 * (t[-1] - t[0])  # near the right edge: the note goes left
        tr_ax.annotate(note, (xs, x.cursor_ms), xytext=(-8 if right else 6, -4), textcoords="offset points", fontsize=8,
                       ha="right" if right else "left")
    tr_ax.plot([], [], "s", color="tab:purple", label="cursor sent (audio_played_ms)")
    if any(x.true_ms is not None for x in truncs):
        tr_ax.plot([], [], "o", color="tab:green", label="speaker's true play position")
    top = max([1000] + [x.cursor_ms for x in truncs] + [x.true_ms or 0 for x in truncs])
    tr_ax.set_ylim(0, top * 1.25)
    tr_ax.set_ylabel("ms of item")
    tr_ax.legend(loc="upper left", fontsize=8)
    tr_ax.set_xlabel("seconds")
    if t:
        ends = [e[0] / 1000 for e in run.events]
        tr_ax.set_xlim(min([t[0], *ends]), max([t[-1], *ends]))

    fig.subplots_adjust(left=0.07, right=0.98, top=0.96, bottom=0.06, hspace=0.12)
    out = Path(out)
    fig.savefig(out, dpi=dpi, format="png")  # exactly figsize * dpi: no tight bbox
    plt.close(fig)
    return out


def _spans(t: list[float], flags: list[int]) -> list[tuple[float, float]]:
    spans = []
    start = None
    for x, f in zip(t, flags):
        if f and start is None:
            start = x
        elif not f and start is not None:
            spans.append((start, x))
            start = None
    if start is not None and t:
        spans.append((start, t[-1]))
    return spans


def png_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR; ValueError if it is not a PNG."""
    data = Path(path).read_bytes()[:24]
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG file")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="meerkat-timeline", description="Draw a conversation's timeline from the firmware's trace lines.")
    p.add_argument("trace", type=Path, help="a capture of the board's console (mpremote ... repl --capture FILE)")
    p.add_argument("out", type=Path, help="the PNG to write")
    p.add_argument("--run", type=int, default=-1, help="which trace run of the capture (0 the first, -1 the last: default)")
    p.add_argument("--title", default="")
    p.add_argument("--size", default="1600x1000", help="WIDTHxHEIGHT in pixels (default 1600x1000)")
    p.add_argument("--json", action="store_true", help="print the data the picture is drawn from as one JSON line")
    args = p.parse_args(argv)
    try:
        w, _, h = args.size.partition("x")
        size = (int(w), int(h))
    except ValueError:
        print("meerkat-timeline: --size must be WIDTHxHEIGHT, e.g. 1600x1000", file=sys.stderr)
        return 2
    try:
        run = load(args.trace, args.run)
    except (OSError, TraceError) as exc:
        print(f"meerkat-timeline: {exc}", file=sys.stderr)
        return 1
    draw(run, args.out, args.title or str(args.trace), *size)
    if args.json:
        print(json.dumps(run.summary()))
    else:
        s = run.summary()
        print(f"meerkat-timeline: {args.out}: {s['samples']} samples over {s['duration_ms'] / 1000:.1f} s, "
              f"{len(s['events'])} events, {len(s['truncates'])} truncate(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
