"""`meerkat-devserver`: run the development server until interrupted.

When ready it prints exactly one JSON line on stdout, e.g. for `--surface both`:
  {"surface": "both", "rpc": "127.0.0.1:P", "rest": "http://127.0.0.1:R",
   "ws_url": "ws://127.0.0.1:W/realtime/ws", "live_ws": "ws://127.0.0.1:L/live/ws", "session_id": "..."}
(v2 keys only with v2, live_ws only with live) and logs to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from . import wire
from .audio import DEFAULT_CHUNK_PROFILE, parse_chunk_profile
from .faults import DROP_MODES, INJECT_KINDS, TOKEN_FAULTS, Faults
from .options import (
    DEFAULT_MOB_SESSION_ID,
    DEFAULT_REALM,
    DEFAULT_SESSION_ID,
    DEFAULT_SURFACE,
    LIVE_TERMINAL_MODES,
    SURFACES,
    TOOL_OUTCOMES,
    ServerOptions,
    parse_range_ms,
)
from .server import DevServer

EPILOG = """\
surfaces:
  live  Meerkat 0.6.5+ (today's): JSON-RPC live/* and mob/member_live_*, the /live/ws listener
  v2    Meerkat 0.6.0-0.6.4: JSON-RPC realtime/*, the REST proxy, /realtime/ws
  both  an extension (no real Meerkat serves both): both method sets and all listeners

realistic defaults: v2 output audio carries no item ids (--item-ids is an extension); audio
chunks are drawn from 40-240 ms (60%%) and 500-2000 ms (40%%); a cancel takes 150-400 ms, during
which the cancelled reply keeps streaming; truncates are answered after 80-250 ms; input
transcripts complete 300 ms after the commit; tool calls are off (--tool-every, --tool-trigger).
"""


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


def _profile(value: str) -> str:
    try:
        parse_chunk_profile(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _range(value: str) -> str:
    try:
        parse_range_ms(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="meerkat-devserver",
        description="A local Meerkat-compatible realtime host: the live surface (Meerkat 0.6.5+) "
        "and/or protocol v2 (Meerkat 0.6.2), with a scripted voice agent, recording and fault "
        "injection. It behaves like the real server, awkward parts included.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    net = p.add_argument_group("listeners")
    net.add_argument("--surface", choices=SURFACES, default=DEFAULT_SURFACE,
                     help=f"which Meerkat to be (default {DEFAULT_SURFACE})")
    net.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    net.add_argument("--rpc-port", type=int, default=0, help="JSON-RPC TCP port (0 = ephemeral)")
    net.add_argument("--ws-port", type=int, default=0, help="v2 /realtime/ws port (0 = ephemeral)")
    net.add_argument("--live-ws-port", type=int, default=0, help="live /live/ws port (0 = ephemeral)")
    net.add_argument("--rest-port", type=int, default=0, help="v2 REST proxy port (0 = ephemeral)")
    net.add_argument("--live-ws-scheme", choices=("ws", "wss"), default="ws",
                     help="scheme advertised in live transport.url (the listener is plain ws)")
    net.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    net.add_argument("--tls", action="store_true",
                     help="extension: both WebSocket listeners speak TLS (wss://) with a certificate from a CA "
                     "made at start-up (the real server needs a TLS proxy for that); the CA is written as "
                     "ca.der (for the device's tls.ca_file) and ca.pem to --tls-dir")
    net.add_argument("--tls-dir", metavar="DIR", help="where --tls writes ca.der and ca.pem (default: a temporary directory)")
    net.add_argument("--tls-hostname", action="append", metavar="NAME",
                     help="a name the --tls certificate holds (repeatable; default 127.0.0.1 and localhost)")

    ses = p.add_argument_group("session")
    ses.add_argument("--session-id", default=DEFAULT_SESSION_ID)
    ses.add_argument("--mob-member", metavar="MOB_ID/AGENT_IDENTITY",
                     help="a mob member hosting the same agent on its own bridge session")
    ses.add_argument("--mob-session-id", default=DEFAULT_MOB_SESSION_ID)
    ses.add_argument("--realm", default=DEFAULT_REALM)
    ses.add_argument("--token-ttl", type=float, default=60.0, help="token TTL in seconds (default 60)")
    ses.add_argument(
        "--turning-modes",
        type=_modes,
        default=wire.TURNING_MODES,
        help="v2: comma-separated (default provider_managed,explicit_commit)",
    )
    ses.add_argument(
        "--item-ids",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="v2 EXTENSION: item_id/response_id/content_index on output_audio_chunk (default off, "
        "exactly Meerkat 0.6.2; live always has them)",
    )
    ses.add_argument("--id-style", choices=("openai", "short"), default="openai",
                     help="provider ids like OpenAI's (default) or item_1/resp_1")
    ses.add_argument(
        "--reconnect-policy",
        type=_policy,
        default=None,
        help='v2: default policy when open_info has none, JSON, e.g. \'{"max_attempts":5}\'',
    )

    agent = p.add_argument_group("scripted agent")
    agent.add_argument("--reply-wav", help="reply audio, 24 kHz mono 16-bit WAV (default: the fixture)")
    agent.add_argument("--reply-text", help="the reply's transcript text")
    agent.add_argument("--reply-speed", type=float, default=4.0, help="x real time (0 = all at once; default 4)")
    agent.add_argument("--reply-head-start-ms", type=int, default=1000)
    agent.add_argument("--reply-latency-ms", type=int, default=200, help="commit to first output (default 200)")
    agent.add_argument("--transcription-latency-ms", type=int, default=300,
                       help="commit to the final input transcript (default 300)")
    agent.add_argument("--chunk-ms", type=_profile, default=DEFAULT_CHUNK_PROFILE,
                       help=f"output chunk bands MIN-MAX[:WEIGHT],... (default {DEFAULT_CHUNK_PROFILE})")
    agent.add_argument("--cancel-latency-ms", type=_range, default="150-400",
                       help="cancel to response.done(cancelled), stale deltas meanwhile (default 150-400)")
    agent.add_argument("--truncate-latency-ms", type=_range, default="80-250",
                       help="truncate to its answer (default 80-250)")
    agent.add_argument("--seed", type=int, default=1)
    agent.add_argument("--vad-threshold-dbfs", type=float, default=-40.0)
    agent.add_argument("--vad-onset-ms", type=int, default=40)
    agent.add_argument("--vad-silence-ms", type=int, default=500)

    tool = p.add_argument_group("scripted tool (off by default)")
    tool.add_argument("--tool-every", type=int, default=0, metavar="N", help="every Nth reply calls the tool")
    tool.add_argument("--tool-trigger", metavar="PHRASE", help="a typed turn containing PHRASE calls the tool")
    tool.add_argument("--tool-name", default="get_weather")
    tool.add_argument("--tool-arguments", default='{"city":"Lisbon"}', help="JSON text")
    tool.add_argument("--tool-duration-ms", type=int, default=1500)
    tool.add_argument("--tool-outcome", choices=TOOL_OUTCOMES, default="completed")
    tool.add_argument("--live-tool-timeout-ms", type=int, default=30000)

    live = p.add_argument_group("live surface")
    live.add_argument("--live-terminal", choices=LIVE_TERMINAL_MODES, default="drop",
                      help="terminal errors: drop the socket silently (0.7.0+, default) or publish "
                      "an error observation and Close 1008 (0.6.5)")
    live.add_argument("--audio-lane-capacity", type=int, default=64)

    rec = p.add_argument_group("recording")
    rec.add_argument("--record", metavar="DIR", help="write frames.jsonl, sent.jsonl, rpc.jsonl, input.wav")

    f = p.add_argument_group("faults (timed ones count from channel.opened / the ready observation)")
    f.add_argument("--drop-after-frames", type=int, metavar="N")
    f.add_argument("--drop-at", type=float, metavar="SECONDS")
    f.add_argument("--drop-mode", choices=DROP_MODES, default="reset")
    f.add_argument("--open-delay", type=float, default=0.0, metavar="SECONDS",
                   help="v2: hold channel.opened; live: the provider session takes this long to open")
    f.add_argument("--open-error", choices=wire.OPEN_BIND_ERROR_CODES)
    f.add_argument("--ready-delay", type=float, default=0.0, metavar="SECONDS", help="live: hold `ready` back")
    f.add_argument("--token-fault", choices=TOKEN_FAULTS, help="live: the next token is already expired/consumed")
    f.add_argument("--reconnect-at", type=float, metavar="SECONDS", help="v2: start a reconnect cycle")
    f.add_argument(
        "--reconnect-failures",
        type=int,
        default=0,
        metavar="N",
        help="v2: failed attempts before success (>= max_attempts: exhaustion)",
    )
    f.add_argument("--provider-error-at", type=float, metavar="SECONDS")
    f.add_argument("--provider-error-code", choices=wire.PROVIDER_ERROR_CODES, default="authentication_failed")
    f.add_argument("--provider-close-at", type=float, metavar="SECONDS", help="the provider stream ends cleanly")
    f.add_argument("--tool-hang", action="store_true", help="the tool never completes (for --tool-hang-for)")
    f.add_argument("--tool-hang-for", type=float, default=3600.0, metavar="SECONDS")
    f.add_argument("--inject", type=_inject, action="append", default=[], metavar="KIND@SECONDS")
    f.add_argument("--oversized-bytes", type=int, default=1 << 20)
    f.add_argument("--unknown-fields", action="store_true", help="every server frame gains unknown fields")
    f.add_argument("--backpressure-inputs", type=int, default=0, metavar="N",
                   help="live: the next N inputs get command_rejected input_backpressured")
    f.add_argument("--pause-reading-at", type=float, metavar="SECONDS")
    f.add_argument("--pause-reading-for", type=float, default=5.0, metavar="SECONDS")
    f.add_argument("--bootstrap-error", type=_bootstrap_error, metavar="CODE[:MESSAGE]")
    f.add_argument("--fault-repeat", action="store_true", help="faults fire on every connection")

    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    faults = Faults(
        drop_after_frames=args.drop_after_frames,
        drop_at=args.drop_at,
        drop_mode=args.drop_mode,
        open_delay=args.open_delay,
        open_error=args.open_error,
        ready_delay=args.ready_delay,
        token_fault=args.token_fault,
        reconnect_at=args.reconnect_at,
        reconnect_failures=args.reconnect_failures,
        provider_error_at=args.provider_error_at,
        provider_error_code=args.provider_error_code,
        provider_close_at=args.provider_close_at,
        tool_hang=args.tool_hang,
        tool_hang_for=args.tool_hang_for,
        inject_at=list(args.inject),
        oversized_bytes=args.oversized_bytes,
        unknown_fields=args.unknown_fields,
        backpressure_inputs=args.backpressure_inputs,
        pause_reading_at=args.pause_reading_at,
        pause_reading_for=args.pause_reading_for,
        bootstrap_error=args.bootstrap_error,
        repeat=args.fault_repeat,
    )
    options = ServerOptions(
        surface=args.surface,
        host=args.host,
        rpc_port=args.rpc_port,
        ws_port=args.ws_port,
        live_ws_port=args.live_ws_port,
        rest_port=args.rest_port,
        live_ws_scheme=args.live_ws_scheme,
        tls=args.tls,
        tls_dir=args.tls_dir,
        tls_hostnames=tuple(args.tls_hostname) if args.tls_hostname else ("127.0.0.1", "localhost"),
        allow_remote=args.allow_remote,
        session_id=args.session_id,
        mob_member=args.mob_member,
        mob_session_id=args.mob_session_id,
        realm=args.realm,
        token_ttl=args.token_ttl,
        turning_modes=args.turning_modes,
        item_ids=args.item_ids,
        id_style=args.id_style,
        record_dir=args.record,
        reply_wav=args.reply_wav,
        reply_text=args.reply_text,
        reply_speed=args.reply_speed,
        reply_head_start_ms=args.reply_head_start_ms,
        reply_latency_ms=args.reply_latency_ms,
        transcription_latency_ms=args.transcription_latency_ms,
        chunk_profile=args.chunk_ms,
        cancel_latency_ms=args.cancel_latency_ms,
        truncate_latency_ms=args.truncate_latency_ms,
        seed=args.seed,
        vad_threshold_dbfs=args.vad_threshold_dbfs,
        vad_onset_ms=args.vad_onset_ms,
        vad_silence_ms=args.vad_silence_ms,
        tool_call_every=args.tool_every,
        tool_trigger=args.tool_trigger,
        tool_name=args.tool_name,
        tool_arguments=args.tool_arguments,
        tool_duration_ms=args.tool_duration_ms,
        tool_outcome=args.tool_outcome,
        live_tool_timeout_ms=args.live_tool_timeout_ms,
        live_terminal=args.live_terminal,
        audio_lane_capacity=args.audio_lane_capacity,
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
