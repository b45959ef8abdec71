"""Speech onsets and offsets of WAV files, the ground truth for the VAD tests.

    python -m meerkat_tools.wavinfo                 # the fixtures: print, and rewrite index.json
    python -m meerkat_tools.wavinfo a.wav b.wav     # any 16-bit mono WAVs: print only

Definitions (on 16-bit samples):
  onset_ms   the first sample whose magnitude exceeds ONSET_LEVEL (64, -54 dBFS): where the
             waveform leaves the (dithered) silence the fixtures are padded with;
  offset_ms  just after the last such sample;
  segments   runs of 10 ms windows whose mean magnitude exceeds 2% of the loudest window's,
             joined across gaps shorter than 200 ms: the spoken phrases, [start_ms, end_ms].
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

from .fakes.wavfile import open_wav

from . import paths

ONSET_LEVEL = 64
WINDOW = 240  # 10 ms at 24 kHz
GAP_MS = 200


def analyse(path: Path) -> dict:
    f, rate, channels, bits, nbytes = open_wav(str(path))
    with f:
        data = f.read(nbytes)
    if channels != 1 or bits != 16:
        raise ValueError(f"{path}: need mono 16-bit")
    n = len(data) // 2
    s = struct.unpack("<%dh" % n, data[: 2 * n])
    loud = [i for i, v in enumerate(s) if abs(v) > ONSET_LEVEL]
    per_ms = rate / 1000
    levels = [sum(abs(v) for v in s[i : i + WINDOW]) // WINDOW for i in range(0, n - WINDOW + 1, WINDOW)]
    limit = max(levels) * 0.02 if levels else 0
    segments: list[list[int]] = []
    for i, level in enumerate(levels):
        if level <= limit:
            continue
        start, end = i * 10, (i + 1) * 10
        if segments and start - segments[-1][1] < GAP_MS:
            segments[-1][1] = end
        else:
            segments.append([start, end])
    return {
        "rate": rate,
        "samples": n,
        "duration_ms": round(n / per_ms, 1),
        "onset_ms": round(loud[0] / per_ms, 1) if loud else None,
        "offset_ms": round((loud[-1] + 1) / per_ms, 1) if loud else None,
        "peak": max((abs(v) for v in s), default=0),
        "segments": segments,
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    files = [Path(a) for a in args] or sorted(paths.FIXTURES.glob("*.wav"))
    index = {p.name: analyse(p) for p in files}
    for name, info in index.items():
        print(f"{name}: onset {info['onset_ms']} ms, offset {info['offset_ms']} ms, "
              f"{info['duration_ms']} ms, segments {info['segments']}")
    if not args:
        out = paths.FIXTURES / "index.json"
        lines = [f" {json.dumps(k)}: {json.dumps(index[k], sort_keys=True)}" for k in sorted(index)]
        out.write_text("{\n" + ",\n".join(lines) + "\n}\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
