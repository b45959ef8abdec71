"""meerkat-sweep: how well barge-in works across a matrix of conditions, measured on the
firmware's own capture path, VAD and player driven in virtual time on the simulated board
(much faster than real time), on the MicroPython unix port or CPython. Prints a table and a
final JSON line.

    meerkat-sweep                       # the standard matrix (a few minutes on 2 cores)
    meerkat-sweep --quick               # a small matrix, about 10 s: the smoke test
    meerkat-sweep --slice timing --runs 30 --set echo_db=-20,-10
    meerkat-sweep --spec my_matrix.json --out sweep.json
    meerkat-sweep --rev 830d6c5         # the firmware of another commit (before/after tables)
    meerkat-sweep --runtime both        # also on CPython: the decisions must be identical

The matrix (DEFAULT_SPEC, or --spec FILE with the same shape) is a set of slices; each slice
varies some axes and keeps the others at their defaults:

    at_ms           when the user starts speaking, ms after the reply's first sample
                    (null: no interruption; the reply plays for reply_s, false barge-ins counted)
    echo_db         speaker-to-microphone coupling of the direct echo (the board's acoustics)
    echo_delay_ms   its delay beyond what the player's DMA model knows (air, codec, filters)
    room            "dry" (one echo) or "room" (reflections 10-120 ms later, -6..-24 dB)
    reply           "speech" (the assistant fixture), "quiet" (the same 20 dB down), "tone"
                    (two tones at -1 dBFS: about 15 dB louder than the speech)
    user            interrupter loudness at the microphone relative to the reply speech's
                    active level: "soft" -10 dB, "normal" 0 dB, "loud" +6 dB
    noise           "none", or "pink20", "pink10", "babble20", "babble10": noise at that SNR
                    relative to the interrupter's active speech level
    sensitivity     audio.vad_sensitivity (1..10)
    board           a boards/*.json (its mic bits/high-pass, speaker DMA and mode, coupling_db)

Each run of a cell takes the next interrupting utterance (seven voices and openings), reply
offset, pump timing seed (polls 1-4 ms apart plus stalls of up to 40 ms every ~1.5 s, as GC and
TLS cause on a board) and a sub-block phase for the onset. Per cell: detection rate within
window_ms of the true onset, onset-to-decision latency (median, worst), onset to the speaker's
last sound, false barge-ins (onsets on the device's own voice or on noise) per minute of
reply, and whether the truncate cursor (heard_ms, before the margin) stayed at or below the
samples really played. Targets (issue 15) are checked per cell where they apply.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .. import mpy, paths

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "mp_sweep.py"
HEAP = "2M"  # the runner: the firmware from files, the fakes, a 16 KB echo line per run (not a memory test)
UTTERANCES = [
    "user_interrupt.wav",
    "barge_no_stop.wav",
    "barge_hold_on.wav",
    "barge_sorry.wav",
    "barge_excuse_me.wav",
    "barge_hmm.wav",
    "barge_fine.wav",
]
REPLIES = {"speech": ("assistant_reply.wav", 0), "quiet": ("assistant_reply.wav", -20), "tone": ("reply_tone.wav", 0)}
USERS = {"soft": -10, "normal": 0, "loud": 6}
NOISES = {
    "none": None,
    "pink20": ("noise_pink.wav", 20),
    "pink10": ("noise_pink.wav", 10),
    "babble20": ("noise_babble.wav", 20),
    "babble10": ("noise_babble.wav", 10),
}
ROOMS = {"dry": None, "room": [[10, -6], [30, -12], [70, -18], [120, -24]]}
REPLY_OFFSETS_MS = [0, 2400, 4100, 6350, 1200, 7300, 3300, 5200]

DEFAULTS: dict[str, Any] = {
    "at_ms": 1500,
    "echo_db": -20,
    "echo_delay_ms": 20,
    "room": "room",
    "reply": "speech",
    "user": "normal",
    "noise": "none",
    "sensitivity": 5,
    "board": "esp32_devkit",
    "speaker_mode": "poll",
    "coupling_db": None,
    "runs": 21,
    "reply_s": 60,  # per run without an interruption
    "lead_ms": 1000,
    "window_ms": 1000,
    "step_ms": 4,
    "stalls": [1500, 40],
}

DEFAULT_SPEC: dict[str, Any] = {
    "defaults": {},
    "slices": [
        {"name": "timing", "about": "when the user interrupts x echo coupling",
         "vary": {"at_ms": [300, 700, 1500, 2500, 5000], "echo_db": [-30, -20, -15, -10, -6]}},
        {"name": "delay", "about": "echo delay beyond the DMA model, dry and in a room",
         "vary": {"echo_delay_ms": [0, 20, 60], "room": ["dry", "room"], "echo_db": [-20, -10]}},
        {"name": "loudness", "about": "reply loudness x interrupter loudness",
         "vary": {"reply": ["quiet", "speech", "tone"], "user": ["soft", "normal", "loud"], "echo_db": [-20, -10]}},
        {"name": "noise", "about": "background noise at 20 and 10 dB SNR",
         "vary": {"noise": ["none", "pink20", "babble20", "pink10", "babble10"], "echo_db": [-20, -10]}},
        {"name": "sensitivity", "about": "audio.vad_sensitivity: soft speech caught vs false barge-ins in babble",
         "vary": {"sensitivity": [1, 3, 5, 7, 10], "user": ["soft", "normal"], "noise": ["none", "babble10"]}},
        {"name": "self", "about": "no interruption: false barge-ins per minute of reply",
         "vary": {"at_ms": [None], "echo_db": [-30, -20, -15, -10, -6], "reply": ["speech", "tone"]},
         "set": {"runs": 5, "reply_s": 120}},
        {"name": "self_noise", "about": "no interruption, in noise",
         "vary": {"at_ms": [None], "noise": ["pink10", "babble20", "babble10"], "echo_db": [-20]},
         "set": {"runs": 3, "reply_s": 60}},
        {"name": "self_sens", "about": "no interruption: what sensitivity costs",
         "vary": {"at_ms": [None], "sensitivity": [1, 5, 10], "echo_db": [-15, -10], "noise": ["babble10"]},
         "set": {"runs": 2, "reply_s": 60}},
    ],
}

QUICK_SPEC: dict[str, Any] = {
    "defaults": {"runs": 7},
    "slices": [
        {"name": "timing", "vary": {"at_ms": [300, 1500, 5000], "echo_db": [-20, -10]}},
        {"name": "noise", "vary": {"noise": ["babble20"], "echo_db": [-20]}},
        {"name": "self", "vary": {"at_ms": [None], "echo_db": [-15]}, "set": {"runs": 2, "reply_s": 30}},
    ],
}

AXES = ("at_ms", "echo_db", "echo_delay_ms", "room", "reply", "user", "noise", "sensitivity", "board")


########################################################################
# Fixture levels (host side: the runner gets plain gains in dB)


def active_level(path: Path) -> float:
    """Mean absolute amplitude over the 10 ms windows louder than a tenth of the loudest: the
    level of a file's speech, not of its pauses."""
    from ..fakes.wavfile import open_wav

    f, rate, ch, bits, n = open_wav(str(path))
    with f:
        data = f.read(n)
    s = struct.unpack("<%dh" % (len(data) // 2), data[: len(data) // 2 * 2])
    levels = [sum(abs(v) for v in s[i : i + 240]) / 240 for i in range(0, len(s) - 239, 240)]
    top = max(levels)
    act = [x for x in levels if x > top / 10]
    return sum(act) / len(act)


def _db(x: float) -> float:
    return 20 * math.log10(x)


########################################################################
# The matrix


def load_spec(path: Path | None, quick: bool) -> dict:
    if path is None:
        return json.loads(json.dumps(QUICK_SPEC if quick else DEFAULT_SPEC))
    spec = json.loads(path.read_text())
    if not isinstance(spec.get("slices"), list):
        raise SystemExit(f"{path}: a spec needs a list of slices (see meerkat-sweep --help)")
    return spec


def _values(axis: str, text: str) -> list:
    out: list[Any] = []
    for v in text.split(","):
        v = v.strip()
        if v in ("none", "null") and axis == "at_ms":
            out.append(None)
        else:
            try:
                out.append(int(v))
            except ValueError:
                out.append(v)
    return out


def cells(spec: dict, only: list[str] | None, overrides: dict[str, list], runs: int | None) -> list[dict]:
    out: list[dict] = []
    seen: set[str] = set()
    for sl in spec["slices"]:
        if only and sl["name"] not in only:
            continue
        base = {**DEFAULTS, **spec.get("defaults", {}), **sl.get("set", {})}
        vary = dict(sl.get("vary", {}))
        for axis, vals in overrides.items():
            if axis in vary or axis in AXES:
                vary[axis] = vals
        combos: list[dict] = [{}]
        for axis, vals in vary.items():
            if axis not in AXES:
                raise SystemExit(f"slice {sl['name']}: unknown axis {axis} (axes: {', '.join(AXES)})")
            combos = [dict(c, **{axis: v}) for c in combos for v in vals]
        for c in combos:
            cell = dict(base, **c)
            if cell["at_ms"] is not None and sl["name"].startswith("self"):
                continue
            if runs is not None:
                cell["runs"] = runs
            key = json.dumps({a: cell[a] for a in AXES}, sort_keys=True)
            cell["slice"] = sl["name"]
            cell["key"] = key
            if key + sl["name"] in seen:
                continue
            seen.add(key + sl["name"])
            out.append(cell)
    return out


def _check(cell: dict) -> None:
    for axis, table in (("reply", REPLIES), ("user", USERS), ("noise", NOISES), ("room", ROOMS)):
        if cell[axis] not in table:
            raise SystemExit(f"unknown {axis} {cell[axis]!r} (one of: {', '.join(table)})")
    if not (paths.BOARDS / f"{cell['board']}.json").exists():
        raise SystemExit(f"unknown board {cell['board']!r}")


def runs_of(cell: dict, index: dict, levels: dict[str, float]) -> list[dict]:
    _check(cell)
    reply_file, reply_db = REPLIES[cell["reply"]]
    speech = levels["assistant_reply.wav"]
    out = []
    for k in range(cell["runs"]):
        seed = (hash_key(cell["key"]) + 7919 * k) & 0x7FFFFFFF
        r: dict[str, Any] = {
            "board": cell["board"],
            "speaker_mode": cell["speaker_mode"],
            "sensitivity": cell["sensitivity"],
            "coupling_db": cell["coupling_db"],
            "reply": reply_file,
            "reply_db": reply_db,
            "reply_offset_ms": REPLY_OFFSETS_MS[k % len(REPLY_OFFSETS_MS)] if cell["reply"] != "tone" else 137 * k,
            "lead_ms": cell["lead_ms"],
            "echo_db": cell["echo_db"],
            "echo_delay_ms": cell["echo_delay_ms"],
            "echo_tail": ROOMS[cell["room"]],
            "seed": seed,
            "step_ms": cell["step_ms"],
            "stalls": cell["stalls"],
            "window_ms": cell["window_ms"],
        }
        user_level = speech * 10 ** (USERS[cell["user"]] / 20)
        if cell["at_ms"] is None:
            r["reply_ms"] = cell["reply_s"] * 1000
            r["user"] = None
        else:
            u = UTTERANCES[k % len(UTTERANCES)]
            onset = index[u]["onset_ms"]
            phase = (seed >> 3) % 10
            r["user"] = u
            r["user_db"] = round(_db(user_level / levels[u]), 2)
            r["onset_ms"] = onset
            r["inject_at_ms"] = cell["at_ms"] + phase - int(onset + 0.5)
            r["reply_ms"] = cell["at_ms"] + phase + cell["window_ms"] + 1000
        noise = NOISES[cell["noise"]]
        if noise:
            nf, snr = noise
            r["noise"] = nf
            r["noise_db"] = round(_db(user_level / 10 ** (snr / 20) / levels[nf]), 2)
            r["noise_offset_ms"] = (seed >> 5) % 2900
        r["id"] = f"{cell['slice']}|{cell['key']}|{k}"
        out.append(r)
    return out


def hash_key(text: str) -> int:
    h = 2166136261
    for ch in text.encode():
        h = ((h ^ ch) * 16777619) & 0xFFFFFFFF
    return h


########################################################################
# Running


class Runner:
    def __init__(self, work: Path, runtime: str, firmware: Path | None):
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.runtime = runtime
        self.fakes_build = None
        src = firmware or paths.FIRMWARE
        if runtime == "micropython":
            self.build = mpy.compile_modules(sorted((src / "meerkat_rt").glob("*.py")), work / "mpy" / "meerkat_rt").parent
            self.fakes_build = mpy.compile_modules(sorted(paths.FAKES.glob("*.py")), work / "fakes")
        self.src = src

    def run(self, batch: list[dict], tag: str, timeout: float = 3600) -> list[dict]:
        spec = {"fixtures": str(paths.FIXTURES), "boards": str(paths.BOARDS), "runs": batch}
        f = self.work / f"spec-{tag}.json"
        f.write_text(json.dumps(spec))
        if self.runtime == "micropython":
            proc = mpy.run(RUNNER, [str(f)], search_path=[self.fakes_build, self.build], heap=HEAP, timeout=timeout)
        else:
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(paths.FAKES), str(self.src)]))
            proc = subprocess.run([sys.executable, str(RUNNER), str(f)], capture_output=True, text=True, timeout=timeout, env=env)
        rows = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
        if proc.returncode:
            tail = "\n".join((proc.stderr.strip() or proc.stdout.strip()).splitlines()[-6:])
            raise SystemExit(f"sweep runner failed on {self.runtime} (exit {proc.returncode}):\n{tail}")
        return rows


