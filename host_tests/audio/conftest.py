"""The audio tests import the scenario modules (scn_*.py) and the fakes (machine, network,
simworld from tools/meerkat_tools/fakes) directly under CPython."""

from __future__ import annotations

import sys
from pathlib import Path

from meerkat_tools import paths

for extra in (Path(__file__).resolve().parent, paths.FAKES):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))
