"""`meerkat-devserver`: run the development server until interrupted.

When ready it prints exactly one JSON line on stdout:
  {"rpc": "127.0.0.1:P", "rest": "http://127.0.0.1:R", "ws_url": "ws://127.0.0.1:W/realtime/ws", "session_id": "..."}
and logs to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from . import wire
from .faults import DROP_MODES, INJECT_KINDS, Faults
from .options import DEFAULT_REALM, DEFAULT_SESSION_ID, ServerOptions
from .server import DevServer


def _inject(value: str) -> tuple[float, str]:
    kind, _, at = value.partition("@")
    if kind not in INJECT_KINDS or not at:
        raise argparse.ArgumentTypeError(f"use KIND@SECONDS with KIND one of {', '.join(INJECT_KINDS)}")
    return float(at), kind


def _modes(value: str) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in value.split(",") if m.strip())
    for mode in modes:
        if mode not in wire.TURNING_MODES:
            raise argparse.ArgumentTypeError(f"unknown turning mode {mode!r}")
    return modes


def _policy(value: str) -> dict:
    try:
        policy = dict(wire.DEFAULT_RECONNECT_POLICY, **json.loads(value))
    except (json.JSONDecodeError, TypeError) as exc:
        raise argparse.ArgumentTypeError(f"not a JSON object: {exc}") from None
    return policy


def _bootstrap_error(value: str) -> tuple[int, str]:
    code, _, message = value.partition(":")
    try:
        return int(code), message or "realtime bootstrap eligibility denied: devserver fault"
    except ValueError:
        raise argparse.ArgumentTypeError("use CODE[:MESSAGE], e.g. -32020:denied") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="meerkat-devserver",
        description="A local Meerkat 0.6.2-compatible realtime host (protocol v2) with a scripted "
        "voice agent, recording and fault injection.",
    )
    net = p.add_argument_group("listeners")
    net.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    net.add_argument("--rpc-port", type=int, default=0, help="JSON-RPC TCP port (0 = ephemeral)")
    net.add_argument("--ws-port", type=int, default=0, help="WebSocket port (0 = ephemeral)")
    net.add_argument("--rest-port", type=int, default=0, help="REST port (0 = ephemeral)")
    net.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")

    ses = p.add_argument_group("session")
    ses.add_argument("--session-id", default=DEFAULT_SESSION_ID)
    ses.add_argument("--realm", default=DEFAULT_REALM)
    ses.add_argument("--token-ttl", type=float, default=60.0, help="open token TTL in seconds (default 60)")
    ses.add_argument(
        "--turning-modes",
        type=_modes,
        default=wire.TURNING_MODES,
        help="comma-separated (default provider_managed,explicit_commit)",
    )
    ses.add_argument(
        "--item-ids",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="item_id/response_id/content_index on output_audio_chunk (extension; default on)",
    )
    ses.add_argument(
        "--reconnect-policy",
        type=_policy,
        default=None,
        help='default policy when open_info has none, JSON, e.g. \'{"max_attempts":5}\'',
    )

    agent = p.add_argument_group("scripted agent")
    agent.add_argument("--reply-wav", help="reply audio, 24 kHz mono 16-bit WAV (default: the fixture)")
    agent.add_argument("--reply-text", help="the reply's transcript text")
    agent.add_argument("--reply-speed", type=float, default=4.0, help="x real time (0 = unpaced)")
    agent.add_argument("--reply-latency-ms", type=int, default=200)
    agent.add_argument("--chunk-ms", default="20-200", help="reply chunk durations MIN-MAX ms")
    agent.add_argument("--seed", type=int, default=1)
    agent.add_argument("--vad-threshold-dbfs", type=float, default=-40.0)
    agent.add_argument("--vad-silence-ms", type=int, default=500)

    rec = p.add_argument_group("recording")
    rec.add_argument("--record", metavar="DIR", help="write frames.jsonl, sent.jsonl, input.wav")

    f = p.add_argument_group("faults (timed ones count from channel.opened of a primary)")
    f.add_argument("--drop-after-frames", type=int, metavar="N")
    f.add_argument("--drop-at", type=float, metavar="SECONDS")
    f.add_argument("--drop-mode", choices=DROP_MODES, default="reset")
    f.add_argument("--open-delay", type=float, default=0.0, metavar="SECONDS")
    f.add_argument("--open-error", choices=wire.OPEN_BIND_ERROR_CODES)
    f.add_argument("--reconnect-at", type=float, metavar="SECONDS", help="start a reconnect cycle")
    f.add_argument(
        "--reconnect-failures",
        type=int,
        default=0,
        metavar="N",
        help="failed attempts before success (>= max_attempts: exhaustion)",
    )
    f.add_argument("--provider-error-at", type=float, metavar="SECONDS")
    f.add_argument("--provider-error-code", choices=wire.PROVIDER_ERROR_CODES, default="authentication_failed")
    f.add_argument("--inject", type=_inject, action="append", default=[], metavar="KIND@SECONDS")
    f.add_argument("--oversized-bytes", type=int, default=1 << 20)
    f.add_argument("--pause-reading-at", type=float, metavar="SECONDS")
    f.add_argument("--pause-reading-for", type=float, default=5.0, metavar="SECONDS")
    f.add_argument("--bootstrap-error", type=_bootstrap_error, metavar="CODE[:MESSAGE]")
    f.add_argument("--fault-repeat", action="store_true", help="faults fire on every connection")

    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    lo, _, hi = args.chunk_ms.partition("-")
    faults = Faults(
        drop_after_frames=args.drop_after_frames,
        drop_at=args.drop_at,
        drop_mode=args.drop_mode,
        open_delay=args.open_delay,
        open_error=args.open_error,
        reconnect_at=args.reconnect_at,
        reconnect_failures=args.reconnect_failures,
        provider_error_at=args.provider_error_at,
        provider_error_code=args.provider_error_code,
        inject_at=list(args.inject),
        oversized_bytes=args.oversized_bytes,
        pause_reading_at=args.pause_reading_at,
        pause_reading_for=args.pause_reading_for,
        bootstrap_error=args.bootstrap_error,
        repeat=args.fault_repeat,
    )
    options = ServerOptions(
        host=args.host,
        rpc_port=args.rpc_port,
        ws_port=args.ws_port,
        rest_port=args.rest_port,
        allow_remote=args.allow_remote,
        session_id=args.session_id,
        realm=args.realm,
        token_ttl=args.token_ttl,
        turning_modes=args.turning_modes,
        item_ids=args.item_ids,
        record_dir=args.record,
        reply_wav=args.reply_wav,
        reply_text=args.reply_text,
        reply_speed=args.reply_speed,
        reply_latency_ms=args.reply_latency_ms,
        chunk_min_ms=int(lo),
        chunk_max_ms=int(hi or lo),
        seed=args.seed,
        vad_threshold_dbfs=args.vad_threshold_dbfs,
        vad_silence_ms=args.vad_silence_ms,
        faults=faults,
    )
    if args.reconnect_policy is not None:
        options.reconnect_policy = args.reconnect_policy
    return options


async def serve(server: DevServer) -> None:
    await server.start()
    print(server.ready_line(), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        server = DevServer(options_from_args(args))
    except (ValueError, OSError) as exc:
        print(f"meerkat-devserver: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(server))
    except KeyboardInterrupt:
        pass
    except (OSError, ValueError) as exc:
        print(f"meerkat-devserver: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
