"""Protocol v2 wire shapes as the development server speaks them.

Server frames are built as plain dicts in the field order serde would emit them (frame `type`
first, optional fields omitted rather than null) and serialized compactly with `dumps`. Client
frames are checked by `parse_client_frame`, which plays the part of serde's typed
deserialization of `RealtimeClientFrame`: anything it rejects becomes `invalid_frame`.
Reference: ../shared/reference/meerkat-realtime-v2.md sections 3 and 4.
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

PROTOCOL_VERSION = "2"
WS_PATH = "/realtime/ws"

AUDIO_MIME = "audio/pcm"
SAMPLE_RATE_HZ = 24000
CHANNELS = 1
BYTES_PER_MS = SAMPLE_RATE_HZ * 2 // 1000  # 48: PCM16 mono at 24 kHz

ROLES = ("primary", "observer")
TURNING_MODES = ("provider_managed", "explicit_commit")

DEFAULT_RECONNECT_POLICY = {
    "max_attempts": 3,
    "initial_backoff_ms": 500,
    "max_backoff_ms": 5000,
    "max_total_ms": 30000,
}

# Status reasons (meerkat_machine_types.rs projection, reference section 3.4).
REASON_CLOSED = "no realtime channel is open for this target"
REASON_OPENING = "realtime attachment is pending"
REASON_REATTACH = "realtime attachment requires reattach"
REASON_EXHAUSTED = "realtime reconnect attempts exhausted"

# Messages of the open checks (RealtimeOpenError Display, reference section 4.1).
OPEN_ERROR_MESSAGES = {
    "invalid_open_token": "invalid open token",
    "open_token_expired": "open token expired",
    "role_mismatch": "requested role does not match the issued bootstrap token",
    "turning_mode_mismatch": "requested turning mode does not match the issued bootstrap token",
    "unsupported_turning_mode": "requested turning mode is not supported by this target",
    "target_busy": "target already has an active primary realtime channel",
    "unauthorized_realm": "open token belongs to a different realm and cannot be redeemed here",
}

MSG_EXPECTED_OPEN = "first realtime websocket frame must be channel.open"
MSG_OBSERVER_READ_ONLY = "observer channels may not send input or control frames"
MSG_UNEXPECTED_OPEN = "channel.open is only valid as the first realtime websocket frame"
MSG_COMMIT_UNAVAILABLE = "channel.commit_turn is only valid for explicit_commit channels"
MSG_RECONNECTING = {
    "channel.input": "realtime provider session is reconnecting; wait for the channel to become ready",
    "channel.commit_turn": "realtime provider session is reconnecting; retry commit_turn once ready",
    "channel.interrupt": "realtime provider session is reconnecting; retry interrupt once ready",
    "channel.barge_in_truncate": "realtime provider session is reconnecting; retry barge-in once ready",
}
MSG_NO_STAGED_INPUT = "realtime commit_turn failed: realtime commit_turn requires staged input"
MSG_VIDEO_UNSUPPORTED = (
    "realtime input failed: openai realtime video input is not supported by the current adapter"
)
EVENT_PUMP_PREFIX = "realtime event_pump failed: "

# The codes a forced provider error may carry (realtime_client_error_frame mapping, section 5.10).
PROVIDER_ERROR_CODES = (
    "invalid_request",
    "authentication_failed",
    "content_filtered",
    "model_not_found",
    "provider_session_failed",
    "provider_session_closed",  # a clean provider close whose reattach marking failed
)
# Bind failures a forced open error may carry (section 1.6 step 10).
OPEN_BIND_ERROR_CODES = (
    "invalid_target",
    "runtime_not_ready",
    "runtime_internal",
    "authentication_failed",
    "model_not_found",
    "content_filtered",
    "invalid_request",
    "provider_session_failed",
)


def dumps(obj: Any) -> str:
    """Compact JSON, field order as built (the client decodes audio best when `data` is last)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def rfc3339(epoch_seconds: float) -> str:
    """chrono's to_rfc3339(): UTC with a `+00:00` offset and a fractional part."""
    moment = _dt.datetime.fromtimestamp(epoch_seconds, tz=_dt.timezone.utc)
    return moment.isoformat(timespec="microseconds")


def audio_format(sample_rate_hz: int = SAMPLE_RATE_HZ) -> dict:
    return {"mime_type": AUDIO_MIME, "sample_rate_hz": sample_rate_hz, "channels": CHANNELS}


def capabilities(turning_modes: list[str] | tuple[str, ...], input_rate_hz: int = SAMPLE_RATE_HZ) -> dict:
    """Full OpenAI-factory capabilities (section 3.6); empty lists would be omitted."""
    caps: dict[str, Any] = {
        "input_kinds": ["text", "audio"],
        "output_kinds": ["text", "audio"],
    }
    if turning_modes:
        caps["turning_modes"] = list(turning_modes)
    caps.update(
        {
            "interrupt_supported": True,
            "transcript_supported": True,
            "tool_lifecycle_events_supported": True,
            "video_supported": False,
            "audio_input_format": audio_format(input_rate_hz),
            "audio_output_format": audio_format(),
        }
    )
    return caps


# -- statuses (section 3.4) ---------------------------------------------------------------


def status(
    state: str,
    attempt_count: int = 0,
    next_retry_at: str | None = None,
    deadline_at: str | None = None,
    reason: str | None = None,
) -> dict:
    out: dict[str, Any] = {"state": state, "attempt_count": attempt_count}
    if next_retry_at is not None:
        out["next_retry_at"] = next_retry_at
    if deadline_at is not None:
        out["deadline_at"] = deadline_at
    if reason is not None:
        out["reason"] = reason
    return out


