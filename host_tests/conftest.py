"""Shared pytest setup: firmware and the portable test modules importable under CPython, and a
session-wide .mpy build of the firmware for runs on the MicroPython unix port."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# tools/meerkat_tools/fakes: the simulated board's modules (machine, network, simworld) and the
# whole-message WebSocket helpers (wsmsg) the tests share on both runtimes.
for extra in (REPO / "firmware", HERE / "portable", REPO / "tools", REPO / "tools" / "meerkat_tools" / "fakes"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from meerkat_tools import mpy  # noqa: E402


@pytest.fixture(autouse=True)
def _firmware_log_restored():
    """Tests that run firmware code in-process (CPython) share meerkat_rt.log's module state: one
    that sets its level or sink (meerkat-deploy's validators log warnings only) must not decide
    what a later test's log capture sees."""
    from meerkat_rt import log

    level, sink = log.level, log.sink
    yield
    log.level, log.sink = level, sink


@pytest.fixture(scope="session")
def mpy_build(tmp_path_factory) -> Path:
    """The firmware compiled to .mpy for the unix port (native code for x64), as a device gets
    it from `meerkat-deploy --mpy`. Put on MICROPYPATH before the sources would be."""
    return mpy.compile_firmware(tmp_path_factory.mktemp("mpy-x64"))


# ---------------------------------------------------------------------- unix-port images
# The simulated board can run on a `meerkat-image` build instead of the stock binary: frozen32
# (32-bit, the package frozen in) is the closest thing to a WROOM this host can run. Images are
# built on first use and cached under build/images/ (about 35 s once, instant afterwards).


def pytest_addoption(parser):
    parser.addoption(
        "--image",
        default="stock",
        help="unix-port image for tests that take the `image` fixture: stock (the installed micropython), "
        "frozen32, frozen64, files32 or files64 (built by meerkat-image on first use)",
    )


def image_or_skip(name: str) -> mpy.Image:
    """The image `name`, built or cached. Skips (with the reason) only when it cannot be built
    on this machine: no 32-bit toolchain, or no MicroPython source beside the checkout; a build
    that fails is a test failure."""
    from meerkat_tools import image as images

    try:
        return images.get(name)
    except (images.ToolchainMissing, images.SourceMissing) as exc:
        pytest.skip(f"image {name} cannot be built here: {exc}")
    except images.ImageError as exc:
        pytest.fail(f"building image {name} failed: {exc}")


@pytest.fixture(scope="session")
def image(request) -> mpy.Image:
    """The image chosen with `pytest --image NAME` (default: the stock binary)."""
    return image_or_skip(request.config.getoption("--image"))


@pytest.fixture(scope="session")
def frozen32() -> mpy.Image:
    """The 32-bit image with meerkat_rt frozen in, built once per run (cached across runs):
    `SimDevice(..., image=frozen32, heap="110K")`."""
    return image_or_skip("frozen32")