def run_all(runs: list[dict], runner: Runner, jobs: int, log) -> list[dict]:
    # Long runs first, so the batches finish together.
    order = sorted(runs, key=lambda r: -r["reply_ms"])
    batches: list[list[dict]] = [[] for _ in range(max(1, jobs) * 3)]
    loads = [0] * len(batches)
    for r in order:
        i = loads.index(min(loads))
        batches[i].append(r)
        loads[i] += r["reply_ms"] + r["lead_ms"]
    batches = [b for b in batches if b]
    done = 0
    results: list[dict] = []

    def one(i_b):
        return runner.run(i_b[1], f"{runner.runtime}-{i_b[0]}")

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for rows in pool.map(one, enumerate(batches)):
            results += rows
            done += 1
            log(f"  {runner.runtime}: {done}/{len(batches)} batches")
    return results


########################################################################
# Aggregation and verdicts


def _median(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 1) if xs else None


def aggregate(cell: dict, rows: list[dict]) -> dict:
    out: dict[str, Any] = {a: cell[a] for a in AXES}
    out["slice"] = cell["slice"]
    out["runs"] = len(rows)
    errors = [r["error"] for r in rows if r.get("error")]
    if errors:
        out["errors"] = errors[:3]
    reply_min = sum(r.get("reply_played_ms", 0) for r in rows) / 60000
    false = sum(len(r["false_onsets"]) for r in rows)
    out["reply_min"] = round(reply_min, 2)
    out["false_barge_ins"] = false
    out["false_per_min"] = round(false / reply_min, 3) if reply_min else None
    if cell["at_ms"] is not None:
        det = [r for r in rows if r["detected"]]
        lat = [r["latency_ms"] for r in det]
        out["detected"] = len(det)
        out["detection"] = round(len(det) / len(rows), 3) if rows else None
        out["latency_median_ms"] = _median(lat)
        out["latency_worst_ms"] = max(lat) if lat else None
        sil = [r["silence_ms"] for r in det if r.get("silence_ms") is not None]
        out["silence_median_ms"] = _median(sil)
        out["silence_worst_ms"] = max(sil) if sil else None
        cur = [r for r in rows if r.get("cursor_ms") is not None]
        out["cursor_above_truth"] = sum(1 for r in cur if r["cursor_ms"] > r["truth_ms"])
        out["cursor_lag_worst_ms"] = max((r["truth_ms"] - r["cursor_ms"] for r in cur), default=None)
        out["missed_by"] = sorted({r["id"].rsplit("|", 1)[1] for r in rows if not r["detected"]})
        out["missed_utterances"] = sorted({UTTERANCES[int(r["id"].rsplit("|", 1)[1]) % len(UTTERANCES)] for r in rows if not r["detected"]})
    out["overruns"] = sum(r.get("overruns", 0) for r in rows)
    return out


