"""meerkat-sim, the README's main job, end to end: the simulated board on the MicroPython unix
port against the bundled development server; one spoken turn, the reply played into a WAV, a
barge-in with truncate, a clean close, the summary line."""

from __future__ import annotations

import json
import subprocess
import sys
import wave

import pytest


@pytest.mark.parametrize("surface", ["auto", "v2"])
def test_demo_runs_end_to_end(tmp_path, surface):
    # auto: the dev server speaks the live surface, as today's Meerkat; v2: protocol v2 (with the
    # dev server's item_id extension, without which no truncate could be sent).
    out = tmp_path / "speaker.wav"
    proc = subprocess.run(
        [sys.executable, "-m", "meerkat_tools.sim", "--speaker-out", str(out), "--surface", surface],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,  # runs from anywhere
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["state"] == "closed" and summary["exit"] == "close"
    assert summary["barge_ins"] == 1 and summary["reconnects"] == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    (truncate,) = summary["truncates"]
    assert truncate["item_id"].startswith("item_") and truncate["audio_played_ms"] > 0
    assert summary["events"]["turn_completed"] >= 1 and summary["events"]["assistant_transcript_truncated"] == 1
    assert summary["frames_captured"] == (
        summary["frames_sent"] + summary["frames_dropped"] + summary["frames_discarded"] + summary["frames_pending"]
    )
    assert "BARGE-IN" in proc.stdout and "user (transcribed)" in proc.stdout
    assert ("(live surface)" if surface == "auto" else "(protocol v2, item_id extension on)") in proc.stdout
    with wave.open(str(out)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24000, 1, 2)
        frames = w.readframes(w.getnframes())
    assert len(frames) > 48 * 5000 and frames.count(0) < len(frames)  # seconds of real audio


def test_bad_arguments_fail_clearly(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "meerkat_tools.sim", "--mic", str(tmp_path / "missing.wav")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "no such WAV file" in (proc.stdout + proc.stderr)
