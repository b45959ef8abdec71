"""meerkat-bench: CPU, allocation, heap and latency figures of the firmware on the MicroPython
unix port, side by side with peers, measured in one run. Prints a table and a final JSON line.

    meerkat-bench                 # everything (a few minutes: peers, demo runs, heap search)
    meerkat-bench --quick         # a few seconds: our path and the naive one, no demo, no peers
    meerkat-bench --json --out bench.json

CPU figures are the host's CPU (time.ticks_us on the unix port) and are meant as ratios between
implementations measured in the same run, not ESP32 microseconds. docs/benchmarks.md has the
method for every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .. import mpy, paths
from . import demo, images, imports, peers, report
from .loopback import LoopbackPeer, check_uplink_stream

HERE = Path(__file__).resolve().parent
UPLINK = HERE / "mp_uplink.py"
DOWNLINK = HERE / "mp_downlink.py"
FRAMES_MS = (20, 40, 100)
CHUNKS_MS = (20, 200, 1000)  # protocol v2 forwards OpenAI's deltas unchanged: 1 s happens
CPU_HEAP = "220K"  # 110wK: the 64-bit unix port's equivalent of a 110 KB ESP32 heap for objects
ALLOC_HEAP = "16M"  # the allocation pass runs with the GC off: room for a peer's garbage
TARGET_WIRE_RATIO = 1.37
TARGET_CPU_RATIO = 10.0
DEVICE_HEAP_K = 110


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.quiet = args.json
        self.work = Path(tempfile.mkdtemp(prefix="meerkat-bench-"))
        self.result: dict[str, Any] = {"bench": "meerkat-bench", "mode": "quick" if args.quick else "full"}
        # Progress on stderr (silent with --json): "[step k/N] name", and within a step how far
        # it has got ("uplink: naive (3/3)"), each line with the time since the start.
        self.t0 = time.monotonic()
        self.steps: list[str] = []
        self.step_no = 0

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(f"meerkat-bench {time.monotonic() - self.t0:6.1f}s  {msg}", file=sys.stderr, flush=True)

    def step(self, name: str) -> None:
        """The start of one of the run's steps (planned in run())."""
        self.step_no += 1
        total = max(len(self.steps), self.step_no)
        self.log(f"[step {self.step_no}/{total}] {name}")

    def plan(self) -> list[str]:
        a = self.args
        if a.images_only:
            return ["images"]
        steps = ["compile the firmware", "peers" if not (a.quick or a.no_peers) else None, "uplink", "downlink",
                 "memory", None if (a.quick or a.no_demo) else "latency", None if (a.quick or a.no_images) else "images"]
        return [x for x in steps if x]

    # ------------------------------------------------------------------ running scripts

    def mp_json(self, script: Path, spec: dict, search: list[Path | str], heap: str, timeout: float) -> list[dict]:
        spec_file = self.work / f"spec-{time.monotonic_ns()}.json"
        spec_file.write_text(json.dumps(spec))
        try:
            proc = mpy.run(script, [str(spec_file)], search_path=search, heap=heap, timeout=timeout, cwd=self.work)
        except subprocess.TimeoutExpired:
            return [{"error": f"timed out after {timeout} s"}]
        rows = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
        if proc.returncode and not rows:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            rows = [{"error": f"exit {proc.returncode}: {tail}"}]
        return rows

    # ------------------------------------------------------------------ parts

    def machine(self) -> dict:
        cpu = ""
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        mp_ver = subprocess.run(
            [mpy.micropython(), "-c", "import sys; print(sys.version)"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        cross = subprocess.run([mpy.executable("mpy-cross"), "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
        commit = None
        try:
            head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10, cwd=paths.REPO)
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--", "firmware"], capture_output=True, text=True, timeout=10, cwd=paths.REPO
            )
            if head.returncode == 0:
                commit = head.stdout.strip() + ("+firmware changes" if dirty.stdout.strip() else "")
        except OSError:
            pass
        return {
            "commit": commit,
            "platform": platform.platform(),
            "cpu": cpu or platform.processor(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "micropython": mp_ver,
            "mpy_cross": cross,
        }

    def uplink(self, sink: LoopbackPeer, build: Path, peer_set: dict[str, peers.Peer]) -> dict:
        a = self.args
        impls: dict[str, list[Path | str]] = {"meerkat": [], "meerkat-live": [], "naive": []}
        for name, p in peer_set.items():
            if p.error is None:
                impls[name] = list(p.path)
        out: dict[str, dict] = {str(ms): {} for ms in FRAMES_MS}
        for i, (name, extra) in enumerate(impls.items(), 1):
            self.log(f"uplink: {name} ({i}/{len(impls)}), {len(FRAMES_MS)} frame sizes x {a.repeats} passes of {a.audio_s} s")
            base = {
                "impl": name,
                "url": sink.url("/sink/"),
                "frames_ms": list(FRAMES_MS),
                "audio_s": a.audio_s,
                "repeats": a.repeats,
                "warmup": 5 if a.quick else 10,
                "alloc_frames": 5 if a.quick else 20,
            }
            cpu = self.mp_json(UPLINK, dict(base, cpu=True, alloc=False, tag="cpu"), [build, *extra], CPU_HEAP, 600)
            alloc = self.mp_json(UPLINK, dict(base, cpu=False, alloc=True, tag="alloc"), [build, *extra], ALLOC_HEAP, 600)
            by_ms: dict[int, dict] = {}
            for tag, rows in (("cpu", cpu), ("alloc", alloc)):
                for row in rows:
                    ms = row.get("frame_ms")
                    if ms is None:  # the process failed before any frame size
                        for m in FRAMES_MS:
                            by_ms.setdefault(m, {}).setdefault("error", f"{tag} pass: {row.get('error')}")
                        continue
                    d = by_ms.setdefault(ms, {})
                    for k, v in row.items():
                        if k == "error":
                            d.setdefault("error", f"{tag} pass: {v}")
                        elif k not in ("impl", "frame_ms", "frames_sent", "spins"):
                            d[k] = v
                    if tag != "cpu" or not row.get("frames_sent"):
                        continue
                    d["frames_sent"] = row["frames_sent"]
                    if "spins" in row:
                        d["spins"] = row["spins"]
                    conn = sink.connection(f"{name}-{ms}-{tag}")
                    if conn is None:
                        continue
                    d["wire_bytes_per_frame"] = round(conn.received / row["frames_sent"], 1)
                    d["wire_ratio"] = round(conn.received / row["frames_sent"] / (ms * 48), 4)
                    check = check_uplink_stream(bytes(conn.head), ms * 48, binary=name == "meerkat-live")
                    d["frames_valid"] = check["ok"]
                    if not check["ok"]:
                        d["frames_problems"] = check["problems"]
            for ms in FRAMES_MS:
                out[str(ms)][name] = by_ms.get(ms, {"error": "no result"})
        # Ratios: ours against the best (lowest CPU) other implementation, per frame size.
        ratios = {}
        for ms in FRAMES_MS:
            row = out[str(ms)]
            ours = row.get("meerkat", {})
            others = {
                n: r["cpu_us_per_audio_s"] for n, r in row.items() if not n.startswith("meerkat") and "cpu_us_per_audio_s" in r and not r.get("error")
            }
            pypi = {n: v for n, v in others.items() if n != "naive"}
            entry: dict[str, Any] = {}
            if "cpu_us_per_audio_s" in ours and others:
                best = min(others, key=lambda n: others[n])
                entry = {
                    "best_peer": best,
                    "best_peer_cpu_us_per_audio_s": others[best],
                    "cpu_ratio": round(others[best] / ours["cpu_us_per_audio_s"], 2),
                }
                if pypi:
                    bp = min(pypi, key=lambda n: pypi[n])
                    entry["best_pypi_client"] = bp
                    entry["cpu_ratio_best_pypi_client"] = round(pypi[bp] / ours["cpu_us_per_audio_s"], 2)
                sends = {
                    n: r["send_us_per_audio_s"] for n, r in row.items() if not n.startswith("meerkat") and "send_us_per_audio_s" in r and not r.get("error")
                }
                if sends and ours.get("send_us_per_audio_s"):
                    bs = min(sends, key=lambda n: sends[n])
                    entry["best_send_path"] = bs
                    entry["send_ratio"] = round(sends[bs] / ours["send_us_per_audio_s"], 2)
                live = row.get("meerkat-live", {})
                if live.get("cpu_us_per_audio_s"):
                    entry["live_cpu_ratio_best_peer"] = round(others[best] / live["cpu_us_per_audio_s"], 2)
                    entry["live_cpu_ratio_v2"] = round(ours["cpu_us_per_audio_s"] / live["cpu_us_per_audio_s"], 2)
            ratios[str(ms)] = entry
        return {"frames_ms": list(FRAMES_MS), "results": out, "ratios": ratios, "heap": {"cpu": CPU_HEAP, "alloc": ALLOC_HEAP}}

    def downlink(self, sink: LoopbackPeer, build: Path) -> dict:
        a = self.args
        out: dict[str, dict] = {str(ms): {} for ms in CHUNKS_MS}
        for i, name in enumerate(("meerkat", "meerkat-live", "naive"), 1):
            self.log(f"downlink: {name} ({i}/3), {len(CHUNKS_MS)} chunk sizes x {a.repeats} passes of {a.audio_s} s")
            base = {
                "impl": name,
                "url": sink.url("/down/"),
                "chunks_ms": list(CHUNKS_MS),
                "audio_s": a.audio_s,
                "repeats": a.repeats,
                "warmup": 3 if a.quick else 5,
                "alloc_messages": 5 if a.quick else 20,
            }
            path = [build, paths.FAKES]  # the naive path's whole-message sink (wsmsg)
            rows = self.mp_json(DOWNLINK, dict(base, cpu=True, alloc=False, tag="cpu"), path, CPU_HEAP, 600)
            rows += self.mp_json(DOWNLINK, dict(base, cpu=False, alloc=True, tag="alloc"), path, ALLOC_HEAP, 600)
            for row in rows:
                ms = row.get("chunk_ms")
                targets = [ms] if ms is not None else list(CHUNKS_MS)
                for m in targets:
                    d = out[str(m)].setdefault(name, {})
                    for k, v in row.items():
                        if k == "error":
                            d.setdefault("error", v)
                        elif k not in ("impl", "chunk_ms"):
                            d[k] = v
        ratios = {}
        for ms in CHUNKS_MS:
            o, n = out[str(ms)].get("meerkat", {}), out[str(ms)].get("naive", {})
            if o.get("cpu_us_per_audio_s") and n.get("cpu_us_per_audio_s"):
                ratios[str(ms)] = round(n["cpu_us_per_audio_s"] / o["cpu_us_per_audio_s"], 2)
            live = out[str(ms)].get("meerkat-live", {})
            if live.get("cpu_us_per_audio_s") and n.get("cpu_us_per_audio_s"):
                ratios[str(ms) + "_live"] = round(n["cpu_us_per_audio_s"] / live["cpu_us_per_audio_s"], 2)
        return {"chunks_ms": list(CHUNKS_MS), "results": out, "cpu_ratio_naive_over_ours": ratios, "heap": {"cpu": CPU_HEAP, "alloc": ALLOC_HEAP}}

    def wire(self, up: dict) -> dict:
        from meerkat_tools.bench.report import envelope_sizes

        out: dict[str, Any] = {}
        sizes = envelope_sizes()
        for ms in FRAMES_MS:
            r = up["results"][str(ms)].get("meerkat", {})
            fb = ms * 48
            expected = sizes["header"](fb) + sizes["prefix"] + fb * 4 // 3 + sizes["suffix"]
            out[str(ms)] = {
                "ratio": r.get("wire_ratio"),
                "bytes_per_frame": r.get("wire_bytes_per_frame"),
                "bytes_per_audio_s": round(r["wire_bytes_per_frame"] * 1000 / ms) if r.get("wire_bytes_per_frame") else None,
                "expected_bytes_per_frame": expected,
                "breakdown": {"ws_header": sizes["header"](fb), "json_prefix": sizes["prefix"], "base64": fb * 4 // 3, "json_suffix": sizes["suffix"]},
            }
            live = up["results"][str(ms)].get("meerkat-live", {})
            live_header = 2 + 4 + (0 if fb < 126 else 2 if fb < 65536 else 8)
            out[str(ms)]["live"] = {
                "ratio": live.get("wire_ratio"),
                "bytes_per_frame": live.get("wire_bytes_per_frame"),
                "expected_bytes_per_frame": live_header + fb,
                "breakdown": {"ws_header": live_header, "pcm": fb},
            }
        out["method"] = (
            "WebSocket frame bytes the loopback peer received per frame / PCM bytes per frame: protocol v2 "
            "(header + JSON envelope + base64), live (header + raw PCM in a binary frame)"
        )
        return out

    def memory(self, build: Path) -> dict:
        a = self.args
        mem: dict[str, Any] = {}
        self.log("memory: import costs (unix port)")
        fakes = mpy.compile_modules(sorted(paths.FAKES.glob("*.py")), self.work / "fakes")  # simworld, machine
        mem["imports_unix"] = imports.unix(build, self.work, sim_build=fakes)
        if a.quick or a.no_wasm:
            mem["imports_wasm"] = {"skipped": "quick mode" if a.quick else "--no-wasm"}
        else:
            self.log("memory: import costs (WebAssembly port, 32-bit)")
            mem["imports_wasm"] = imports.wasm(self.work)
        if a.quick or a.no_demo:
            mem["demo"] = {"skipped": "quick mode" if a.quick else "--no-demo"}
            return mem
        lo, hi, step = a.heap_range
        self.log(f"memory: smallest heap for the full demo ({lo}K..{hi}K, step {step}K)")
        search = demo.min_heap(lo, hi, step, log=self.log)
        mem["min_heap"] = search
        heaps = [f"{DEVICE_HEAP_K}K"]
        if search["min_heap_k"]:
            heaps.append(f"{search['min_heap_k']}K")
        heaps.append(f"{hi}K")
        runs = []
        for i, h in enumerate(dict.fromkeys(heaps), 1):
            self.log(f"memory: demo with the heap probe at {h} ({i}/{len(dict.fromkeys(heaps))})")
            r = demo.run(h, probe=True, record=False, sample_heap=True)
            runs.append(
                {
                    "heap": h,
                    "heap_bytes": _heap_bytes(h),
                    "completed": r["completed"],
                    # only for a completed run: a failed one stopped before it reached its peak
                    "low_water_free": (r.get("heap_low_free") or {}).get("free") if r["completed"] else None,
                    "peak_used": (r.get("heap_low_free") or {}).get("used") if r["completed"] else None,
                    **({"failure": r["failure"]} if "failure" in r else {}),
                    "channel_heap_low": (r.get("summary") or {}).get("heap_low"),
                }
            )
        mem["demo"] = {"runs": runs, "completes_at_110K": bool(runs and runs[0]["completed"])}
        return mem

    def latency(self, mem: dict) -> dict:
        a = self.args
        if a.quick or a.no_demo:
            return {"skipped": "quick mode" if a.quick else "--no-demo"}
        demo_mem = mem.get("demo", {})
        if demo_mem.get("completes_at_110K"):
            heap = f"{DEVICE_HEAP_K}K"
        elif mem.get("min_heap", {}).get("min_heap_k"):
            heap = f"{mem['min_heap']['min_heap_k'] + 2 * a.heap_range[2]}K"
        else:
            heap = f"{a.heap_range[1]}K"
        runs = []
        for i in range(a.latency_runs):
            self.log(f"latency: demo run {i + 1}/{a.latency_runs} at {heap}")
            r = demo.run(heap, probe=True, record=True, sample_heap=False)
            r.pop("summary", None)
            runs.append(r)
        ok = [r for r in runs if r["completed"]]
        out: dict[str, Any] = {"heap": heap, "runs": len(runs), "completed_runs": len(ok), "frame_ms": 40}
        if not ok:
            out["error"] = runs[-1].get("failure", "no run completed") if runs else "no run"
            return out

        def med(path: tuple[str, ...]) -> Any:
            vals = []
            for r in ok:
                v: Any = r
                for k in path:
                    v = v.get(k) if isinstance(v, dict) else None
                if isinstance(v, (int, float)):
                    vals.append(v)
            if not vals:
                return None
            vals.sort()
            return {"median": vals[len(vals) // 2], "min": vals[0], "max": vals[-1], "n": len(vals)}

        out["capture_to_server_ms"] = ok[0].get("capture_to_server_ms")
        if len(ok) > 1:
            out["capture_to_server_ms_median_per_run"] = [r.get("capture_to_server_ms", {}).get("median") for r in ok if r.get("capture_to_server_ms")]
        for key in (
            "onset_to_vad_decision_ms",
            "vad_decision_to_interrupt_at_server_ms",
            "vad_decision_to_truncate_at_server_ms",
            "onset_to_truncate_at_server_ms",
            "onset_to_speaker_silent_ms",
        ):
            out[key] = med(("barge_in", key))
        out["truncate_accepted"] = all(r.get("barge_in", {}).get("truncate_accepted") for r in ok)
        for key in ("to_ready_ms", "to_channel_opened_at_server_ms", "to_open_on_device_ms"):
            out["start_" + key] = med(("start", key))
        return out

    def images(self) -> dict:
        """The memory figures on each unix-port image (bench/images.py); full mode only."""
        a = self.args
        if a.quick or a.no_images:
            return {"skipped": "quick mode" if a.quick else "--no-images"}
        return images.measure(a.images, self.work / "images", a.image_heap_range, self.log, quiet=self.quiet)

    # ------------------------------------------------------------------ main

    def run(self) -> dict:
        a = self.args
        t0 = time.monotonic()
        paths.require_checkout()
        self.steps = self.plan()
        self.result["machine"] = self.machine()
        if a.images_only:
            self.result["mode"] = "images"
            self.step("images")
            self.result["images"] = self.images()
            self.result["duration_s"] = round(time.monotonic() - t0, 1)
            return self.result
        self.step("compile the firmware to .mpy (x64, viper)")
        build = mpy.compile_firmware(self.work / "mpy")
        peer_set: dict[str, peers.Peer] = {}
        if a.quick or a.no_peers:
            why = "quick mode" if a.quick else "--no-peers"
            self.result["peers"] = {n: {"status": "skipped", "reason": why} for n in peers.PEERS}
        else:
            self.step("peers: pip download --no-deps into a temporary directory")
            peer_set = peers.fetch(self.work / "peers")
            self.result["peers"] = {
                n: ({"status": "installed", "version": p.version} if p.error is None else {"status": "skipped", "reason": p.error})
                for n, p in peer_set.items()
            }
        peer_info: dict[str, dict[str, Any]] = self.result["peers"]
        with LoopbackPeer() as sink:
            self.step("uplink CPU and allocation")
            up = self.uplink(sink, build, peer_set)
            for n, info in peer_info.items():
                if info["status"] == "installed":
                    errs = {ms: up["results"][str(ms)].get(n, {}).get("error") for ms in FRAMES_MS}
                    errs = {k: v for k, v in errs.items() if v}
                    info["status"] = "ran" if len(errs) < len(FRAMES_MS) else "failed"
                    if errs:
                        info["errors"] = {str(k): v for k, v in errs.items()}
                    info["function"] = report.PEER_FUNCTIONS[n]
            self.result["uplink"] = up
            self.step("downlink CPU and allocation")
            self.result["downlink"] = self.downlink(sink, build)
        self.result["wire"] = self.wire(up)
        self.step("memory: import costs" + ("" if a.quick or a.no_demo else ", the demo's smallest heap"))
        self.result["memory"] = self.memory(build)
        if not (a.quick or a.no_demo):
            self.step(f"latency: {a.latency_runs} demo runs")
        self.result["latency"] = self.latency(self.result["memory"])
        if not (a.quick or a.no_images):
            self.step(f"images: {', '.join(a.images)}")
        self.result["images"] = self.images()
        self.log(f"done in {time.monotonic() - t0:.0f} s")
        self.result["targets"] = report.targets(self.result)
        self.result["duration_s"] = round(time.monotonic() - t0, 1)
        return self.result

    def cleanup(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def _heap_bytes(h: str) -> int:
    return int(h[:-1]) * 1024 if h.endswith("K") else int(h)


def _heap_range(text: str) -> tuple[int, int, int]:
    try:
        lo, hi, step = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected LO,HI,STEP in KB, e.g. 100,400,8") from None
    if not (0 < lo < hi and step > 0):
        raise argparse.ArgumentTypeError("need 0 < LO < HI and STEP > 0")
    return lo, hi, step


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="meerkat-bench",
        description="CPU, allocation, heap and latency of the firmware on the MicroPython unix port, beside peers.",
    )
    p.add_argument("--quick", action="store_true", help="a few seconds: short passes, no peers, no demo, no WebAssembly")
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    p.add_argument("--out", type=Path, help="also write the JSON to this file")
    p.add_argument("--no-peers", action="store_true", help="do not download the PyPI peers")
    p.add_argument("--no-demo", action="store_true", help="skip the simulated-board demo (heap search, latencies)")
    p.add_argument("--no-wasm", action="store_true", help="skip the 32-bit import costs on the WebAssembly port")
    p.add_argument("--audio-s", type=int, default=None, help="seconds of audio per CPU pass, uplink and downlink (30; quick 1)")
    p.add_argument("--repeats", type=int, default=None, help="CPU passes per figure, the fastest is kept (5; quick 1)")
    p.add_argument("--latency-runs", type=int, default=3, help="demo runs for the latencies (3)")
    p.add_argument("--heap-range", type=_heap_range, default=(100, 400, 8), help="LO,HI,STEP in KB for the heap search (100,400,8)")
    p.add_argument("--no-images", action="store_true", help="skip the images section (frozen and 32-bit unix-port builds)")
    p.add_argument("--images-only", action="store_true", help="only the images section: the README's memory table (about 10 min)")
    p.add_argument(
        "--images",
        type=lambda t: tuple(x for x in t.split(",") if x),
        default=images.DEFAULT,
        help=f"images to measure, comma-separated ({','.join(images.DEFAULT)}; files64 too)",
    )
    p.add_argument(
        "--image-heap-range", type=_heap_range, default=(64, 320, 2), help="LO,HI,STEP in KB for the heap search on each image (64,320,2)"
    )
    a = p.parse_args(argv)
    if a.audio_s is None:
        a.audio_s = 1 if a.quick else 30
    if a.repeats is None:
        a.repeats = 1 if a.quick else 5
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    bench = Bench(args)
    try:
        result = bench.run()
    finally:
        bench.cleanup()
    line = json.dumps(result, separators=(",", ":"))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    if not args.json:
        print(report.table(result))
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
