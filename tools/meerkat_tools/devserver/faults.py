"""Fault-injection switches and the bad frames the server can send a client.

`Faults` is a plain mutable object: set fields at start-up (options, CLI flags) or at run time
(`srv.faults.drop_after_frames = 5`). Timed faults count seconds from the moment a primary
channel's `channel.opened` was sent (v2) or its `ready` observation (live). A fault fires
once and then disarms itself unless `repeat` is set, so a client that reconnects after a
dropped socket meets a healthy server; with `repeat` every new connection meets the fault
again.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from . import wire

# What `inject(kind)` can send (none of these is real-server behaviour; they exercise the
# client's parser and limits). Each has a v2 and a live form.
INJECT_KINDS = (
    "malformed",  # a text frame that is not JSON
    "oversized",  # a valid JSON text frame of `size` bytes (default 1 MiB)
    "oversized_audio",  # a valid audio chunk frame of about `size` bytes (silence)
    "unknown_event",  # v2: channel.event of an unknown type; live: an unknown observation
    "unknown_frame",  # v2: an unknown frame type; live: JSON with neither observation nor error
    "unknown_observation",  # live: {"observation":"devserver_unknown"} (v2: as unknown_event)
    "unknown",  # live: the real {"observation":"unknown","debug":...} floor (v2: as unknown_event)
    "unknown_fields",  # a known status frame with extra unknown fields
    "binary",  # a binary WebSocket message (the real servers never send one)
    "bad_ws_frame",  # raw bytes that break RFC 6455 (reserved opcode 0x3)
)
DROP_MODES = ("reset", "close", "silent")
TOKEN_FAULTS = ("expire", "consume")
DEFAULT_OVERSIZED = 1 << 20


@dataclass
class Faults:
    # Drop the socket (see drop_mode) after this many client data frames on a connection
    # (text and binary messages, channel.open included; the Nth frame is still processed).
    drop_after_frames: int | None = None
    # Drop the primary's socket this many seconds after channel.opened.
    drop_at: float | None = None
    # "reset": abort (RST); "close": FIN without a WebSocket close frame; "silent": stop
    # reading and writing but keep the TCP connection up (a dead Wi-Fi link).
    drop_mode: str = "reset"
    # How long a "silent" drop keeps the dead socket before resetting it (a TCP give-up).
    silent_hold: float = 30.0
    # Hold channel.opened back by this many seconds (a slow provider bind).
    open_delay: float = 0.0
    # Fail the bind step of channel.open with this code (token consumed, 1008 close).
    open_error: str | None = None
    # Start a reconnect cycle this many seconds after channel.opened ...
    reconnect_at: float | None = None
    # ... in which this many attempts fail before one succeeds (>= max_attempts: exhaustion).
    reconnect_failures: int = 0
    # Terminal provider error this many seconds after channel.opened.
    provider_error_at: float | None = None
    provider_error_code: str = "authentication_failed"
    # [(seconds after channel.opened, kind)] frames to inject into the primary channel.
    inject_at: list[tuple[float, str]] = field(default_factory=list)
    oversized_bytes: int = DEFAULT_OVERSIZED
    # Stop reading the primary's socket at `pause_reading_at` for `pause_reading_for` seconds.
    pause_reading_at: float | None = None
    pause_reading_for: float = 0.0
    # The provider's event stream ends cleanly this many seconds after the channel opened
    # (v2: reconnect or a channel left without provider; live: status_changed{closed}, drop).
    provider_close_at: float | None = None
    # The scripted tool never completes: it holds the call (and on v2 the socket loop) for
    # `tool_hang_for` seconds, whatever the tool timeout (the client must give up).
    tool_hang: bool = False
    tool_hang_for: float = 3600.0
    # live: hold the first `ready` observation back this many seconds after admission.
    ready_delay: float = 0.0
    # live: the next token minted is already "expire"d or "consume"d when presented.
    token_fault: str | None = None
    # Every server frame gains unknown fields (clients must ignore them).
    unknown_fields: bool = False
    # live: the next N input frames are refused with command_rejected input_backpressured.
    backpressure_inputs: int = 0
    # Bootstrap failure: (json-rpc code, message) answered to every open (realtime/open_info,
    # live/open, mob/member_live_open).
    bootstrap_error: tuple[int, str] | None = None
    # The REST proxy behaves as if rkat-rpc were unreachable (502 PROVIDER_ERROR).
    rest_rpc_unreachable: bool = False
    # Mint grants whose capabilities list only these turning modes (reaches the otherwise
    # unreachable `unsupported_turning_mode` open check).
    grant_turning_modes: list[str] | None = None
    # Check audio chunks against this rate while still advertising 24 kHz: a provider whose
    # format changed after channel.opened (reaches the client's audio_format_mismatch path).
    expect_input_rate_hz: int | None = None
    repeat: bool = False

    def validate(self) -> None:
        if self.drop_mode not in DROP_MODES:
            raise ValueError(f"drop_mode must be one of {DROP_MODES}, not {self.drop_mode!r}")
        if self.open_error is not None and self.open_error not in wire.OPEN_BIND_ERROR_CODES:
            raise ValueError(f"open_error must be one of {wire.OPEN_BIND_ERROR_CODES}")
        if self.provider_error_code not in wire.PROVIDER_ERROR_CODES:
            raise ValueError(f"provider_error_code must be one of {wire.PROVIDER_ERROR_CODES}")
        for _, kind in self.inject_at:
            if kind not in INJECT_KINDS:
                raise ValueError(f"inject kind must be one of {INJECT_KINDS}, not {kind!r}")
        if self.token_fault is not None and self.token_fault not in TOKEN_FAULTS:
            raise ValueError(f"token_fault must be one of {TOKEN_FAULTS}")

    def consume(self, name: str) -> None:
        """A fault fired: disarm it unless faults repeat (a count always counts down)."""
        if name == "backpressure_inputs":
            self.backpressure_inputs = max(0, self.backpressure_inputs - 1)
            return
        if self.repeat:
            return
        if name == "inject_at":
            self.inject_at = []
        elif name == "reconnect_at":
            self.reconnect_at = None
        elif name == "pause_reading_at":
            self.pause_reading_at = None
        elif name == "open_delay":
            self.open_delay = 0.0
        elif name == "ready_delay":
            self.ready_delay = 0.0
        else:
            setattr(self, name, None)


def injected_payload(kind: str, size: int | None = None, surface: str = "v2",
                     ids: dict | None = None) -> tuple[str, bytes]:
    """(how to send, payload) for an injected frame: how is "text", "binary" or "raw"."""
    live = surface == "live"
    total = DEFAULT_OVERSIZED if size is None else size
    if kind == "malformed":
        if live:
            return "text", b'{"observation":"assistant_transcript_delta","delta":'
        return "text", b'{"type":"channel.event","event":{"type":"output_text_delta","delta":'
    if kind in ("unknown_event", "unknown_observation", "unknown"):
        if not live:
            frame = wire.event_frame({"type": "devserver_unknown_event", "note": "ignore me"})
        elif kind == "unknown":
            frame = {"observation": "unknown", "debug": "devserver_injected_variant"}
        else:
            frame = {"observation": "devserver_unknown", "note": "ignore me"}
        return "text", wire.dumps(frame).encode()
    if kind == "unknown_frame":
        if live:
            return "text", wire.dumps({"devserver": "neither an observation nor an error"}).encode()
        return "text", wire.dumps({"type": "channel.devserver_unknown", "note": "ignore me"}).encode()
    if kind == "unknown_fields":
        if live:
            frame = {"observation": "status_changed", "status": {"status": "ready", "devserver_extra": 1},
                     "devserver_extra": {"nested": [1, 2]}}
        else:
            frame = {"type": "channel.status", "status": dict(wire.status_ready(), devserver_extra=1),
                     "devserver_extra": {"nested": [1, 2]}}
        return "text", wire.dumps(frame).encode()
    if kind == "binary":
        return "binary", base64.b64decode("3q2+7wABAgM=")
    if kind == "bad_ws_frame":
        return "raw", b"\x83\x00"
    if kind == "oversized":
        if live:
            head = '{"observation":"devserver_padding","padding":"'
            tail = '"}'
        else:
            head = '{"type":"channel.event","event":{"type":"devserver_padding","padding":"'
            tail = '"}}'
        pad = max(0, total - len(head) - len(tail))
        return "text", (head + "x" * pad + tail).encode()
    if kind == "oversized_audio":
        ids = ids or {"response_id": "resp_devserver_oversized", "item_id": "item_devserver_oversized",
                      "content_index": 0}
        pcm_bytes = max(6, (total - 200) * 3 // 4 // 6 * 6)  # base64 grows by 4/3
        data = base64.b64encode(bytes(pcm_bytes)).decode("ascii")
        if live:
            frame = {"observation": "assistant_audio_chunk", "data": data, "sample_rate_hz": 24000,
                     "channels": 1, **ids}
        else:
            chunk = dict(wire.audio_format(), data=data)
            frame = wire.event_frame({"type": "output_audio_chunk", "chunk": chunk})
        return "text", wire.dumps(frame).encode()
    raise ValueError(f"unknown inject kind {kind!r}; one of {INJECT_KINDS}")
