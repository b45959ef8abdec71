"""The 32-bit unix-port image with meerkat_rt frozen in (`meerkat-image frozen32`): what it is,
that the frozen package cannot be shadowed, that a rebuild is a cache hit, and the README's main
job (`meerkat-sim`) on it at a WROOM's 110K heap."""

from __future__ import annotations

import json
import subprocess
import sys

from meerkat_tools import image, mpy

PROBE = (
    "import sys, gc\n"
    "import meerkat_rt\n"
    "from meerkat_rt import app\n"
    "print(sys.maxsize, meerkat_rt.__file__, app.__file__)\n"
)


def test_the_image_is_32_bit_with_the_package_frozen(frozen32, tmp_path):
    assert frozen32.bits == 32 and frozen32.arch == "x86" and frozen32.frozen
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    proc = mpy.run(script, search_path=[], heap="110K", image=frozen32, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    maxsize, pkg, app = proc.stdout.split()
    assert int(maxsize) == 2**31 - 1
    assert pkg == "meerkat_rt/__init__.py" and app == "meerkat_rt/app.py"  # frozen: relative names


def test_firmware_files_on_the_path_do_not_shadow_the_frozen_package(frozen32, tmp_path):
    files = mpy.compile_firmware(tmp_path / "mpy", frozen32.arch, cross=frozen32.mpy_cross)
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    proc = mpy.run(script, search_path=[files], heap="110K", image=frozen32, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[2] == "meerkat_rt/app.py", proc.stdout  # not .../mpy/meerkat_rt/app.mpy


def test_a_second_build_is_a_cache_hit(frozen32):
    again = image.build("frozen32")
    assert again.cached and again.image == frozen32
    assert again.info["key"] == image.cache_key("frozen32", image.find_source())


def test_the_demo_completes_at_110K_on_frozen32(frozen32, tmp_path):
    out = tmp_path / "speaker.wav"
    proc = subprocess.run(
        [sys.executable, "-m", "meerkat_tools.sim", "--image", "frozen32", "--heap", "110K", "--speaker-out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["image"] == "frozen32" and summary["heap"] == "110K"
    assert summary["state"] == "closed" and summary["exit"] == "close"
    assert summary["barge_ins"] == 1 and len(summary["truncates"]) == 1
    assert summary["events"]["turn_completed"] >= 1 and summary["events"]["assistant_transcript_truncated"] == 1
    assert summary["frames_captured"] == (
        summary["frames_sent"] + summary["frames_dropped"] + summary["frames_discarded"] + summary["frames_pending"]
    )
    assert summary["heap_low"] > 0
    assert out.stat().st_size > 48 * 5000  # seconds of played audio