def target_class(c: dict) -> str | None:
    """Which of issue 15's detection targets applies to a cell (None: reported, no target)."""
    if c["at_ms"] is None or c["sensitivity"] != 5 or c["board"] != DEFAULTS["board"]:
        return None
    if c["reply"] == "tone" or c["user"] == "soft":
        return None
    if c["noise"] == "none" and c["echo_db"] <= -15:
        return "A"  # >= 99 %
    if (c["noise"] == "none" and c["echo_db"] == -10) or (c["noise"] in ("pink20", "babble20") and c["echo_db"] <= -10):
        return "B"  # >= 95 %
    return None


def verdict(c: dict) -> str:
    notes = []
    ok = True
    if c.get("errors"):
        return "ERROR"
    cls = target_class(c)
    if c["at_ms"] is None:
        if c["echo_db"] <= -15 and c["noise"] == "none" and c["sensitivity"] == 5:
            ok = c["false_barge_ins"] == 0
            return "met" if ok else "MISSED"
        return "-"
    if c.get("cursor_above_truth"):
        return "CURSOR"
    if cls is None:
        return "-"
    need = 0.99 if cls == "A" else 0.95
    if (c["detection"] or 0) < need:
        ok = False
        notes.append("det")
    if c["latency_median_ms"] is None or c["latency_median_ms"] > 60:
        ok = False
        notes.append("median")
    if c["latency_worst_ms"] is None or c["latency_worst_ms"] > 200:
        ok = False
        notes.append("worst")
    if c["false_barge_ins"]:
        ok = False
        notes.append("false")
    return "met" if ok else "MISSED " + "+".join(notes)


