"""Barge-in correctness cases from meerkat-sweep's matrix, on the MicroPython unix port and on
CPython: the firmware's capture path, VAD and player in virtual time on the simulated board
(tools/meerkat_tools/bench/mp_sweep.py), so a minute of reply takes a second or two.

What is checked is correctness, not speed: an early interruption is caught (within the sweep's
1 s of audio after the true onset, for every utterance of the fixture set), a reply with nobody
interrupting it at -15 dB echo never interrupts itself, the truncate cursor is never above what
the fake speaker really played, and both runtimes take the same decisions at the same block.
The latency figures are meerkat-sweep's to print, not these tests' to assert."""

from __future__ import annotations

import json

import pytest

from meerkat_tools import paths
from meerkat_tools.bench import sweep

INDEX = json.loads((paths.FIXTURES / "index.json").read_text())
LEVELS = {n: sweep.active_level(paths.FIXTURES / n) for n in set(sweep.UTTERANCES) | {"assistant_reply.wav"}}

CELLS = {
    # the first reply after start-up (nothing learnt: the board's -6 dB), 300 ms in
    "early_-15": {"at_ms": 300, "echo_db": -15, "runs": len(sweep.UTTERANCES)},
    "early_-20_dry": {"at_ms": 300, "echo_db": -20, "room": "dry", "runs": len(sweep.UTTERANCES)},
    "mid_-10": {"at_ms": 1500, "echo_db": -10, "runs": len(sweep.UTTERANCES)},
    # nobody interrupts: two minutes of the speech reply and one of the loud tone at -15 dB
    "self_speech": {"at_ms": None, "echo_db": -15, "runs": 2, "reply_s": 60},
    "self_tone": {"at_ms": None, "echo_db": -15, "reply": "tone", "runs": 1, "reply_s": 60},
}


def _runs():
    out = {}
    for name, over in CELLS.items():
        cell = dict(sweep.DEFAULTS, **over)
        cell["slice"] = name
        cell["key"] = json.dumps({a: cell[a] for a in sweep.AXES}, sort_keys=True)
        out[name] = sweep.runs_of(cell, INDEX, LEVELS)
    return out


RUNS = _runs()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """runtime -> cell name -> result rows (one runner process per runtime)."""
    flat = [r for rows in RUNS.values() for r in rows]
    out = {}
    for runtime in ("micropython", "cpython"):
        rows = sweep.Runner(tmp_path_factory.mktemp(runtime), runtime, None).run(flat, "t", timeout=600)
        by_id = {r["id"]: r for r in rows}
        out[runtime] = {name: [by_id[r["id"]] for r in runs] for name, runs in RUNS.items()}
    return out


RUNTIMES = ("micropython", "cpython")


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("cell", ["early_-15", "early_-20_dry", "mid_-10"])
def test_every_interruption_is_caught_and_the_cursor_stays_at_or_below_the_truth(results, runtime, cell):
    for run, r in zip(RUNS[cell], results[runtime][cell]):
        what = (runtime, cell, run["user"], r)
        assert not r.get("error"), what
        assert r["false_onsets"] == [], what  # the reply did not stop itself before the user spoke
        assert r["detected"], what
        assert 0 <= r["latency_ms"], what
        # heard_ms before the 100 ms margin: never more than the samples the speaker clocked out
        assert r["cursor_ms"] <= r["truth_ms"], what
        assert r["silence_ms"] is not None and r["silence_ms"] >= r["latency_ms"], what
        assert r["overruns"] == 0, what


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("cell", ["self_speech", "self_tone"])
def test_a_reply_nobody_interrupts_at_minus_15_db_never_interrupts_itself(results, runtime, cell):
    played = 0
    for r in results[runtime][cell]:
        assert not r.get("error"), r
        assert r["false_onsets"] == [], (runtime, cell, r["false_onsets"])
        played += r["reply_played_ms"]
    assert played >= CELLS[cell]["runs"] * CELLS[cell]["reply_s"] * 1000 - 500, played  # it did play


def test_both_runtimes_take_the_same_decisions(results):
    keys = ("detected", "latency_ms", "false_onsets", "cursor_ms", "truth_ms", "coupling", "lag")
    for cell in CELLS:
        for a, b in zip(results["micropython"][cell], results["cpython"][cell]):
            assert {k: a.get(k) for k in keys} == {k: b.get(k) for k in keys}, (cell, a, b)
