"""Server options: one dataclass with documented defaults (the CLI maps flags onto it).

The defaults are the real server's behaviour: protocol v2 exactly as Meerkat 0.6.2 (no item ids
on output audio), the live surface as Meerkat 0.8.26, and timings drawn from realistic ranges.
Everything friendlier is an extension that is off unless asked for (`item_ids`, surface
`both`), or a speed-up meant for tests (`reply_speed=0`, zero latencies).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from . import wire
from .audio import DEFAULT_CHUNK_PROFILE, parse_chunk_profile
from .faults import Faults

DEFAULT_SESSION_ID = "019e0000-de00-7000-8000-00000000d3f5"
# The bridge session of the optional mob member (a separate session hosting the same agent).
DEFAULT_MOB_SESSION_ID = "019e0000-de00-7000-8000-0000000b0b01"
DEFAULT_REALM = "devserver"
SURFACES = ("live", "v2", "both")
DEFAULT_SURFACE = "live"  # today's Meerkat (0.6.5 onwards); v2 lived only in 0.6.0-0.6.4
TOOL_OUTCOMES = ("completed", "failed")
LIVE_TERMINAL_MODES = ("drop", "publish")


def parse_range_ms(value: str | int | tuple[int, int]) -> tuple[int, int]:
    """"LO-HI", "N", N or (LO, HI) -> (LO, HI) in ms; ValueError if negative or reversed."""
    if isinstance(value, tuple):
        lo, hi = value
    elif isinstance(value, int):
        lo = hi = value
    else:
        text = str(value).strip()
        a, _, b = text.partition("-")
        try:
            lo, hi = int(a), int(b or a)
        except ValueError:
            raise ValueError(f"{value!r}: use MS or LO-HI in ms") from None
    if not 0 <= lo <= hi:
        raise ValueError(f"{value!r}: need 0 <= LO <= HI")
    return int(lo), int(hi)


@dataclass
class ServerOptions:
    # -- listeners --------------------------------------------------------------------------
    host: str = "127.0.0.1"
    rpc_port: int = 0  # 0 = ephemeral (JSON-RPC over TCP, both surfaces)
    ws_port: int = 0  # the v2 `/realtime/ws` listener (`--realtime-ws`)
    live_ws_port: int = 0  # the `/live/ws` listener (`--live-ws`)
    rest_port: int = 0  # the v2 REST proxy (`rkat-rest --realtime-rpc-tcp`)
    allow_remote: bool = False  # like rkat-rpc: non-loopback binds need an explicit opt-in
    # "live" (Meerkat 0.6.5+), "v2" (Meerkat 0.6.0-0.6.4), or "both" (an extension: no real
    # Meerkat serves both at once).
    surface: str = DEFAULT_SURFACE
    live_ws_scheme: str = "ws"  # `--live-ws-scheme`: advertised in transport.url only
    # TLS (an extension: the real server has none, wss:// means a TLS proxy in front of it):
    # both WebSocket listeners speak TLS with a certificate from a CA made at start-up, and
    # the URLs handed out say wss:// (tls.py). The CA goes to tls_dir as ca.der (for the
    # device) and ca.pem; None: a temporary directory, removed when the server stops.
    tls: bool = False
    tls_dir: str | Path | None = None
    tls_hostnames: tuple[str, ...] = ("127.0.0.1", "localhost")  # the names the certificate holds
    tls_not_before: datetime.datetime | None = None  # the certificate's start; None: an hour ago
    # -- the session ------------------------------------------------------------------------
    session_id: str = DEFAULT_SESSION_ID
    # "MOB_ID/AGENT_IDENTITY": a mob member whose own bridge session hosts the same agent
    # (v2 `mob_member` targets, `mob/member_live_*`). None: no mob exists.
    mob_member: str | None = None
    mob_session_id: str = DEFAULT_MOB_SESSION_ID
    realm: str = DEFAULT_REALM
    token_ttl: float = 60.0  # seconds, both surfaces
    turning_modes: tuple[str, ...] = wire.TURNING_MODES
    # The item_id/response_id/content_index extension on v2 output_audio_chunk. Off: exactly
    # Meerkat 0.6.2. (The live surface always carries ids; this switch does not touch it.)
    item_ids: bool = False
    id_style: str = "openai"  # provider ids like OpenAI's ("item_" + 21 chars) or "short"
    # The provider's negotiated input rate (v2 audio_input_format, and what audio chunks are
    # checked against). Anything but 24000 makes a 24 kHz device refuse to open.
    input_rate_hz: int = 24000
    # v2: reconnect policy used when open_info carried none.
    reconnect_policy: dict = field(default_factory=lambda: dict(wire.DEFAULT_RECONNECT_POLICY))
    # -- the scripted agent -----------------------------------------------------------------
    record_dir: str | Path | None = None
    reply_wav: str | Path | None = None  # 24 kHz mono PCM16; default: the assistant_reply fixture
    reply_text: str | None = None  # default: the fixture's sentence, or a generic one
    reply_speed: float = 4.0  # audio generated at this many x real time; 0 = all at once
    reply_head_start_ms: int = 1000  # audio allowed ahead of the pace at the start
    reply_latency_ms: int = 200  # from the commit to the first output
    # From the commit to the completed input transcript (its deltas are spread before): longer
    # than reply_latency_ms by default, so the final transcript arrives after output started,
    # as OpenAI's asynchronous transcription often does.
    transcription_latency_ms: int = 300
    # Output chunk durations: "MIN-MAX[:WEIGHT],..." bands in ms (see audio.py).
    chunk_profile: str = DEFAULT_CHUNK_PROFILE
    # If both are set, chunks are uniform in [chunk_min_ms, chunk_max_ms] instead.
    chunk_min_ms: int | None = None
    chunk_max_ms: int | None = None
    # From response.cancel (interrupt, preemption, server VAD) until the provider's
    # response.done(cancelled): the cancelled response keeps streaming stale deltas meanwhile.
    # Drawn uniformly in [LO, HI] ms per cancel.
    cancel_latency_ms: str | int | tuple[int, int] = "150-400"
    # From a truncate until the provider's conversation.item.truncated (or its error).
    truncate_latency_ms: str | int | tuple[int, int] = "80-250"
    seed: int = 1  # chunk sizes, ids, latencies and reconnect jitter come from seeded generators
    vad_threshold_dbfs: float = -40.0
    vad_onset_ms: int = 40
    vad_silence_ms: int = 500
    # -- the scripted tool (off by default, so plain conversations stay plain) --------------
    tool_call_every: int = 0  # every Nth reply starts with a tool call; 0 = never
    tool_trigger: str | None = None  # a typed turn containing this phrase calls the tool
    tool_name: str = "get_weather"
    tool_arguments: str = '{"city":"Lisbon"}'  # JSON text, as OpenAI sends it
    tool_duration_ms: int = 1500  # how long the tool runs (v2: the socket loop is blocked)
    tool_outcome: str = "completed"  # or "failed" (the tool returns an error)
    live_tool_timeout_ms: int = 30000  # `--live-tool-timeout-ms` (v2 uses channel_config)
    # -- live surface -----------------------------------------------------------------------
    # Terminal errors: "drop" (0.7.0+: nothing published, the socket is dropped) or "publish"
    # (0.6.5-0.6.x: an `error` observation, then Close 1008 "terminal:<code>").
    live_terminal: str = "drop"
    audio_lane_capacity: int = 64  # the adapter's lossy audio queue (full: chunk dropped)
    live_status_retention: float = 60.0  # seconds a closed channel's status stays readable
    # -- transport limits -------------------------------------------------------------------
    ws_max_message: int = 64 << 20  # v2: axum/tungstenite defaults
    ws_max_frame: int = 16 << 20
    live_ws_max_message: int = 2 << 20  # live: 2 MiB message and frame
    ws_recv_buffer: int | None = None  # SO_RCVBUF of the WS listeners (smaller: backpressure sooner)
    ws_send_buffer: int | None = None  # SO_SNDBUF of the WS listeners (smaller: our writes block sooner)
    keep_frames: int = 200_000  # recorded frames kept in memory (per direction)
    faults: Faults = field(default_factory=Faults)

    @property
    def serves_v2(self) -> bool:
        return self.surface in ("v2", "both")

    @property
    def serves_live(self) -> bool:
        return self.surface in ("live", "both")

    @property
    def mob(self) -> tuple[str, str] | None:
        if not self.mob_member:
            return None
        mob_id, _, identity = self.mob_member.partition("/")
        return mob_id, identity

    def chunk_bands(self):
        if self.chunk_min_ms is not None and self.chunk_max_ms is not None:
            return parse_chunk_profile(f"{self.chunk_min_ms}-{self.chunk_max_ms}")
        return parse_chunk_profile(self.chunk_profile)

    def validate(self) -> None:
        if self.surface not in SURFACES:
            raise ValueError(f"surface must be one of {SURFACES}, not {self.surface!r}")
        for mode in self.turning_modes:
            if mode not in wire.TURNING_MODES:
                raise ValueError(f"unknown turning mode {mode!r}; use {wire.TURNING_MODES}")
        if not self.turning_modes:
            raise ValueError("at least one turning mode is needed")
        if not self.allow_remote and not _is_loopback(self.host):
            raise ValueError(
                f"refusing to bind {self.host}: not a loopback address (pass allow_remote / "
                "--allow-remote to expose the server; it has no authentication)"
            )
        self.chunk_bands()
        parse_range_ms(self.cancel_latency_ms)
        parse_range_ms(self.truncate_latency_ms)
        if self.reply_speed < 0:
            raise ValueError("reply_speed must be >= 0")
        if self.token_ttl < 0:
            raise ValueError("token_ttl must be >= 0")
        if self.id_style not in ("openai", "short"):
            raise ValueError("id_style must be 'openai' or 'short'")
        if self.tool_outcome not in TOOL_OUTCOMES:
            raise ValueError(f"tool_outcome must be one of {TOOL_OUTCOMES}")
        if self.live_terminal not in LIVE_TERMINAL_MODES:
            raise ValueError(f"live_terminal must be one of {LIVE_TERMINAL_MODES}")
        if self.tool_call_every < 0:
            raise ValueError("tool_call_every must be >= 0")
        if self.mob_member is not None:
            mob = self.mob
            if mob is None or not mob[0] or not mob[1]:
                raise ValueError("mob_member must be MOB_ID/AGENT_IDENTITY")
        if self.live_ws_scheme not in ("ws", "wss"):
            raise ValueError("live_ws_scheme must be ws or wss")
        if self.tls and not self.tls_hostnames:
            raise ValueError("tls_hostnames must name at least one host")
        self.faults.validate()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
