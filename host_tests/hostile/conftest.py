import sys
from pathlib import Path

# The scripted server and the rig (this directory), and the end-to-end harness's helpers
# (reference_image, played_prefix_ms, wav_pcm).
HERE = Path(__file__).resolve().parent
for extra in (HERE, HERE.parent / "e2e"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))
