"""meerkat-sim: run the firmware as a simulated board against a Meerkat server.

By default it starts the bundled development server in-process and plays a spoken question into
the fake microphone; the reply plays on the fake speaker (recorded to a WAV), and a second
utterance interrupts the reply (a barge-in, reported to the server with the played cursor).
It prints the conversation as it happens and one JSON summary line at the end."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

from .. import mpy, paths
from ..image import NAMES as IMAGES, ImageError
from .runner import SimDevice, SimError

# The simulated board's heap on the unix port: 22K above the smallest heap at which the demo
# completes on the stock binary (250K on protocol v2, 228K on live; meerkat-bench --images-only).
# 110K is an ESP32 WROOM's, where the package must be frozen (or in ROMFS) because its code alone
# takes about 145 KB of heap on this 64-bit port when loaded from files (README, "Memory").
DEFAULT_HEAP = "272K"
TRACE_HEAP = "288K"  # the default with --timeline, --trace-out or --repl on the stock binary
QUESTION = paths.FIXTURES / "user_question.wav"
# "Hold on": one phrase. (user_interrupt.wav pauses 480 ms inside, 20 ms short of the end of a
# turn for a server VAD with the usual 500 ms of silence: by window alignment the server may
# commit half of it, start a reply, and the rest of the phrase barges in on that one too.)
INTERRUPT = paths.FIXTURES / "barge_hold_on.wav"


def _args(argv):
    p = argparse.ArgumentParser(prog="meerkat-sim", description=__doc__.split("\n\n")[0])
    p.add_argument("--runtime", choices=("micropython", "cpython"), default="micropython")
    p.add_argument("--heap", default=None, help=f"MicroPython heap (default {DEFAULT_HEAP}; 'none' for unlimited)")
    p.add_argument(
        "--image",
        default="stock",
        choices=IMAGES,
        help="unix-port executable: stock (the installed one, firmware from .mpy files) or a meerkat-image "
        "build, e.g. frozen32 (32-bit, firmware frozen in: what a WROOM runs; built on first use)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--rpc", metavar="HOST:PORT", help="a running server's JSON-RPC TCP listener")
    where.add_argument("--rest", metavar="URL", help="a running server's REST proxy (http://host:port)")
    p.add_argument("--session-id", help="target session (default: the dev server's, required with --rpc/--rest)")
    p.add_argument(
        "--surface",
        choices=("auto", "live", "v2"),
        default="auto",
        help="the board's server.surface (default auto: it asks the server). The bundled dev server speaks "
        "the live surface (today's Meerkat), or protocol v2 (Meerkat 0.6.0-0.6.4) with --surface v2",
    )
    p.add_argument("--board", default="sim", help="board file name (default: the simulator board)")
    p.add_argument("--turning-mode", choices=("provider_managed", "explicit_commit"), default="provider_managed")
    p.add_argument("--mic", type=Path, default=QUESTION, help="WAV played into the microphone (24 kHz mono 16-bit)")
    p.add_argument("--speaker-out", type=Path, default=Path("speaker.wav"), help="where to record the speaker")
    p.add_argument("--echo-db", type=float, default=-20.0, help="speaker-to-mic echo in dB ('off' with --no-echo)")
    p.add_argument("--no-echo", action="store_true", help="no acoustic echo")
    p.add_argument(
        "--barge-in-at-ms",
        type=int,
        default=2500,
        help="user speech over the reply this many ms after it starts (-1: none; provider_managed only: "
        "with push-to-talk the button is held for the mic WAV and nothing interrupts)",
    )
    p.add_argument("--barge-in-wav", type=Path, default=INTERRUPT)
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0: when the conversation is over)")
    p.add_argument("--no-item-ids", action="store_true",
                   help="protocol v2 dev server without its item_id extension, exactly as Meerkat 0.6.2: the "
                   "board can only interrupt, never truncate (the live surface always names items)")
    p.add_argument(
        "--wss",
        action="store_true",
        help="the bundled dev server serves its WebSockets over TLS (wss://) with a CA it makes; the board "
        "verifies the certificate against that CA (DER, config tls.ca_file)",
    )
    p.add_argument(
        "--timeline",
        type=Path,
        metavar="PNG",
        help="draw the conversation (mic level, VAD threshold and echo estimate, speaker, frames held/sent/dropped, "
        "server events, barge-ins, each truncate's cursor against the speaker's true play position) into this PNG",
    )
    p.add_argument("--trace-out", type=Path, metavar="LOG", help="also keep the board's trace lines (what meerkat-timeline reads)")
    p.add_argument("--trace-ms", type=int, default=20, help="trace sample period with --timeline/--trace-out (default 20)")
    p.add_argument("--repl", action="store_true",
                   help="the board runs meerkat_rt.start(): its REPL (\"--> \") on this terminal, where status(), say(\"text\"), "
                   "talk(), stop(), interrupt() and close() act on the running device (micropython runtime only)")
    p.add_argument("--ca", type=Path, help="CA certificate (DER) the board verifies a wss:// server against (config tls.ca_file)")
    p.add_argument("--json", action="store_true", help="print the device's JSON lines instead of a readable log")
    return p.parse_args(argv)


class Printer:
    """Turns the board's JSON lines into the conversation, as it happens."""

    def __init__(self, raw: bool):
        self.raw = raw
        self.t0 = time.monotonic()
        self.reply = ""

    def __call__(self, line: dict) -> None:
        if str(line.get("raw", "")).startswith("~t"):
            return  # a trace line: for the timeline, not the reader
        if self.raw:
            print(json.dumps(line), flush=True)
            return
        t = "%6.2f" % (time.monotonic() - self.t0)
        if "log" in line:
            if line["log"][:1] in "WE":
                print(f"{t}  ! {line['log']}", flush=True)
            return
        ev, data = line.get("ev"), line.get("data")
        if ev == "output_text_delta":
            self.reply += data["delta"]
            return
        if self.reply and ev in ("turn_completed", "interrupted", "barge_in", "reply_done"):
            print(f"{t}  assistant: {self.reply.strip()}", flush=True)
            self.reply = ""
        if ev == "state":
            print(f"{t}  [{data}]", flush=True)
        elif ev == "input_transcript_final":
            print(f"{t}  user (transcribed): {data['text']}", flush=True)
        elif ev == "barge_in":
            ms = data["audio_played_ms"]
            heard = f", truncate sent: heard {ms} ms of {data['item_id']}" if ms >= 0 else " (no item id: interrupt only)"
            print(f"{t}  BARGE-IN ({data['reason']}){heard}", flush=True)
        elif ev == "assistant_transcript_truncated":
            print(f"{t}  server truncated {data['item_id']} at {data['audio_played_ms']} ms: \"{data.get('truncated_text', '')}\"", flush=True)
        elif ev == "reconnect":
            print(f"{t}  reconnecting (attempt {data['attempt']}) in {data['delay_ms']} ms", flush=True)
        elif ev == "error":
            print(f"{t}  server error {data['code']}: {data['message']}", flush=True)
        elif ev in ("turn_started", "turn_committed", "turn_completed", "interrupted", "reply_done"):
            print(f"{t}  {ev.replace('_', ' ')}", flush=True)