def summary(agg: list[dict]) -> dict:
    out: dict[str, Any] = {}
    for cls, need in (("A", 0.99), ("B", 0.95)):
        cs = [c for c in agg if target_class(c) == cls]
        n = sum(c["runs"] for c in cs)
        d = sum(c["detected"] for c in cs)
        out[cls] = {
            "cells": len(cs),
            "cells_met": sum(1 for c in cs if verdict(c) == "met"),
            "runs": n,
            "detection": round(d / n, 4) if n else None,
            "need": need,
            "latency_median_ms_worst_cell": max((c["latency_median_ms"] or 0 for c in cs), default=None),
            "latency_worst_ms": max((c["latency_worst_ms"] or 0 for c in cs), default=None),
        }
    selfs = [c for c in agg if c["at_ms"] is None and c["echo_db"] <= -15 and c["noise"] == "none" and c["sensitivity"] == 5]
    out["self"] = {
        "cells": len(selfs),
        "reply_min": round(sum(c["reply_min"] for c in selfs), 1),
        "false_barge_ins": sum(c["false_barge_ins"] for c in selfs),
    }
    cur = [c for c in agg if c.get("cursor_above_truth") is not None]
    out["cursor_above_truth"] = sum(c["cursor_above_truth"] for c in cur)
    out["cursor_checks"] = sum(c["detected"] for c in cur)
    return out


