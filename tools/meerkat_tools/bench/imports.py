"""Import cost of each firmware module: on the unix port (64-bit, the firmware as x64 .mpy) and,
when node and npm are there, on the MicroPython WebAssembly port (32-bit, like the ESP32; the
firmware as bytecode .mpy, so `fast` runs its pure-Python twins instead of viper).

The load order is the app's: the package, `app` and what it imports at module level, then the
modules the app imports lazily (board, config, playback, ring, vad, capture, tls, bootstrap,
wifi), then anything else; every module comes after the modules it imports at module level, so
each figure is the module alone.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
from pathlib import Path

from .. import mpy, paths

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "mp_imports.py"
NODE_SCRIPT = HERE / "wasm_imports.mjs"
WASM_PACKAGE = "@micropython/micropython-webassembly-pyscript"
WASM_VERSIONS = ("1.29.0-6", "latest")  # pinned first (the unix port's version), then latest

ROOTS = ("app", "board", "config", "playback", "ring", "vad", "capture", "channel", "tls", "bootstrap", "wifi")
CPYTHON_ONLY = ("_host",)

# Minimal stand-ins for modules a port lacks, loaded before the measurement and not counted:
# the WebAssembly port has no socket/tls, neither port has network (wifi imports it).
STUBS = {
    "socket": "AF_INET = 2\nSOCK_STREAM = 1\n\n\ndef getaddrinfo(*a):\n    raise OSError(113)\n\n\n"
    "class socket:\n    def __init__(self, *a):\n        raise OSError(97)\n",
    "network": "STA_IF = 0\nAP_IF = 1\nSTAT_GOT_IP = 1010\n\n\nclass WLAN:\n    def __init__(self, i=0):\n        pass\n",
    "tls": "PROTOCOL_TLS_CLIENT = 0\nCERT_NONE = 0\nCERT_REQUIRED = 2\n\n\nclass SSLContext:\n"
    "    def __init__(self, *a):\n        self.verify_mode = 0\n",
}


def module_deps(source: str, package: str = "") -> list[str]:
    """Modules of the firmware package a module imports at module level (not inside
    functions), as names relative to meerkat_rt ("ws", "v2.protocol"); `package` is the
    module's own subpackage ("" at the top, "v2" for v2/protocol.py or v2/__init__.py).
    `from .x import y` gives both x and x.y: the caller keeps the ones that are modules."""
    deps: list[str] = []
    here = package.split(".") if package else []

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.ImportFrom) and node.level >= 1:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else list(here)
                if node.module:
                    target = base + node.module.split(".")
                    deps.append(".".join(target))
                    deps.extend(".".join(target + [a.name]) for a in node.names)
                else:
                    deps.extend(".".join(base + [a.name]) for a in node.names)
            elif isinstance(node, (ast.Try, ast.If)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for h in getattr(node, "handlers", []):
                    visit(h.body)
                visit(getattr(node, "finalbody", []))

    visit(ast.parse(source).body)
    return list(dict.fromkeys(deps))


def firmware_module_names() -> dict[str, Path]:
    """Every module of the package by its name relative to meerkat_rt ("app", "v2",
    "v2.protocol"), subpackages included; the package's own __init__ is left out."""
    out: dict[str, Path] = {}
    for p in mpy.firmware_sources():
        parts = list(p.relative_to(paths.FIRMWARE_PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            out[".".join(parts)] = p
    return out


def _package_of(name: str, source: Path) -> str:
    # A subpackage's __init__ is its own package; a module's package is its parent.
    return name if source.name == "__init__.py" else name.rpartition(".")[0]


def load_order(exclude: tuple[str, ...] = ()) -> list[str]:
    """Firmware modules (names relative to meerkat_rt) in the app's load order, dependencies
    first (a subpackage before its modules)."""
    sources = firmware_module_names()
    skip = set(CPYTHON_ONLY) | set(exclude)
    deps = {n: module_deps(p.read_text(), _package_of(n, p)) for n, p in sources.items()}
    out: list[str] = []

    def visit(n: str, seen: tuple = ()) -> None:
        if n in out or n in skip or n not in deps or n in seen:
            return
        parent = n.rpartition(".")[0]
        if parent:
            visit(parent, seen + (n,))
        for d in deps[n]:
            visit(d, seen + (n,))
        out.append(n)

    for root in [r for r in ROOTS if r in deps] + sorted(deps):
        visit(root)
    return out


def _mpy_name(path: Path, root: Path) -> str:
    """meerkat_rt/v2/protocol.mpy -> "v2.protocol"; meerkat_rt/__init__.mpy -> "__init__"."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts == ["__init__"]:
        return "__init__"
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _mpy_sizes(pkg_dir: Path) -> dict[str, int]:
    return {_mpy_name(p, pkg_dir): p.stat().st_size for p in pkg_dir.rglob("*.mpy")}


def _short(module: str) -> str:
    """meerkat_rt.v2.protocol -> v2.protocol; meerkat_rt -> __init__."""
    return module.split(".", 1)[1] if "." in module else "__init__"


def _rows(result: dict, stubs: list[str]) -> dict:
    rows = [r for r in result["modules"] if r[0] not in stubs]
    mods = [{"module": r[0], "bytes": r[1], **({"error": r[2]} if r[2] else {})} for r in rows]
    return {
        "port": result.get("port"),
        "micropython": result.get("version"),
        "word_bits": result.get("word_bits"),
        "modules": mods,
        "total_bytes": sum(m["bytes"] or 0 for m in mods),
    }


def _write_stubs(where: Path, names: list[str]) -> None:
    where.mkdir(parents=True, exist_ok=True)
    for n in names:
        (where / f"{n}.py").write_text(STUBS[n])


HARNESS = ("simworld", "machine")  # the simulator's own modules in the demo's heap


def unix(
    build: Path | None, work: Path, sim_build: Path | None = None, timeout: float = 60, image: mpy.Image | None = None
) -> dict:
    """Import costs on the unix port (firmware build = .mpy from compile_firmware for the
    image's architecture; None on an image with the package frozen in, which imports it from
    .frozen); with sim_build (the simulator's build: fakes and main program), also the
    simulator's modules that share the demo's heap, reported apart under "harness"."""
    order_names = load_order(exclude=("_fast_py",))
    stubs = ["network"]
    stub_dir = work / "stubs-unix"
    _write_stubs(stub_dir, stubs)
    harness = list(HARNESS) if sim_build is not None else []
    order = stubs + ["meerkat_rt"] + [f"meerkat_rt.{n}" for n in order_names] + harness
    order_file = work / "order-unix.json"
    order_file.write_text(json.dumps(order))
    search: list[Path | str] = [stub_dir] if build is None else [build, stub_dir]
    if sim_build is not None:
        search.append(sim_build)
    proc = mpy.run(SCRIPT, [str(order_file)], search_path=search, heap="1M", timeout=timeout, cwd=work, image=image)
    line = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode or not line:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    out = _rows(json.loads(line[-1]), stubs + harness)
    if harness:
        rows = {r[0]: r for r in json.loads(line[-1])["modules"]}
        out["harness"] = [{"module": h, "bytes": rows[h][1], **({"error": rows[h][2]} if rows[h][2] else {})} for h in harness]
    if build is None:
        out["mpy"] = "frozen into the image (MPY_CROSS_FLAGS=-march=%s)" % (image.arch if image else "?")
        return out
    sizes = _mpy_sizes(build / "meerkat_rt")
    for m in out["modules"]:
        m["mpy_bytes"] = sizes.get(_short(m["module"]))
    arch = image.arch if image else "x64"
    out["mpy"] = f"{arch} (viper native code for _fast_viper)"
    return out


# ---------------------------------------------------------------------- WebAssembly (32-bit)


def wasm(work: Path, timeout: float = 180) -> dict:
    """Import costs on the MicroPython WebAssembly port under node; {"skipped": why} when node,
    npm or the package is unavailable. Never raises."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return {"skipped": "node/npm not found"}
    try:
        ver = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
        if int(ver.lstrip("v").split(".")[0]) < 18:
            return {"skipped": f"node {ver} is too old (18+ needed)"}
        pkg_root = work / "wasm-npm"
        pkg_root.mkdir(parents=True, exist_ok=True)
        installed = None
        why = ""
        for version in WASM_VERSIONS:
            proc = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--silent", "--fetch-retries=1", "--fetch-timeout=20000"]
                + ["--prefix", str(pkg_root), f"{WASM_PACKAGE}@{version}"],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            if proc.returncode == 0:
                installed = version
                break
            why = (proc.stderr.strip().splitlines() or ["npm install failed"])[-1]
        pkg = pkg_root / "node_modules" / WASM_PACKAGE
        if installed is None or not (pkg / "micropython.mjs").exists():
            return {"skipped": f"npm install {WASM_PACKAGE} failed: {why}"}
        pkg_version = json.loads((pkg / "package.json").read_text()).get("version", installed)
        # Firmware as bytecode .mpy (no -march): viper cannot run there, fast falls back.
        tree = work / "wasm-fs"
        (tree / "meerkat_rt").mkdir(parents=True, exist_ok=True)
        cross = mpy.executable("mpy-cross")
        order_names = load_order(exclude=("_fast_viper",))
        sources = firmware_module_names()
        for n in ["__init__", *order_names]:
            src = paths.FIRMWARE_PACKAGE / "__init__.py" if n == "__init__" else sources[n]
            dest = tree / "meerkat_rt" / src.relative_to(paths.FIRMWARE_PACKAGE).with_suffix(".mpy")
            dest.parent.mkdir(parents=True, exist_ok=True)
            r = subprocess.run([cross, "-o", str(dest), str(src)], capture_output=True, text=True)
            if r.returncode:
                return {"skipped": f"mpy-cross (bytecode) rejected {src.name}: {r.stderr.strip()[-200:]}"}
        stubs = ["socket", "network", "tls"]
        _write_stubs(tree, stubs)
        order = stubs + ["meerkat_rt"] + [f"meerkat_rt.{n}" for n in order_names]
        (tree / "order.json").write_text(json.dumps(order))
        shutil.copy(SCRIPT, tree / "mp_imports.py")
        proc = subprocess.run(
            [node, str(NODE_SCRIPT), str(pkg / "micropython.mjs"), str(tree), str(4 << 20)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        line = [x for x in proc.stdout.splitlines() if x.startswith("{")]
        if proc.returncode or not line:
            tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
            return {"skipped": "the WebAssembly run failed: " + " | ".join(tail)}
        out = _rows(json.loads(line[-1]), stubs)
        sizes = _mpy_sizes(tree / "meerkat_rt")
        for m in out["modules"]:
            m["mpy_bytes"] = sizes.get(_short(m["module"]))
        out["package"] = f"{WASM_PACKAGE}@{pkg_version}"
        out["node"] = ver
        out["mpy"] = "bytecode (no native code: fast uses _fast_py)"
        return out
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return {"skipped": f"WebAssembly port unavailable: {exc}"}

