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


def module_deps(source: str) -> list[str]:
    """Sibling modules a firmware module imports at module level (not inside functions)."""
    deps: list[str] = []

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    deps.append(node.module.split(".")[0])
                else:
                    deps.extend(a.name for a in node.names)
            elif isinstance(node, (ast.Try, ast.If)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for h in getattr(node, "handlers", []):
                    visit(h.body)
                visit(getattr(node, "finalbody", []))

    visit(ast.parse(source).body)
    return list(dict.fromkeys(deps))


def load_order(exclude: tuple[str, ...] = ()) -> list[str]:
    """Firmware modules (short names) in the app's load order, dependencies first."""
    names = sorted(p.stem for p in mpy.firmware_modules() if p.stem != "__init__")
    skip = set(CPYTHON_ONLY) | set(exclude)
    deps = {n: module_deps((paths.FIRMWARE_PACKAGE / f"{n}.py").read_text()) for n in names}
    out: list[str] = []

    def visit(n: str, seen: tuple = ()) -> None:
        if n in out or n in skip or n not in deps or n in seen:
            return
        for d in deps[n]:
            visit(d, seen + (n,))
        out.append(n)

    for root in [r for r in ROOTS if r in deps] + names:
        visit(root)
    return out


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


def unix(build: Path, work: Path, sim_build: Path | None = None, timeout: float = 60) -> dict:
    """Import costs on the unix port (firmware build = x64 .mpy from compile_firmware); with
    sim_build (the simulator's build: fakes and main program), also the simulator's modules
    that share the demo's heap, reported apart under "harness"."""
    order_names = load_order(exclude=("_fast_py",))
    stubs = ["network"]
    stub_dir = work / "stubs-unix"
    _write_stubs(stub_dir, stubs)
    harness = list(HARNESS) if sim_build is not None else []
    order = stubs + ["meerkat_rt"] + [f"meerkat_rt.{n}" for n in order_names] + harness
    order_file = work / "order-unix.json"
    order_file.write_text(json.dumps(order))
    search: list[Path | str] = [build, stub_dir]
    if sim_build is not None:
        search.append(sim_build)
    proc = mpy.run(SCRIPT, [str(order_file)], search_path=search, heap="1M", timeout=timeout, cwd=work)
    line = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode or not line:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    out = _rows(json.loads(line[-1]), stubs + harness)
    if harness:
        rows = {r[0]: r for r in json.loads(line[-1])["modules"]}
        out["harness"] = [{"module": h, "bytes": rows[h][1], **({"error": rows[h][2]} if rows[h][2] else {})} for h in harness]
    sizes = {p.stem: p.stat().st_size for p in (build / "meerkat_rt").glob("*.mpy")}
    for m in out["modules"]:
        m["mpy_bytes"] = sizes.get(m["module"].split(".")[-1] if "." in m["module"] else "__init__")
    out["mpy"] = "x64 (viper native code for _fast_viper)"
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
        for n in ["__init__", *order_names]:
            src = paths.FIRMWARE_PACKAGE / f"{n}.py"
            r = subprocess.run([cross, "-o", str(tree / "meerkat_rt" / f"{n}.mpy"), str(src)], capture_output=True, text=True)
            if r.returncode:
                return {"skipped": f"mpy-cross (bytecode) rejected {n}.py: {r.stderr.strip()[-200:]}"}
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
        sizes = {p.stem: p.stat().st_size for p in (tree / "meerkat_rt").glob("*.mpy")}
        for m in out["modules"]:
            m["mpy_bytes"] = sizes.get(m["module"].split(".")[-1] if "." in m["module"] else "__init__")
        out["package"] = f"{WASM_PACKAGE}@{pkg_version}"
        out["node"] = ver
        out["mpy"] = "bytecode (no native code: fast uses _fast_py)"
        return out
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return {"skipped": f"WebAssembly port unavailable: {exc}"}