def _config(args, rpc=None, rest=None, target=None):
    server = {"rpc": rpc} if rpc else {"rest": rest}
    if rpc:
        server["surface"] = args.surface  # (a REST proxy exists for protocol v2 only)
    return {
        "server": server,
        "target": target,
        "board": args.board,
        "turning_mode": args.turning_mode,
        "log_level": "info",
        "reconnect": {"max_attempts": 5, "initial_backoff_ms": 200, "max_backoff_ms": 2000, "max_total_ms": 0},
    }


def _world(args):
    for wav in (args.mic, args.barge_in_wav):
        if wav and not Path(wav).is_file():
            raise SystemExit(f"meerkat-sim: no such WAV file: {wav}")
    world = {"mic_wav": str(args.mic.resolve()), "record": str(args.speaker_out.resolve())}
    if not args.no_echo:
        world["echo_db"] = args.echo_db
    if args.barge_in_at_ms >= 0 and args.turning_mode == "provider_managed":
        world["inject_wav"] = str(args.barge_in_wav.resolve())
        world["inject_at_ms"] = args.barge_in_at_ms
    return world


def _push_to_talk(dev: SimDevice, mic: Path) -> None:
    """explicit_commit: the simulated user holds the button for the length of the mic WAV."""
    import wave

    with wave.open(str(mic)) as w:
        seconds = w.getnframes() / w.getframerate()
    dev.wait_event("state", 20, where=lambda s: s == "open")
    dev.send("start_talking")
    time.sleep(seconds)  # the user speaking: the fake microphone plays in real time
    dev.send("stop_talking")


