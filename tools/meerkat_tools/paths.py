"""Where the repository's parts are. The tools run from an editable install (pip install -e .),
so the firmware, board files and fixtures are found next to this package."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parents[1]
FIRMWARE = REPO / "firmware"
FIRMWARE_PACKAGE = FIRMWARE / "meerkat_rt"
BOARDS = REPO / "boards"
FAKES = PACKAGE / "fakes"
FIXTURES = PACKAGE / "fixtures"


def require_checkout() -> None:
    """Fail clearly when the tools were installed without the repository beside them."""
    if not FIRMWARE_PACKAGE.is_dir():
        raise SystemExit(
            f"meerkat tools: firmware not found at {FIRMWARE_PACKAGE}; install with "
            "'pip install -e .' from a checkout of the repository"
        )