def status_ready() -> dict:
    return status("ready")


def status_closed() -> dict:
    return status("closed", reason=REASON_CLOSED)


def status_opening() -> dict:
    return status("opening", reason=REASON_OPENING)


def status_exhausted() -> dict:
    return status("error", reason=REASON_EXHAUSTED)


# -- server frames (section 3.2) ----------------------------------------------------------


def opened_frame(status_obj: dict, caps: dict, role: str) -> dict:
    return {
        "type": "channel.opened",
        "protocol_version": PROTOCOL_VERSION,
        "status": status_obj,
        "capabilities": caps,
        "role": role,
    }


def status_frame(status_obj: dict) -> dict:
    return {"type": "channel.status", "status": status_obj}


def event_frame(event: dict) -> dict:
    return {"type": "channel.event", "event": event}


def error_frame(code: str, message: str, details: dict | None = None) -> dict:
    frame: dict[str, Any] = {"type": "channel.error", "code": code, "message": message}
    if details is not None:
        frame["details"] = details
    return frame


def closed_frame(reason: str) -> dict:
    return {"type": "channel.closed", "reason": reason}


def audio_mismatch(actual: dict, expected_rate_hz: int = SAMPLE_RATE_HZ) -> tuple[str, dict]:
    """Message and details of `audio_format_mismatch` (section 5.3 step 2, 3.7)."""
    exp = audio_format(expected_rate_hz)
    message = (
        "audio input format does not match provider negotiated format: expected "
        f"{exp['mime_type']} @ {exp['sample_rate_hz']} Hz / {exp['channels']} ch, got "
        f"{actual['mime_type']} @ {actual['sample_rate_hz']} Hz / {actual['channels']} ch"
    )
    return message, {"kind": "audio_format_mismatch", "expected": exp, "actual": actual}


# -- client frames (section 3.1) ----------------------------------------------------------


class FrameError(ValueError):
    """The text is not a `RealtimeClientFrame`; str() is the serde-like reason."""


CLIENT_FRAME_TYPES = (
    "channel.open",
    "channel.input",
    "channel.commit_turn",
    "channel.interrupt",
    "channel.barge_in_truncate",
    "channel.close",
)
_CHUNK_KINDS = ("text_chunk", "audio_chunk", "video_chunk")
_UINT_MAX = {"u8": 0xFF, "u32": 0xFFFFFFFF, "u64": 0xFFFFFFFFFFFFFFFF}


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f"string {json.dumps(value)}"
    if isinstance(value, list):
        return "sequence"
    return "map"


def _variants(options: tuple[str, ...]) -> str:
    if len(options) == 1:
        return f"`{options[0]}`"
    return "one of " + ", ".join(f"`{o}`" for o in options)


def _field(obj: dict, name: str) -> Any:
    if name not in obj:
        raise FrameError(f"missing field `{name}`")
    return obj[name]


def _string(obj: dict, name: str) -> str:
    value = _field(obj, name)
    if not isinstance(value, str):
        raise FrameError(f"invalid type: {_json_kind(value)}, expected a string")
    return value


def _uint(obj: dict, name: str, width: str) -> int:
    value = _field(obj, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise FrameError(f"invalid type: {_json_kind(value)}, expected {width}")
    if value < 0 or value > _UINT_MAX[width]:
        raise FrameError(f"invalid value: integer `{value}`, expected {width}")
    return value


def _enum(obj: dict, name: str, options: tuple[str, ...]) -> str:
    value = _field(obj, name)
    if not isinstance(value, str):
        raise FrameError(f"invalid type: {_json_kind(value)}, expected {_variants(options)}")
    if value not in options:
        raise FrameError(f"unknown variant `{value}`, expected {_variants(options)}")
    return value


def _check_chunk(chunk: Any) -> None:
    if not isinstance(chunk, dict):
        raise FrameError(f"invalid type: {_json_kind(chunk)}, expected internally tagged enum")
    kind = _enum(chunk, "kind", _CHUNK_KINDS)
    if kind == "text_chunk":
        _string(chunk, "text")
    elif kind == "audio_chunk":
        _string(chunk, "mime_type")
        _uint(chunk, "sample_rate_hz", "u32")
        _uint(chunk, "channels", "u8")
        _string(chunk, "data")
    else:
        _string(chunk, "mime_type")
        _string(chunk, "data")


def parse_client_frame(text: str) -> dict:
    """Decode one client text frame or raise FrameError("failed to parse realtime frame: ...")."""
    try:
        try:
            frame = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FrameError(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
        if not isinstance(frame, dict):
            raise FrameError(
                f"invalid type: {_json_kind(frame)}, expected internally tagged enum RealtimeClientFrame"
            )
        kind = _enum(frame, "type", CLIENT_FRAME_TYPES)
        if kind == "channel.open":
            _enum(frame, "protocol_version", (PROTOCOL_VERSION,))
            _string(frame, "open_token")
            _enum(frame, "role", ROLES)
            _enum(frame, "turning_mode", TURNING_MODES)
        elif kind == "channel.input":
            _check_chunk(_field(frame, "chunk"))
        elif kind == "channel.barge_in_truncate":
            _string(frame, "item_id")
            _uint(frame, "content_index", "u32")
            _uint(frame, "audio_played_ms", "u64")
        return frame
    except FrameError as exc:
        raise FrameError(f"failed to parse realtime frame: {exc}") from None
