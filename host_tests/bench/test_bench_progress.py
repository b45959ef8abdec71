"""meerkat-bench says on stderr what step it is at and how far it has got; with --json it says
nothing there (stdout is the JSON line alone)."""

from __future__ import annotations

import re
import subprocess
import sys

from meerkat_tools import paths


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meerkat_tools.bench", "--quick", *args],
                          capture_output=True, text=True, timeout=300, cwd=paths.REPO)


def test_progress_on_stderr_names_each_step_and_how_far():
    proc = _bench()
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    steps = [m.groups() for m in (re.search(r"\[step (\d+)/(\d+)\] (.+)", l) for l in lines) if m]
    assert [int(k) for k, _, _ in steps] == list(range(1, len(steps) + 1))
    assert {int(n) for _, n, _ in steps} == {len(steps)} and len(steps) == 4  # quick: compile, up, down, memory
    assert any(re.search(r"uplink: naive \(3/3\)", l) for l in lines)
    assert any(re.search(r"downlink: meerkat \(1/3\)", l) for l in lines)
    assert all(re.match(r"meerkat-bench +\d+\.\ds  ", l) for l in lines), lines  # each line with its time
    assert re.search(r"s  done in \d+ s$", lines[-1]), lines[-1]


def test_json_mode_is_silent_on_stderr():
    proc = _bench("--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == ""
    assert len([l for l in proc.stdout.splitlines() if l.strip()]) == 1
