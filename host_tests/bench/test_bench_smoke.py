"""meerkat-bench --quick as a smoke test: it runs from the install, exits 0 and prints one JSON
line with every section. No thresholds: benchmark figures are printed, never asserted
(DESIGN.md section 7.6); the full run and its method are in docs/benchmarks.md."""

from __future__ import annotations

import json
import subprocess
import sys

from meerkat_tools import paths

SECTIONS = ("machine", "peers", "uplink", "downlink", "wire", "memory", "latency", "targets")
TARGET_IDS = {"zero_alloc", "uplink_cpu_ratio", "demo_at_110K", "truncate_within_frame", "wire_ratio", "wire_ratio_live"}


def test_quick_run_prints_the_json_line(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "meerkat_tools.bench", "--quick", "--json", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=paths.REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout[-2000:]  # --json: the JSON line only
    result = json.loads(lines[0])
    assert result["mode"] == "quick"
    for key in SECTIONS:
        assert key in result, key
    for ms in ("20", "40", "100"):
        for impl in ("meerkat", "meerkat-live", "naive"):
            row = result["uplink"]["results"][ms][impl]
            assert "cpu_us_per_audio_s" in row and "alloc_bytes_per_frame" in row, row
        assert "ratio" in result["wire"][ms]
    for ms in map(str, result["downlink"]["chunks_ms"]):
        for impl in ("meerkat", "meerkat-live", "naive"):
            row = result["downlink"]["results"][ms][impl]
            if impl == "naive" and "error" in row:
                continue  # a whole 1 s message does not fit the naive path's heap: reported
            assert "cpu_us_per_audio_s" in row and "alloc_bytes_per_message" in row, row
    assert result["memory"]["imports_unix"]["modules"]
    assert {t["id"] for t in result["targets"]} == TARGET_IDS
    assert result["images"] == {"skipped": "quick mode"}  # image builds and demo searches: full runs only
    assert json.loads(out.read_text()) == result