########################################################################
# Table


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        v = f"{v:.0f}" if abs(v) >= 10 or v == 0 else f"{v:.1f}"
    return f"{v}{unit}"


def _label(c: dict, varied: list[str]) -> str:
    parts = []
    for a in varied:
        v = c[a]
        if a == "at_ms":
            parts.append("no user" if v is None else f"at {v}")
        elif a == "echo_db":
            parts.append(f"{v} dB")
        elif a == "echo_delay_ms":
            parts.append(f"+{v} ms")
        elif a == "sensitivity":
            parts.append(f"sens {v}")
        else:
            parts.append(str(v))
    return " ".join(parts)


def table(agg: list[dict], spec: dict) -> str:
    lines = []
    by_slice: dict[str, list[dict]] = {}
    for c in agg:
        by_slice.setdefault(c["slice"], []).append(c)
    about = {sl["name"]: (sl.get("about", ""), list(sl.get("vary", {}))) for sl in spec["slices"]}
    for name, cs in by_slice.items():
        text, varied = about.get(name, ("", []))
        varied = [a for a in varied if len({json.dumps(c[a]) for c in cs}) > 1] or varied[:1]
        lines.append("")
        lines.append(f"## {name}: {text}" if text else f"## {name}")
        if cs[0]["at_ms"] is None:
            lines.append(f"| {' '.join(varied)} | reply min | false barge-ins | per 10 min | verdict |")
            lines.append("|---|---|---|---|---|")
            for c in cs:
                per10 = None if c["false_per_min"] is None else c["false_per_min"] * 10
                lines.append(f"| {_label(c, varied)} | {_fmt(c['reply_min'])} | {c['false_barge_ins']} | {_fmt(per10)} | {verdict(c)} |")
        else:
            lines.append(f"| {' '.join(varied)} | detected | latency median / worst ms | silence median ms | false | cursor | verdict |")
            lines.append("|---|---|---|---|---|---|---|")
            for c in cs:
                det = f"{c['detected']}/{c['runs']}"
                lat = f"{_fmt(c['latency_median_ms'])} / {_fmt(c['latency_worst_ms'])}"
                cur = "ok" if not c["cursor_above_truth"] else f"{c['cursor_above_truth']} above"
                lines.append(f"| {_label(c, varied)} | {det} | {lat} | {_fmt(c['silence_median_ms'])} | {c['false_barge_ins']} | {cur} | {verdict(c)} |")
    return "\n".join(lines)


