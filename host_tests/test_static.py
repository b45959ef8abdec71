"""Static checks of the firmware: pyright against the MicroPython ESP32 stubs, and mpy-cross for
the ESP32's Xtensa architecture. Each check is also shown to reject bad input, so a green run
means something."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from meerkat_tools import mpy, paths

CONFIG = paths.FIRMWARE / "pyrightconfig.json"


def _pyright(project: Path) -> tuple[int, dict]:
    """Run pyright on a project directory with the MicroPython stubs as typeshed."""
    stubs = sysconfig.get_paths()["purelib"]  # micropython-esp32-stubs installs its .pyi here
    assert Path(stubs, "machine.pyi").exists(), "micropython-esp32-stubs is not installed"
    proc = subprocess.run(
        # --pythonpath: the stubs' top-level modules (machine, time, ...) sit in site-packages.
        [mpy.executable("pyright"), "-p", str(project), "--typeshedpath", stubs,
         "--pythonpath", sys.executable, "--outputjson"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"pyright did not produce JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.returncode, report


def _errors(report: dict) -> list[str]:
    return [
        f"{d['file']}:{d['range']['start']['line'] + 1}: {d['message']}"
        for d in report.get("generalDiagnostics", [])
        if d.get("severity") == "error"
    ]


def test_pyright_accepts_the_firmware():
    code, report = _pyright(CONFIG)
    errors = _errors(report)
    assert code == 0 and not errors, "\n".join(errors)
    assert report["summary"]["filesAnalyzed"] >= len(mpy.firmware_modules()) - 1


def test_pyright_rejects_code_the_board_does_not_have(tmp_path):
    # CPython-only APIs that a careless port would use: they must fail against the ESP32 stubs.
    project = tmp_path / "fw"
    shutil.copytree(paths.FIRMWARE, project, ignore=shutil.ignore_patterns("__pycache__"))
    (project / "meerkat_rt" / "bad.py").write_text(
        "import time\nimport machine\n\n"
        "def f():\n"
        "    t = time.monotonic()  # CPython only; the board has ticks_ms\n"
        "    machine.I2S(0).readexactly(4)  # no such method on the board\n"
        "    return t\n"
    )
    code, report = _pyright(project / "pyrightconfig.json")
    errors = _errors(report)
    assert code != 0
    assert any("monotonic" in e for e in errors), errors
    assert any("readexactly" in e for e in errors), errors


@pytest.mark.parametrize("module", [p.name for p in mpy.firmware_modules()] + ["main.py", "boot.py"])
def test_mpy_cross_compiles_for_xtensawin(module, tmp_path):
    src = paths.FIRMWARE_PACKAGE / module
    if not src.exists():
        src = paths.FIRMWARE / module
    proc = subprocess.run(
        [mpy.executable("mpy-cross"), "-march=xtensawin", "-o", str(tmp_path / "out.mpy"), str(src)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    header = (tmp_path / "out.mpy").read_bytes()[:4]
    assert header[0:1] == b"M"  # .mpy magic; byte 2 carries the native architecture


def test_mpy_cross_rejects_syntax_micropython_lacks(tmp_path):
    src = tmp_path / "bad.py"
    src.write_text("def f(x):\n    match x:\n        case 1:\n            return 1\n")
    compile(src.read_text(), str(src), "exec")  # fine for CPython 3.10+
    proc = subprocess.run(
        [mpy.executable("mpy-cross"), "-march=xtensawin", str(src)], capture_output=True, text=True
    )
    assert proc.returncode != 0 and "SyntaxError" in proc.stderr