def _done(dev: SimDevice, barge: bool) -> bool:
    """The scripted conversation is over: every reply that started has played out."""
    done = dev.events("reply_done")
    if barge:
        return bool(dev.events("barge_in")) and bool(done)
    return bool(done)


def _terminal(chunk: str) -> None:
    # The REPL board's output on this terminal, without its trace lines (they go to the picture;
    # one may follow a "--> " prompt) and without its summary line (this side prints its own).
    keep = []
    for piece in chunk.splitlines(True):
        at = piece.find("~t")
        if at >= 0 and piece[:at].strip() in ("", "-->"):
            piece = piece[:at]
        elif piece.startswith("{") and '"summary": ' in piece:
            continue
        keep.append(piece)
    sys.stdout.write("".join(keep))
    sys.stdout.flush()


def _repl(dev) -> None:
    """This terminal's lines go to the board's REPL until the board stops (close() or Ctrl-D
    there) or this side ends (Ctrl-C, end of input: the board is closed then)."""
    import threading

    def forward() -> None:
        for line in sys.stdin:
            try:
                dev.type(line)
            except (SimError, OSError):
                return

    threading.Thread(target=forward, daemon=True).start()
    dev.wait_for(lambda: dev.summary is not None, 24 * 3600, "the board to stop", raise_on_timeout=False)


def _timeline(args, dev) -> None:
    from .. import timeline

    lines = [str(l["raw"]) for l in dev.lines if "~t" in str(l.get("raw", ""))]
    if args.trace_out:
        args.trace_out.write_text("".join(line[line.find("~t"):] + "\n" for line in lines))
        print(f"meerkat-sim: {len(lines)} trace lines in {args.trace_out}", file=sys.stderr)
    if args.timeline:
        runs = timeline.parse(lines)
        if not runs:
            print("meerkat-sim: the board wrote no trace lines: no timeline", file=sys.stderr)
            return
        timeline.draw(runs[-1], args.timeline, title="meerkat-sim" + (" over wss://" if args.wss else ""))
        s = runs[-1].summary()
        print(f"meerkat-sim: timeline in {args.timeline} ({s['samples']} samples, {len(s['events'])} events, "
              f"{len(s['truncates'])} truncate(s))", file=sys.stderr)