def summary_text(s: dict) -> str:
    a, b, sf = s["A"], s["B"], s["self"]
    out = [""]
    out.append("targets (issue 15): A = echo <= -15 dB, no noise; B = -10 dB or 20 dB SNR (speech reply, normal/loud user, sensitivity 5)")
    for k, v in (("A", a), ("B", b)):
        if v["cells"]:
            out.append(
                f"  {k}: {v['cells_met']}/{v['cells']} cells met; detection {v['detection']:.1%} over {v['runs']} runs "
                f"(need {v['need']:.0%}); worst cell median {v['latency_median_ms_worst_cell']} ms (need <= 60), "
                f"worst {v['latency_worst_ms']} ms (need <= 200)"
            )
    if sf["cells"]:
        out.append(f"  self-interruption at <= -15 dB: {sf['false_barge_ins']} in {sf['reply_min']} min of reply (need 0)")
    out.append(f"  cursor above the truth: {s['cursor_above_truth']} of {s['cursor_checks']} barge-ins (need 0)")
    return "\n".join(out)


########################################################################
# CPU


def cpu_runs(index: dict, levels: dict[str, float], seconds: int) -> list[dict]:
    """Three passes with the VAD and three without, over the same reply (speech at -20 dB echo,
    nobody interrupting): the detector's cost is the difference in capture.poll's time."""
    cell = dict(DEFAULTS, at_ms=None, reply_s=seconds, runs=1, slice="cpu", stalls=[0, 0])
    cell["key"] = json.dumps({a: cell[a] for a in AXES}, sort_keys=True)
    base = runs_of(cell, index, levels)[0]
    out = []
    for k in range(6):
        out.append(dict(base, cpu="poll", no_vad=k % 2 == 1, id=f"cpu|{'without' if k % 2 else 'with'}|{k}"))
    out.append(dict(base, cpu="replay", id="cpu|replay|6"))
    return out


def cpu_summary(rows: list[dict]) -> dict:
    with_vad = [r for r in rows if r["id"].startswith("cpu|with|")]
    without = [r for r in rows if r["id"].startswith("cpu|without|")]
    replay = [r for r in rows if "vad_us" in r]
    if not with_vad or not without or not replay:
        return {"error": "the CPU pass did not run"}
    audio_s = with_vad[0]["blocks"] / 100
    best_with = min(r["poll_us"] for r in with_vad)
    best_without = min(r["poll_us"] for r in without)
    with_vad = replay
    vad = min(r["vad_us"] for r in with_vad)
    level = min((r["level_us"] for r in with_vad if "level_us" in r), default=0)
    blocks_s = with_vad[0]["vad_blocks"] / 100
    return {
        "player_level_us_per_audio_s": round(level / blocks_s),
        "vad_plus_level_us_per_audio_s": round((vad + level) / blocks_s),
        "audio_s": audio_s,
        "capture_with_vad_us_per_audio_s": round(best_with / audio_s),
        "capture_without_vad_us_per_audio_s": round(best_without / audio_s),
        "detector_us_per_audio_s": round((best_with - best_without) / audio_s),
        "vad_update_us_per_audio_s": round(vad / (with_vad[0]["vad_blocks"] / 100)),
        "vad_update_us_per_block": round(vad / with_vad[0]["vad_blocks"], 2),
        "vad_alloc_bytes": max((r.get("vad_alloc_bytes", 0) for r in with_vad), default=None),
        "method": "unix port, virtual time: VAD.update replayed on the levels a 30 s reply gave it and "
                  "Player.level as Capture asks it, fastest of 3 passes each (ticks_us); capture.poll timed "
                  "with and without the VAD too, but that difference is within the noise of a shared host",
    }


