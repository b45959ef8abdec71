"""What wss:// costs the device, measured on the MicroPython unix port against ws://:

    python -m meerkat_tools.bench.tlscost                 # frozen32 at 110K where it can be built
    python -m meerkat_tools.bench.tlscost --image stock --heap 256K --frames 500 --repeats 5
    python -m meerkat_tools.bench.tlscost --json          # one JSON line, no progress

For each scheme, several fresh board processes: the TLS context (load the DER CA), the connect
(TCP, TLS handshake with certificate verification, HTTP upgrade) with its time and the heap the
open connection holds, and the CPU per 40 ms audio frame sent (WebSocket masking, and for
wss:// the encryption, until the socket took it). The server is CPython's `websockets` on
127.0.0.1 behind the dev server's TLS (an ECDSA P-256 certificate, as trustme makes). A
benchmark, not a test: it prints figures, it asserts nothing. The median of the repeats is
shown, with the range.

"Heap" is the GC heap (what gc.mem_free() sees). mbedtls keeps its session buffers outside it:
in the C heap on the unix port, in the IDF heap on an ESP32 (reference: about 20-40 KB per
connection at the handshake), so they do not show here. An ESP32's handshake is far slower (an
ECDSA verify on a 240 MHz Xtensa takes tens of ms): the host's figures are only a floor."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
from pathlib import Path

from .. import image as images
from .. import mpy, paths

HERE = Path(__file__).resolve().parent
PROBE = HERE / "mp_tlscost.py"


class _Sink:
    """A WebSocket server that reads and drops everything: plain and TLS listeners."""

    def __init__(self, tls):
        self.tls = tls
        self.loop = asyncio.new_event_loop()
        self.ports: dict[str, int] = {}
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        if not ready.wait(20):
            raise RuntimeError("the sink server did not start")

    def _run(self, ready):
        import websockets

        async def sink(ws):
            async for _ in ws:
                pass

        async def start():
            plain = await websockets.serve(sink, "127.0.0.1", 0, max_size=None)
            secure = await websockets.serve(sink, "127.0.0.1", 0, ssl=self.tls.context, max_size=None)
            self.ports["ws"] = plain.sockets[0].getsockname()[1]
            self.ports["wss"] = secure.sockets[0].getsockname()[1]

        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(start())
        ready.set()
        self.loop.run_forever()


def measure(image: mpy.Image, heap: str, frames: int, repeats: int, progress) -> dict:
    from ..devserver.tls import ServerTLS

    tls = ServerTLS()
    try:
        sink = _Sink(tls)
        search = [] if image.frozen else [mpy.compile_firmware(Path(tls.dir) / "fw", image.arch, cross=image.mpy_cross)]
        results: dict[str, list[dict]] = {"ws": [], "wss": []}
        for i in range(repeats):
            for scheme in ("ws", "wss"):
                progress(f"{scheme}:// run {i + 1}/{repeats} ({frames} frames)")
                url = f"{scheme}://127.0.0.1:{sink.ports[scheme]}/sink"
                proc = mpy.run(PROBE, [url, str(tls.ca_der), str(frames)], search_path=search, heap=heap,
                               timeout=300, image=image)
                line = next((l for l in proc.stdout.splitlines() if l.startswith("{")), None)
                if proc.returncode or line is None:
                    raise RuntimeError(f"the {scheme} probe failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
                results[scheme].append(json.loads(line))
    finally:
        tls.close()
    return summarise(results, image.name, heap, frames)


def summarise(results: dict, image: str, heap: str, frames: int) -> dict:
    def stat(scheme, key):
        vals = [r[key] for r in results[scheme] if key in r]
        return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)} if vals else None

    out = {"image": image, "heap": heap, "frames": frames, "repeats": len(results["ws"])}
    for scheme in ("ws", "wss"):
        out[scheme] = {k: stat(scheme, k) for k in ("context_ms", "context_heap", "connect_ms", "connection_heap", "frame_us")
                       if stat(scheme, k) is not None}
    ws_us, wss_us = out["ws"]["frame_us"]["median"], out["wss"]["frame_us"]["median"]
    out["tls_frame_us"] = wss_us - ws_us
    out["tls_cpu_per_second_of_audio_ms"] = (wss_us - ws_us) * 25 / 1000  # 25 frames of 40 ms
    return out


def report(r: dict) -> str:
    ws, wss = r["ws"], r["wss"]

    def m(d, k, unit="", f="{:.1f}"):
        s = d[k]
        return f"{f.format(s['median'])}{unit} ({f.format(s['min'])}-{f.format(s['max'])})"

    return "\n".join([
        f"TLS cost on the unix port ({r['image']} at {r['heap']}; median (range) of {r['repeats']} runs; {r['frames']} frames of 40 ms)",
        f"  TLS context (DER CA)       {m(wss, 'context_ms', ' ms', '{:.2f}')}, heap {m(wss, 'context_heap', ' B', '{:.0f}')}",
        f"  connect ws://              {m(ws, 'connect_ms', ' ms', '{:.1f}')}, connection heap {m(ws, 'connection_heap', ' B', '{:.0f}')}",
        f"  connect wss:// (verified)  {m(wss, 'connect_ms', ' ms', '{:.1f}')}, connection heap {m(wss, 'connection_heap', ' B', '{:.0f}')}",
        f"  CPU per frame ws://        {m(ws, 'frame_us', ' us', '{:.0f}')}",
        f"  CPU per frame wss://       {m(wss, 'frame_us', ' us', '{:.0f}')}",
        f"  TLS per frame              {r['tls_frame_us']:.0f} us ({r['tls_cpu_per_second_of_audio_ms']:.1f} ms of CPU per second of audio on this host)",
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m meerkat_tools.bench.tlscost", description=__doc__.split("\n\n")[0])
    p.add_argument("--image", default="frozen32", choices=images.NAMES, help="unix-port image (default frozen32; stock where it cannot be built)")
    p.add_argument("--heap", default=None, help="heap (default 110K on frozen32, 256K on stock)")
    p.add_argument("--frames", type=int, default=250)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true", help="one JSON line on stdout, no progress on stderr")
    args = p.parse_args(argv)
    paths.require_checkout()

    def progress(text: str) -> None:
        if not args.json:
            print(f"tlscost: {text}", file=sys.stderr, flush=True)

    try:
        image = images.get(args.image, progress=images.Progress(quiet=args.json))
    except images.ImageError as exc:
        if args.image != "frozen32":
            raise SystemExit(f"tlscost: --image {args.image}: {exc}")
        progress(f"frozen32 cannot be built here ({exc.__class__.__name__}): the stock binary instead")
        image = mpy.stock()
    heap = args.heap or ("110K" if image.frozen and image.bits == 32 else "256K")
    r = measure(image, heap, args.frames, args.repeats, progress)
    print(json.dumps(r) if args.json else report(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