def main(argv=None) -> int:
    args = _args(argv)
    paths.require_checkout()
    heap = None if (args.heap or "").lower() == "none" else (args.heap or DEFAULT_HEAP)
    if args.heap is None and args.image == "stock" and (args.timeline or args.trace_out or args.repl):
        # The trace module and aiorepl load from .mpy files on the stock binary: 6 and 9 KB
        # more heap on its 64-bit objects (frozen images need far less; README, "Memory").
        heap = TRACE_HEAP
    printer = Printer(args.json)
    if args.rest and args.surface == "live":
        raise SystemExit("meerkat-sim: --rest is protocol v2's REST proxy; the live surface needs --rpc")
    with contextlib.ExitStack() as stack:
        if args.rpc or args.rest:
            if not args.session_id:
                raise SystemExit("meerkat-sim: --session-id is required with --rpc/--rest")
            config = _config(args, args.rpc, args.rest, {"type": "session_target", "session_id": args.session_id})
        else:
            from ..devserver import DevServer, ServerOptions

            surface = "v2" if args.surface == "v2" else "live"
            srv = stack.enter_context(DevServer.running(ServerOptions(surface=surface, item_ids=not args.no_item_ids, tls=args.wss)))
            host, port = srv.rpc_address
            config = _config(args, f"{host}:{port}", None, srv.target)
            if srv.tls is not None and args.ca is None:
                config["tls"] = {"ca_file": str(srv.tls.ca_der)}
            if not args.json:
                ws = srv.live_ws_url if srv.options.serves_live else srv.ws_url
                ca = f", CA {srv.tls.ca_der}" if srv.tls is not None else ""
                what = "live surface" if surface == "live" else (
                    "protocol v2" + (", no item ids (as Meerkat 0.6.2)" if args.no_item_ids else ", item_id extension on"))
                print(f"  dev server ({what}): rpc {host}:{port}, {ws}{ca}", flush=True)
        if args.ca is not None:
            if not args.ca.is_file():
                raise SystemExit(f"meerkat-sim: no such CA file: {args.ca}")
            config["tls"] = {"ca_file": str(args.ca.resolve())}
        if args.timeline or args.trace_out:
            config["trace_ms"] = args.trace_ms
        failed = False
        if args.repl:
            if args.runtime != "micropython":
                raise SystemExit("meerkat-sim: --repl needs the micropython runtime (aiorepl is MicroPython's)")
            from .repl import ReplSim

            dev = ReplSim(config, _world(args), heap, seconds=args.seconds, on_text=_terminal, image=args.image)
        else:
            dev = SimDevice(
                config,
                _world(args),
                args.runtime,
                heap if args.runtime == "micropython" else None,
                seconds=args.seconds or 120,
                on_line=printer,
                image=args.image if args.runtime == "micropython" else "stock",
            )
        if args.runtime == "micropython":
            try:
                dev.resolve_image()  # builds the image on first use (progress on stderr)
            except ImageError as exc:
                raise SystemExit(f"meerkat-sim: --image {args.image}: {exc}") from None
        try:
            dev.start()
            if args.repl:
                _repl(dev)
            elif args.turning_mode == "explicit_commit":
                _push_to_talk(dev, args.mic)
            if args.repl:
                pass
            elif args.seconds:
                dev.wait_summary(args.seconds + 20)
            else:
                barge = args.barge_in_at_ms >= 0 and args.turning_mode == "provider_managed"
                dev.wait_for(lambda: _done(dev, barge) or dev.summary, 120, "the end of the conversation")
        except SimError as exc:
            print(f"meerkat-sim: {exc}", file=sys.stderr)
            failed = True
        except KeyboardInterrupt:
            pass
        finally:
            summary = dev.stop()
    if args.timeline or args.trace_out:
        _timeline(args, dev)
    if summary is None:
        print(f"meerkat-sim: the simulated board did not finish cleanly; {dev.describe_exit()}", file=sys.stderr)
        return 2
    out = {
        "frames_captured": summary.get("frames_captured", 0),
        "frames_sent": summary.get("frames_sent", 0),
        "frames_dropped": summary.get("frames_dropped", 0),
        "frames_discarded": summary.get("frames_discarded", 0),
        "frames_pending": summary.get("frames_pending", 0),
        "bytes_sent": summary["bytes_sent"],
        "events": summary["events"],
        "barge_ins": summary["barge_ins"],
        "truncates": [{"item_id": i, "audio_played_ms": ms} for i, ms in summary["truncates"]],
        "reconnects": summary["reconnects"],
        "heap_low": summary["heap_low"],
        "heap": heap if args.runtime == "micropython" else None,
        "image": args.image if args.runtime == "micropython" else None,
        "speaker_wav": str(args.speaker_out),
        "exit": dev.exit_reason,
        "state": summary["state"],
    }
    if summary.get("error"):
        out["error"] = summary["error"]
    print(json.dumps(out), flush=True)
    if summary["state"] == "error":
        print(f"meerkat-sim: the device stopped with an error: {summary.get('error')}", file=sys.stderr)
        return 1
    if failed:
        print("meerkat-sim: the conversation did not finish (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
