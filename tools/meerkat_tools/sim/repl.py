"""The simulated board with the live REPL (`meerkat-sim --repl`, and the REPL tests).

The board runs repl_device.py: the firmware as `meerkat_rt.start()` runs it on a board, with
micropython-lib's `aiorepl` reading the board's standard input. On a board `aiorepl` comes from
`mpremote mip install aiorepl`; here it comes from the micropython-lib tree inside the MicroPython
source that `meerkat-image` builds from (the tarball beside the checkout, or its extracted tree
under build/images/), compiled to .mpy for the image like the rest of the board's files. It is
not part of this repository.

ReplSim is a SimDevice whose output is text (log lines, the "--> " prompt, results) rather than
JSON lines: type() sends keystrokes, wait_text() waits for a pattern in what the board printed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import Callable

from .. import image as images
from .. import mpy, paths
from .runner import SimDevice, SimError

REPL_DEVICE = Path(__file__).resolve().parent / "repl_device.py"
AIOREPL_IN_TREE = Path("lib/micropython-lib/micropython/aiorepl/aiorepl.py")
_LOCK = threading.Lock()
_BUILDS: dict[tuple[str, str], Path] = {}


class AioreplMissing(SimError):
    pass


def aiorepl_source(source: str | Path | None = None) -> Path:
    """aiorepl.py from micropython-lib: in an extracted source tree under build/images/ when
    there is one, else taken out of the MicroPython source (tarball or tree) into build/aiorepl/.
    AioreplMissing says what to do when there is no source."""
    for tree in sorted(images.CACHE.glob("*/src")):
        candidate = tree / AIOREPL_IN_TREE
        if candidate.is_file():
            return candidate
    try:
        src = images.find_source(source)
    except images.SourceMissing as exc:
        raise AioreplMissing(
            "the REPL needs micropython-lib's aiorepl (on a board: mpremote mip install aiorepl); the simulator "
            f"takes it from the MicroPython source, and found none:\n{exc}"
        ) from None
    if src.is_dir():
        candidate = src / AIOREPL_IN_TREE
        if not candidate.is_file():
            raise AioreplMissing(f"{src} has no {AIOREPL_IN_TREE} (git -C {src} submodule update --init lib/micropython-lib)")
        return candidate
    dest = paths.REPO / "build" / "aiorepl" / "aiorepl.py"
    if not dest.is_file():
        with tarfile.open(src) as tf:
            member = next((m for m in tf.getmembers() if m.isfile() and m.name.endswith("/" + str(AIOREPL_IN_TREE))), None)
            if member is None:
                raise AioreplMissing(f"{src} holds no {AIOREPL_IN_TREE}")
            data = tf.extractfile(member).read()  # type: ignore[union-attr]
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".partial")
        tmp.write_bytes(data)
        tmp.replace(dest)
    return dest


def repl_build(image: mpy.Image, with_aiorepl: bool = True) -> Path:
    """repl_device and (unless with_aiorepl is False) aiorepl, compiled for the image, once per
    process: the search-path entry that goes beside the simulator's usual build."""
    key = (image.name, "aiorepl" if with_aiorepl else "bare")
    with _LOCK:
        if key not in _BUILDS:
            out = Path(tempfile.mkdtemp(prefix=f"meerkat-sim-repl-{image.name}-"))
            import atexit

            atexit.register(shutil.rmtree, out, True)
            modules = [REPL_DEVICE]
            if with_aiorepl:
                modules.append(aiorepl_source())
            mpy.compile_modules(modules, out, image.arch, cross=image.mpy_cross)
            _BUILDS[key] = out
        return _BUILDS[key]


class ReplSim(SimDevice):
    """A simulated board running meerkat_rt.start() with a REPL on its standard input."""

    def __init__(self, config: dict, world: dict | None = None, heap: str | None = mpy.DEFAULT_HEAP,
                 board: str = "sim", seconds: float = 0, on_text: Callable[[str], None] | None = None,
                 image: str | mpy.Image = "stock", with_aiorepl: bool = True):
        """on_text(chunk): everything the board prints, as it arrives (meerkat-sim --repl
        passes it to the terminal). with_aiorepl False: the board has no aiorepl installed."""
        super().__init__(config, world, "micropython", heap, board, seconds, main=REPL_DEVICE.stem, image=image)
        self.spec["repl"] = True
        self.with_aiorepl = with_aiorepl
        self.on_text = on_text
        self.text = ""

    def start(self) -> "ReplSim":
        self.extra_path = [repl_build(self.resolve_image(), self.with_aiorepl)]
        return super().start()  # type: ignore[return-value]

    def _read_stdout(self) -> None:
        # Chunks, not lines: the prompt "--> " has no newline after it.
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        pending = ""
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError:
                data = b""
            if not data:
                break
            chunk = data.decode("utf-8", "replace")
            with self._cond:
                self.text += chunk
                pending += chunk
                *complete, pending = pending.split("\n")
                for raw in complete:
                    self._line(raw)
                self._cond.notify_all()
            if self.on_text is not None:
                self.on_text(chunk)
        with self._cond:
            if pending:
                self._line(pending)
            self._eof = True
            self._cond.notify_all()

    def _line(self, raw: str) -> None:
        raw = raw.strip()
        line: dict = {"raw": raw}
        at = raw.find("{")  # the summary line, perhaps behind a "--> " prompt
        if at >= 0 and '"summary": ' in raw:
            try:
                parsed = json.loads(raw[at:])
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, dict) and "summary" in parsed:
                line = parsed
                self.summary = parsed["summary"]
                self.exit_reason = parsed.get("exit")
        self.lines.append(line)

    def type(self, text: str) -> None:
        """Keystrokes for the board's REPL (a line needs its "\\n")."""
        if not self.running:
            raise SimError(f"the simulated board is not running; {self.describe_exit()}")
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(text)
        self._proc.stdin.flush()

    def send(self, cmd: str, **fields) -> None:  # the JSON command protocol of device.py
        raise SimError("the REPL board takes keystrokes: use type()")

    def wait_text(self, pattern: str, timeout: float, after: int = 0) -> re.Match:
        """Wait until the regular expression appears in what the board printed (from offset
        `after`); returns the match (its end() is the offset to continue from)."""
        rx = re.compile(pattern)
        return self.wait_for(lambda: rx.search(self.text, after), timeout, f"{pattern!r} from the board")

    def stop(self, timeout: float = 15) -> dict | None:
        """close() at the REPL, then wait for the summary (the process is killed if it hangs)."""
        if self._proc is None:
            return None
        if self.running and self.summary is None:
            try:
                self.type("close()\n")
            except (SimError, OSError):
                pass
        self.wait_for(lambda: self.summary is not None or not self.running, timeout, raise_on_timeout=False)
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
        except OSError:
            pass
        return super().stop(timeout)
