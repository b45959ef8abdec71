"""Memory of the firmware on each unix-port image (meerkat-bench's "images" section): where the
package's code lives decides whether a WROOM's 110 KB heap is enough.

For each image (default: stock, files32, frozen64, frozen32; see meerkat_tools.image):
  import cost        heap taken by importing every module (imports.unix on that image): the
                     whole code on a files image, only the live objects (module dicts,
                     functions, classes) on a frozen one
  smallest heap      the smallest -X heapsize at which the full demo completes (bisection in
                     2K steps by default; demo.min_heap)
  at 110K            one demo run at a WROOM's heap, with the heap probe: completes or not,
                     and its low-water (free heap after a collection at the busiest moment)
and the flash the frozen package adds: frozen_content.o of frozen32 minus files32 (the same
32-bit build without our package), and the package compiled as -march=xtensawin -O3 .mpy
files, for comparison with an ESP32.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

from .. import image as images
from .. import mpy, paths
from ..sim.runner import firmware_build
from . import demo, imports

DEFAULT = ("stock", "files32", "frozen64", "frozen32")
DEVICE_HEAP = "110K"
V2_TOO = ("stock", "frozen32")  # images whose demo heap is searched on protocol v2 as well (2 min each)


def device_import_bytes(imports: dict, surface: str) -> int | None:
    """What a device on one surface imports: every module but the other surface's backend and
    the trace (loaded only with trace_ms)."""
    mods = imports.get("modules") or []
    if not mods:
        return None
    other = "meerkat_rt.v2" if surface == "live" else "meerkat_rt.live"
    return sum(m["bytes"] for m in mods if not (m["module"] == other or m["module"].startswith(other + "."))
               and m["module"] != "meerkat_rt.trace")


def _describe(img: mpy.Image) -> dict:
    proc = subprocess.run([img.binary, "-c", "import sys; print(sys.version)"], capture_output=True, text=True, timeout=20)
    return {
        "bits": img.bits,
        "arch": img.arch,
        "package": "frozen" if img.frozen else ".mpy files",
        "micropython": proc.stdout.strip(),
    }


def measure_one(img: mpy.Image, work: Path, heap_range: tuple[int, int, int], log: Callable[[str], None]) -> dict:
    row = _describe(img)
    work.mkdir(parents=True, exist_ok=True)
    fw = None if img.frozen else mpy.compile_firmware(work / "mpy", img.arch, cross=img.mpy_cross)
    log(f"images: {img.name}: import cost")
    imp = imports.unix(fw, work, sim_build=firmware_build(img), image=img)
    row["imports"] = imp
    row["import_bytes"] = imp.get("total_bytes")
    lo, hi, step = heap_range
    log(f"images: {img.name}: smallest heap for the demo ({lo}K..{hi}K, step {step}K)")
    search = demo.min_heap(lo, hi, step, log=log, image=img)
    row["min_heap"] = search
    row["min_heap_k"] = search["min_heap_k"]
    if img.name in V2_TOO:
        log(f"images: {img.name}: smallest heap for the demo on protocol v2")
        v2 = demo.min_heap(lo, hi, step, log=log, image=img, surface="v2")
        row["min_heap_v2"] = v2
        row["min_heap_v2_k"] = v2["min_heap_k"]
    log(f"images: {img.name}: demo at {DEVICE_HEAP} with the heap probe")
    r = demo.run(DEVICE_HEAP, probe=True, record=False, sample_heap=True, image=img)
    low = r.get("heap_low_free") or {}
    row["at_110K"] = {
        "completed": r["completed"],
        # only for a completed run: a failed one stopped before it reached its peak
        "low_water_free": low.get("free") if r["completed"] else None,
        "peak_used": low.get("used") if r["completed"] else None,
        "channel_heap_low": (r.get("summary") or {}).get("heap_low"),
        **({"failure": r["failure"]} if "failure" in r else {}),
    }
    return row


def xtensawin_mpy_bytes(work: Path) -> dict:
    """The package as an ESP32 gets it from `meerkat-deploy --mpy`, optimised like the frozen
    image (-O3): .mpy bytes per module and in total (installed mpy-cross)."""
    out = work / "xtensawin"
    total = 0
    per: dict[str, int] = {}
    for src in mpy.firmware_sources():
        dest = out / src.relative_to(paths.FIRMWARE).with_suffix(".mpy")
        dest.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [mpy.executable("mpy-cross"), "-O3", "-march=xtensawin", "-o", str(dest), str(src)], check=True, capture_output=True
        )
        per[str(src.relative_to(paths.FIRMWARE_PACKAGE))] = dest.stat().st_size
        total += dest.stat().st_size
    shutil.rmtree(out, ignore_errors=True)
    return {"total_bytes": total, "modules": per}


def flash(built: dict[str, dict]) -> dict:
    """Flash the frozen package takes: frozen32's frozen content minus files32's (same
    toolchain, same port modules; the difference is meerkat_rt, its qstrs included)."""
    f32 = ((built.get("frozen32") or {}).get("frozen_content") or {}).get("flash_bytes")
    base = ((built.get("files32") or {}).get("frozen_content") or {}).get("flash_bytes")
    out: dict[str, Any] = {"frozen32_frozen_content_bytes": f32, "files32_frozen_content_bytes": base}
    if f32 and base:
        out["package_bytes_32bit"] = f32 - base
    return out


def measure(
    names: tuple[str, ...] | list[str],
    work: Path,
    heap_range: tuple[int, int, int],
    log: Callable[[str], None],
    quiet: bool = False,
    source: str | None = None,
) -> dict:
    """Every figure for every image; an image that cannot be built here is reported skipped
    (with why), never fatal. quiet: no build progress on stderr (--json)."""
    out: dict[str, Any] = {"heap_range": list(heap_range), "images": {}}
    built: dict[str, dict] = {}
    progress = images.Progress(quiet=quiet)
    for name in names:
        try:
            if name == images.STOCK:
                img = mpy.stock()
            else:
                log(f"images: {name}: meerkat-image (cached after the first build)")
                b = images.build(name, source=source, progress=progress)
                img, built[name] = b.image, b.info
        except images.ImageError as exc:
            out["images"][name] = {"skipped": str(exc).splitlines()[0]}
            continue
        row = measure_one(img, work / name, heap_range, log)
        if name in built:
            row["frozen_content"] = built[name].get("frozen_content")
        out["images"][name] = row
    out["flash"] = flash(built)
    out["flash"]["xtensawin_mpy"] = xtensawin_mpy_bytes(work)
    return out


def table_lines(section: dict | None) -> list[str]:
    """The IMAGES block of meerkat-bench's table (also the README's memory table)."""
    if not section:
        return []
    if "skipped" in section:
        return ["IMAGES", f"  skipped ({section['skipped']})", ""]
    lo, hi, step = section.get("heap_range", [None, None, None])
    out = [f"IMAGES  the demo and the package's imports on each unix-port image (heap search {lo}K..{hi}K, step {step}K)"]
    rows = []
    for name, r in section.get("images", {}).items():
        if "skipped" in r:
            rows.append([name, "-", "-", "-", "-", "skipped: " + r["skipped"][:70]])
            continue
        at = r.get("at_110K") or {}
        if at.get("completed"):
            verdict = f"completes, low-water {at.get('low_water_free')} B free"
        else:
            verdict = "fails: " + str(at.get("failure", "?"))[:70]
        imp = r.get("import_bytes")
        live, v2 = (device_import_bytes(r.get("imports") or {}, s) for s in ("live", "v2"))
        rows.append(
            [
                name,
                f"{r['bits']}-bit",
                r["package"],
                f"{imp / 1024:.1f} KB" if imp else "-",
                f"{live / 1024:.1f} / {v2 / 1024:.1f} KB" if live and v2 else "-",
                (f"{r['min_heap_k']}K" if r.get("min_heap_k") else "-")
                + (" / " + (f"{r['min_heap_v2_k']}K" if r.get("min_heap_v2_k") else "-") if "min_heap_v2" in r else ""),
                verdict,
            ]
        )
    headers = ["image", "word", "package", "import cost (all)", "device: live / v2", "smallest demo heap: live / v2",
               f"demo at {DEVICE_HEAP} (live)"]
    widths = [max(len(h), *(len(str(x[i])) for x in rows)) if rows else len(h) for i, h in enumerate(headers)]
    for cells in [headers, ["-" * w for w in widths], *rows]:
        out.append("  " + "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip())
    fl = section.get("flash") or {}
    if fl.get("package_bytes_32bit"):
        out.append(
            f"  flash taken by the frozen package: {fl['package_bytes_32bit'] / 1024:.1f} KB on a 32-bit build "
            f"(frozen_content.o, frozen32 minus files32)"
        )
    x = fl.get("xtensawin_mpy") or {}
    if x.get("total_bytes"):
        out.append(f"  the package as -O3 -march=xtensawin .mpy files: {x['total_bytes'] / 1024:.1f} KB")
    out.append("")
    return out
