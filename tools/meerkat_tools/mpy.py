"""Running firmware code on the MicroPython unix port: find the `micropython` binary, compile the
package to .mpy, and run scripts with a controlled MICROPYPATH and heap size."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import paths

DEFAULT_HEAP = "110K"


def executable(name: str) -> str:
    """An executable installed next to the running Python (the venv), or on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found; install the project with pip install -e '.[dev]'")
    return found


def micropython() -> str:
    return executable("micropython")


def firmware_modules() -> list[Path]:
    return sorted(paths.FIRMWARE_PACKAGE.glob("*.py"))


def compile_modules(sources: list[Path], out: Path, arch: str = "x64", optimise: int = 0) -> Path:
    """Compile each source to out/<stem>.mpy with mpy-cross (native code for `arch`).

    Importing .mpy skips the compiler, whose transient parse tree would not fit beside a big
    module in a 110 KB heap; it is also what a device gets from `meerkat-deploy --mpy`."""
    out.mkdir(parents=True, exist_ok=True)
    cross = executable("mpy-cross")
    for src in sources:
        cmd = [cross, f"-march={arch}", "-o", str(out / (src.stem + ".mpy")), str(src)]
        if optimise:
            cmd.insert(1, f"-O{optimise}")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"mpy-cross rejected {src}:\n{proc.stderr}")
    return out


def compile_firmware(dest: Path, arch: str = "x64", optimise: int = 0) -> Path:
    """Compile firmware/meerkat_rt/*.py into dest/meerkat_rt/*.mpy; returns dest for
    MICROPYPATH."""
    compile_modules(firmware_modules(), dest / "meerkat_rt", arch, optimise)
    return dest


def micropython_env(search_path: list[Path | str]) -> dict[str, str]:
    env = dict(os.environ)
    # MICROPYPATH replaces the default path, so .frozen (asyncio, ...) must be listed.
    env["MICROPYPATH"] = os.pathsep.join([str(p) for p in search_path] + [".frozen"])
    return env


def run(
    script: Path | str,
    args: list[str] | tuple[str, ...] = (),
    search_path: list[Path | str] = (),
    heap: str | None = DEFAULT_HEAP,
    timeout: float = 120,
    cwd: Path | str | None = None,
) -> subprocess.CompletedProcess:
    """Run a script on the unix port and wait for it (bounded by `timeout`)."""
    cmd = [micropython()]
    if heap:
        cmd += ["-X", f"heapsize={heap}"]
    cmd += [str(script), *args]
    return subprocess.run(
        cmd,
        env=micropython_env(list(search_path)),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def popen(
    script: Path | str,
    args: list[str] | tuple[str, ...] = (),
    search_path: list[Path | str] = (),
    heap: str | None = DEFAULT_HEAP,
    cwd: Path | str | None = None,
    module: bool = False,
) -> subprocess.Popen:
    """Start a script (or, with module=True, `-m script` from the search path: precompiled, so
    no compiler heap is needed) on the unix port with stdin/stdout/stderr piped (text mode)."""
    cmd = [micropython()]
    if heap:
        cmd += ["-X", f"heapsize={heap}"]
    cmd += (["-m", str(script)] if module else [str(script)]) + list(args)
    return subprocess.Popen(
        cmd,
        env=micropython_env(list(search_path)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
