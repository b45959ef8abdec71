"""A stand-in board for mpremote: the MicroPython unix port behind a pseudo-terminal.

mpremote talks to it exactly as to a board on a serial port (raw REPL, raw paste, its file
transfer code running on MicroPython). The one difference is the soft reset: the unix port exits
on Ctrl-D in the raw REPL, so the pump restarts it in the same directory, prints "soft reboot"
and puts it back into the raw REPL, which is what a board does. The device's filesystem is the
directory `root` (its working directory).
"""

from __future__ import annotations

import os
import select
import subprocess
import threading
import tty
from pathlib import Path

from meerkat_tools import mpy


class FakeBoard:
    def __init__(self, root: Path):
        self.root = root
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self.boots = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._child = self._spawn()
        self._threads = [
            threading.Thread(target=self._to_board, daemon=True),
            threading.Thread(target=self._from_board, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _spawn(self) -> subprocess.Popen:
        self.boots += 1
        return subprocess.Popen(
            [mpy.micropython(), "-i"],
            cwd=self.root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            bufsize=0,
            env={**os.environ, "MICROPYPATH": os.pathsep.join(["lib", ".frozen"])},
        )

    def _to_board(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            with self._lock:
                try:
                    self._child.stdin.write(data)  # type: ignore[union-attr]
                except (BrokenPipeError, ValueError):
                    pass  # between a soft reset and the restart: mpremote waits for the banner

    def _from_board(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                child = self._child
            data = os.read(child.stdout.fileno(), 4096)  # type: ignore[union-attr]
            if data:
                os.write(self.master, data)
                continue
            child.wait()
            if self._stop.is_set():
                return
            with self._lock:  # soft reset: reboot into the raw REPL, as a board does
                self._child = self._spawn()
                self._child.stdin.write(b"\x01")  # type: ignore[union-attr]
            os.write(self.master, b"MPY: soft reboot\r\n")

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            child = self._child
        child.kill()
        child.wait()
        for t in self._threads:
            t.join(timeout=5)
        os.close(self.master)
        os.close(self.slave)

    def __enter__(self) -> FakeBoard:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