def cpu_text(c: dict) -> str:
    if "error" in c:
        return f"  CPU: {c['error']}"
    return (f"  CPU (unix port, this host's us per second of audio): VAD.update {c['vad_update_us_per_audio_s']} "
            f"({c['vad_update_us_per_block']} a block) + Player.level {c['player_level_us_per_audio_s']} = "
            f"{c['vad_plus_level_us_per_audio_s']}, {c['vad_alloc_bytes']} bytes allocated over {c['audio_s']:.0f} s "
            f"(the whole capture.poll with the fake I2S: {c['capture_with_vad_us_per_audio_s']})")


########################################################################
# Comparing two runs


def compare(a_path: Path, b_path: Path) -> str:
    a, b = (json.loads(p.read_text()) for p in (a_path, b_path))
    ka = {(c["slice"], json.dumps({x: c[x] for x in AXES}, sort_keys=True)): c for c in a["cells_detail"]}
    lines = [f"cell by cell: {a_path.name} ({a.get('rev')}) -> {b_path.name} ({b.get('rev')})"]
    slice_name = None
    for c in b["cells_detail"]:
        key = (c["slice"], json.dumps({x: c[x] for x in AXES}, sort_keys=True))
        o = ka.get(key)
        if c["slice"] != slice_name:
            slice_name = c["slice"]
            lines.append("")
            lines.append(f"## {slice_name}")
            if c["at_ms"] is None:
                lines.append("| cell | false barge-ins per 10 min, before -> after | verdict after |")
                lines.append("|---|---|---|")
            else:
                lines.append("| cell | detected | median ms | worst ms | false | verdict after |")
                lines.append("|---|---|---|---|---|---|")
        same = [o2 for o2 in b["cells_detail"] if o2["slice"] == c["slice"]]
        varied = [x for x in AXES if len({json.dumps(o2[x]) for o2 in same}) > 1] or ["at_ms"]
        label = _label(c, varied)
        if c["at_ms"] is None:
            def per10(x):
                return "-" if x is None or x.get("false_per_min") is None else _fmt(x["false_per_min"] * 10)
            lines.append(f"| {label} | {per10(o)} -> {per10(c)} | {verdict(c)} |")
        else:
            def det(x):
                return "-" if x is None else f"{x['detected']}/{x['runs']}"
            def g(x, k):
                return "-" if x is None else _fmt(x.get(k))
            lines.append(f"| {label} | {det(o)} -> {det(c)} | {g(o, 'latency_median_ms')} -> {g(c, 'latency_median_ms')} | "
                         f"{g(o, 'latency_worst_ms')} -> {g(c, 'latency_worst_ms')} | {g(o, 'false_barge_ins')} -> {g(c, 'false_barge_ins')} | {verdict(c)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="meerkat-sweep", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--spec", type=Path, help="a matrix JSON file (default: the standard matrix)")
    p.add_argument("--quick", action="store_true", help="a small matrix (about 10 s)")
    p.add_argument("--slice", action="append", help="only this slice (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="AXIS=V1,V2", help="override an axis in every slice")
    p.add_argument("--runs", type=int, help="runs per cell (default: the spec's)")
    p.add_argument("--runtime", choices=("micropython", "cpython", "both"), default="micropython")
    p.add_argument("--rev", help="run the firmware of this git revision instead of the checkout's")
    p.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    p.add_argument("--out", type=Path, help="also write the full JSON (every run) to this file")
    p.add_argument("--cpu-s", type=int, default=30, help="seconds of reply per CPU pass on the unix port (0: none; quick: 10)")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"), help="print two --out files cell by cell and exit")
    a = p.parse_args(argv)
    if a.compare:
        print(compare(*a.compare))
        return 0
    paths.require_checkout()
    log = (lambda m: None) if a.json else (lambda m: print(m, file=sys.stderr, flush=True))
    spec = load_spec(a.spec, a.quick)
    overrides = {}
    for s in a.set:
        axis, _, vals = s.partition("=")
        if axis not in AXES or not vals:
            raise SystemExit(f"--set {s}: expected AXIS=V1,V2 with AXIS one of {', '.join(AXES)}")
        overrides[axis] = _values(axis, vals)
    cs = cells(spec, a.slice, overrides, a.runs)
    index = json.loads((paths.FIXTURES / "index.json").read_text())
    levels = {name: active_level(paths.FIXTURES / name) for name in
              set(UTTERANCES) | {"assistant_reply.wav"} | {n[0] for n in NOISES.values() if n}}
    all_runs: list[dict] = []
    by_cell: dict[str, dict] = {}
    for c in cs:
        for r in runs_of(c, index, levels):
            all_runs.append(r)
        by_cell[f"{c['slice']}|{c['key']}"] = c
    work = Path(tempfile.mkdtemp(prefix="meerkat-sweep-"))
    t0 = time.monotonic()
    result: dict[str, Any] = {"bench": "meerkat-sweep", "runs": len(all_runs), "cells": len(cs)}
    try:
        firmware = None
        if a.rev:
            firmware = work / "rev"
            firmware.mkdir()
            arch = subprocess.run(["git", "archive", a.rev, "firmware/meerkat_rt"], cwd=paths.REPO, capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "--strip-components=1", "-C", str(firmware)], input=arch, check=True)
            result["rev"] = a.rev
        else:
            head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=paths.REPO, capture_output=True, text=True)
            dirty = subprocess.run(["git", "status", "--porcelain", "--", "firmware"], cwd=paths.REPO, capture_output=True, text=True)
            result["rev"] = head.stdout.strip() + ("+firmware changes" if dirty.stdout.strip() else "")
        runtimes = ["micropython", "cpython"] if a.runtime == "both" else [a.runtime]
        rows_by_rt = {}
        for rt in runtimes:
            log(f"{len(all_runs)} runs in {len(cs)} cells on {rt}")
            runner = Runner(work / rt, rt, firmware)
            rows_by_rt[rt] = run_all(all_runs, runner, a.jobs, log)
        rows = rows_by_rt[runtimes[0]]
        if len(runtimes) == 2:
            diff = _compare(rows_by_rt["micropython"], rows_by_rt["cpython"])
            result["runtimes_identical"] = not diff
            if diff:
                result["runtime_differences"] = diff[:10]
        cpu_s = min(a.cpu_s, 10) if a.quick else a.cpu_s
        if cpu_s and "micropython" in runtimes:
            log(f"CPU: {cpu_s} s of reply, 3 passes with the VAD and 3 without, on the unix port")
            runner = Runner(work / "cpu", "micropython", firmware)
            result["cpu"] = cpu_summary(runner.run(cpu_runs(index, levels, cpu_s), "cpu"))
        grouped: dict[str, list[dict]] = {}
        for r in rows:
            grouped.setdefault(r["id"].rsplit("|", 1)[0], []).append(r)
        agg = [aggregate(c, grouped.get(k, [])) for k, c in by_cell.items()]
        result["summary"] = summary(agg)
        result["cells_detail"] = agg
        result["audio_min"] = round(sum(r["reply_ms"] + r["lead_ms"] for r in all_runs) / 60000, 1)
        result["duration_s"] = round(time.monotonic() - t0, 1)
        if a.out:
            a.out.write_text(json.dumps(dict(result, rows=rows), indent=1) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not a.json:
        print(table(result["cells_detail"], spec))
        print(summary_text(result["summary"]))
        if "cpu" in result:
            print(cpu_text(result["cpu"]))
        if "runtimes_identical" in result:
            print(f"  micropython and cpython decisions identical: {result['runtimes_identical']}")
        print(f"  {result['runs']} runs, {result['audio_min']} min of audio in {result['duration_s']} s")
    print(json.dumps(result, separators=(",", ":")))
    return 0


def _compare(a: list[dict], b: list[dict]) -> list[str]:
    keys = ("detected", "latency_ms", "false_onsets", "cursor_ms", "truth_ms")
    bi = {r["id"]: r for r in b}
    out = []
    for r in a:
        o = bi.get(r["id"])
        if o is None:
            out.append(f"{r['id']}: missing on cpython")
            continue
        for k in keys:
            if r.get(k) != o.get(k):
                out.append(f"{r['id']}: {k} {r.get(k)} vs {o.get(k)}")
    return out


if __name__ == "__main__":
    sys.exit(main())
