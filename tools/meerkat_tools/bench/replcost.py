"""What the live REPL (meerkat_rt.start() with micropython-lib's aiorepl) costs the device, on
the unix-port image a no-PSRAM board is measured on (frozen32 at 110K):

    python -m meerkat_tools.bench.replcost            # progress on stderr, figures on stdout
    python -m meerkat_tools.bench.replcost --json

1. aiorepl alone: the heap its module takes (loaded from .mpy, as `mpremote mip install aiorepl`
   leaves it on a board) and its task waiting at the prompt.
2. The same simulated conversation (the spoken question, the reply played, a clean close after
   --seconds) through meerkat_rt.start() with aiorepl and without it: the device's heap
   low-water (stats heap_low, collected every 2 s), i.e. what is left for everything else.

A benchmark: it prints figures and asserts nothing."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from .. import image as images
from .. import mpy, paths

HERE = Path(__file__).resolve().parent
PROBE = HERE / "mp_replcost.py"


def alone(image: mpy.Image, heap: str) -> dict:
    from ..sim.repl import aiorepl_source

    with tempfile.TemporaryDirectory() as d:
        build = mpy.compile_modules([aiorepl_source()], Path(d), image.arch, cross=image.mpy_cross)
        proc = subprocess.run(mpy._command(image, heap) + [str(PROBE)], env=mpy.micropython_env([build], image),
                              stdin=subprocess.PIPE, capture_output=True, text=True, timeout=60)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("{")), None)
    if line is None:
        raise RuntimeError(f"the aiorepl probe failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return json.loads(line)


def conversation(image: mpy.Image, heap: str, seconds: float, with_aiorepl: bool) -> dict:
    from ..devserver import DevServer, ServerOptions
    from ..sim.repl import ReplSim

    with DevServer.running(ServerOptions(id_style="short")) as srv, tempfile.TemporaryDirectory() as d:
        host, port = srv.rpc_address
        cfg = {"server": {"rpc": f"{host}:{port}"}, "target": srv.target, "board": "sim", "log_level": "info"}
        world = {"mic_wav": str(paths.FIXTURES / "user_question.wav"), "record": str(Path(d) / "spk.wav")}
        dev = ReplSim(cfg, world, heap=heap, seconds=seconds, image=image, with_aiorepl=with_aiorepl)
        dev.start()
        summary = dev.wait_summary(seconds + 60)
        dev.stop()
    if summary is None or summary.get("state") != "closed":
        raise RuntimeError(f"the conversation did not end cleanly: {summary}\n{dev.text[-2000:]}")
    return {"heap_low": summary["heap_low"], "audio_received_ms": summary["audio_received_ms"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m meerkat_tools.bench.replcost", description=__doc__.split("\n\n")[0])
    p.add_argument("--image", default="frozen32", choices=images.NAMES)
    p.add_argument("--heap", default="110K")
    p.add_argument("--seconds", type=float, default=20, help="length of each simulated conversation")
    p.add_argument("--json", action="store_true", help="one JSON line on stdout, no progress on stderr")
    args = p.parse_args(argv)
    paths.require_checkout()

    def progress(text: str) -> None:
        if not args.json:
            print(f"replcost: {text}", file=sys.stderr, flush=True)

    image = images.get(args.image, progress=images.Progress(quiet=args.json))
    progress(f"step 1/3: aiorepl alone on {image.name} at {args.heap}")
    r = {"image": image.name, "heap": args.heap, "aiorepl": alone(image, args.heap)}
    progress(f"step 2/3: a {args.seconds:.0f} s conversation through start() without aiorepl")
    r["without"] = conversation(image, args.heap, args.seconds, False)
    progress(f"step 3/3: the same with aiorepl")
    r["with"] = conversation(image, args.heap, args.seconds, True)
    r["cost"] = r["without"]["heap_low"] - r["with"]["heap_low"]
    if args.json:
        print(json.dumps(r))
    else:
        a = r["aiorepl"]
        print(f"live REPL cost ({image.name} at {args.heap})\n"
              f"  aiorepl module (.mpy)        {a['import_heap']} B\n"
              f"  aiorepl task at the prompt   {a['task_heap']} B\n"
              f"  conversation heap low-water  {r['without']['heap_low']} B free without the REPL, "
              f"{r['with']['heap_low']} B with it (cost {r['cost']} B)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
