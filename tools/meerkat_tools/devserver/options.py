"""Server options: one dataclass with documented defaults (the CLI maps flags onto it)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from . import wire
from .faults import Faults

DEFAULT_SESSION_ID = "019e0000-de00-7000-8000-00000000d3f5"
DEFAULT_REALM = "devserver"


@dataclass
class ServerOptions:
    host: str = "127.0.0.1"
    rpc_port: int = 0  # 0 = ephemeral
    ws_port: int = 0
    rest_port: int = 0
    allow_remote: bool = False  # like rkat-rpc: non-loopback binds need an explicit opt-in
    session_id: str = DEFAULT_SESSION_ID
    realm: str = DEFAULT_REALM
    token_ttl: float = 60.0  # seconds
    turning_modes: tuple[str, ...] = wire.TURNING_MODES
    item_ids: bool = True  # the item_id/response_id/content_index extension on output audio
    # The provider's negotiated input rate (audio_input_format in the capabilities, and what
    # audio chunks are checked against). Anything but 24000 makes a 24 kHz device refuse to open.
    input_rate_hz: int = 24000
    # Reconnect policy used when open_info carried none.
    reconnect_policy: dict = field(default_factory=lambda: dict(wire.DEFAULT_RECONNECT_POLICY))
    record_dir: str | Path | None = None
    reply_wav: str | Path | None = None  # 24 kHz mono PCM16; default: the assistant_reply fixture
    reply_text: str | None = None  # default: the fixture's sentence, or a generic one
    reply_speed: float = 4.0  # x real time; 0 sends as fast as the socket drains
    reply_head_start_ms: int = 1000  # audio allowed ahead of the pace at the start
    reply_latency_ms: int = 200  # from turn_committed to the first output
    chunk_min_ms: int = 20
    chunk_max_ms: int = 200
    seed: int = 1  # chunk sizes and reconnect jitter are drawn from seeded generators
    vad_threshold_dbfs: float = -40.0
    vad_onset_ms: int = 40
    vad_silence_ms: int = 500
    ws_max_message: int = 64 << 20  # axum/tungstenite defaults
    ws_max_frame: int = 16 << 20
    ws_recv_buffer: int | None = None  # SO_RCVBUF of the WS listener (smaller: backpressure sooner)
    keep_frames: int = 200_000  # recorded frames kept in memory (per direction)
    faults: Faults = field(default_factory=Faults)

    def validate(self) -> None:
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
        if not 1 <= self.chunk_min_ms <= self.chunk_max_ms:
            raise ValueError("need 1 <= chunk_min_ms <= chunk_max_ms")
        if self.reply_speed < 0:
            raise ValueError("reply_speed must be >= 0")
        if self.token_ttl < 0:
            raise ValueError("token_ttl must be >= 0")
        self.faults.validate()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
