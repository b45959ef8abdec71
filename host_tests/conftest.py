"""Shared pytest setup: firmware and the portable test modules importable under CPython, and a
session-wide .mpy build of the firmware for runs on the MicroPython unix port."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for extra in (REPO / "firmware", HERE / "portable", REPO / "tools"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from meerkat_tools import mpy  # noqa: E402


@pytest.fixture(scope="session")
def mpy_build(tmp_path_factory) -> Path:
    """The firmware compiled to .mpy for the unix port (native code for x64), as a device gets
    it from `meerkat-deploy --mpy`. Put on MICROPYPATH before the sources would be."""
    return mpy.compile_firmware(tmp_path_factory.mktemp("mpy-x64"))
