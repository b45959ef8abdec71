"""The firmware's trace lines (meerkat_rt.trace): their format on CPython and on the MicroPython
unix port, the events it keeps and drops, and a sample that allocates nothing on MicroPython."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from meerkat_tools import mpy, paths, timeline

HERE = Path(__file__).resolve().parent
PROBE = HERE / "trace_probe.py"


def _lines(out: str) -> list[str]:
    return [line[5:] for line in out.splitlines() if line.startswith("LINE ")]


def _check(lines: list[str]) -> None:
    assert lines[0] == "~tb 0 20 1"
    sample = lines[1].split()
    assert sample[0] == "~ts" and len(sample) == 2 + len(timeline.SAMPLE_FIELDS)
    values = dict(zip(timeline.SAMPLE_FIELDS, map(int, sample[2:])))
    assert values["mic"] == 1234 and values["spk"] == 321 and values["held"] == 1
    assert values["captured"] == 1000000007 and values["sent"] == 5 and values["discarded"] == 2
    assert values["thr"] > 0 and values["echo"] > 0  # the VAD saw the speaker: an echo estimate
    # The id's space is replaced: lines split on spaces. Text deltas are not traced.
    assert lines[2].split()[2:] == ["barge_in", "vad", "item_1", "2444", "900", "500", "300"]
    assert [l.split()[2] for l in lines[3:]] == ["state", "turn_committed"]
    run = timeline.parse(lines)[0]
    assert run.truncates()[0].cursor_ms == 2444 and run.truncates()[0].true_ms is None


def test_trace_lines_on_cpython():
    env = {"PYTHONPATH": str(paths.FIRMWARE), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, str(PROBE)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    _check(_lines(proc.stdout))


def test_trace_lines_on_micropython_allocate_nothing_per_sample(mpy_build):
    proc = mpy.run(PROBE, search_path=[mpy_build], heap="110K", timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _check(_lines(proc.stdout))
    out = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line.split(" ", 1)[0] in ("ALLOC", "SAMPLES", "BYTES"))
    assert int(out["SAMPLES"]) == 202
    assert int(out["BYTES"]) > 200 * 20  # 201 lines reached the sink
    assert int(out["ALLOC"]) == 0, "a trace sample allocated on the heap"
