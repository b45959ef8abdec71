import sys
from pathlib import Path

# The end-to-end harness (the dev server in-process, the simulated board on frozen32 at 110K).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
