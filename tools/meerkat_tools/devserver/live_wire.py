"""The live surface's wire shapes (Meerkat 0.6.5 onwards, as at 0.8.26): `live/*` JSON-RPC
params and results, the `/live/ws` inbound chunk decoder, and the outbound observations.

Observations are built as dicts in serde's field order, internally tagged on `observation`,
optional fields omitted when absent (except inside `realtime_transcript.event`, whose optional
fields are `null`). Reference: ../shared/reference/meerkat-live.md sections 2-5.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from typing import Any


WS_PATH = "/live/ws"
BINARY_FORMAT = "pcm_24k_mono"
SAMPLE_RATE_HZ = 24000
CHANNELS = 1
MAX_CHANNEL_ID_BYTES = 128
MAX_LIVE_WS_CONNECTIONS = 32
INGRESS_BUDGET_BYTES = 6 << 20  # 6291456
MODEL = "gpt-realtime-2"

TURNING_MODES = ("provider_managed", "explicit_commit")
TRANSPORTS = ("websocket", "webrtc")

# Token rejection reasons (transport.rs L585-596).
TOKEN_NOT_FOUND = "token not found"
TOKEN_EXPIRED = "token expired"
TOKEN_WRONG_CHANNEL = "token bound to a different channel"
TOKEN_CONSUMED = "token already consumed"
CHANNEL_NOT_BOUND = "channel not bound"

SATURATED = "live WebSocket connection admission is saturated"
IMAGE_ON_WS = (
    "Direct WebSocket image frames are unsupported; send the image with JSON-RPC live/send_input "
    "and wait for user_content_committed before dependent input"
)


def capabilities() -> dict:
    """The OpenAI adapter's nine booleans (wire/live.rs L328-355)."""
    return {
        "audio_in": True,
        "audio_out": True,
        "text_in": True,
        "text_out": True,
        "image_in": True,
        "video_in": False,
        "transcript_supported": True,
        "barge_in_supported": True,
        "provider_native_resume": False,
    }


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except (ValueError, AttributeError, TypeError):
        return False
    return True


def uuid_error(text: str) -> str:
    """What the uuid crate says about a string that is not a UUID (approximately)."""
    allowed = set("0123456789abcdefABCDEF-")
    for index, char in enumerate(text):
        if char not in allowed:
            return (
                "invalid character: expected an optional prefix of `urn:uuid:` followed by "
                f"[0-9a-fA-F-], found `{char}` at {index + 1}"
            )
    groups = text.split("-")
    if len(groups) not in (1, 5):
        return f"invalid group count: expected 5, found {len(groups)}"
    return f"invalid length: expected length 32 for simple format, found {len(text.replace('-', ''))}"


# -- observations (section 4.2) -----------------------------------------------------------


def _put(out: dict, name: str, value: Any) -> None:
    if value is not None:
        out[name] = value


def ready() -> dict:
    return {"observation": "ready"}


def status_changed(status: str = "ready") -> dict:
    return {"observation": "status_changed", "status": {"status": status}}


def user_transcript_final(item_id: str | None, previous_item_id: str | None, content_index: int | None,
                          text: str) -> dict:
    out: dict[str, Any] = {"observation": "user_transcript_final"}
    _put(out, "provider_item_id", item_id)
    _put(out, "previous_item_id", previous_item_id)
    _put(out, "content_index", content_index)
    out["text"] = text
    return out


def assistant_delta(name: str, item_id: str | None, previous_item_id: str | None, content_index: int | None,
                    response_id: str | None, delta_id: str | None, delta: str) -> dict:
    """assistant_transcript_delta (spoken lane) or assistant_text_delta (display text)."""
    out: dict[str, Any] = {"observation": name}
    _put(out, "provider_item_id", item_id)
    _put(out, "previous_item_id", previous_item_id)
    _put(out, "content_index", content_index)
    _put(out, "response_id", response_id)
    _put(out, "delta_id", delta_id)
    out["delta"] = delta
    return out


def audio_chunk(data: str, response_id: str | None, item_id: str | None, content_index: int | None) -> dict:
    out: dict[str, Any] = {"observation": "assistant_audio_chunk", "data": data,
                           "sample_rate_hz": SAMPLE_RATE_HZ, "channels": CHANNELS}
    _put(out, "response_id", response_id)
    _put(out, "item_id", item_id)
    _put(out, "content_index", content_index)
    return out


def zero_usage() -> dict:
    return {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}


def transcript_final(item_id: str, previous_item_id: str | None, content_index: int | None,
                     response_id: str | None, text: str) -> dict:
    """assistant_transcript_final: stop_reason is always end_turn, usage zero (best effort)."""
    out: dict[str, Any] = {"observation": "assistant_transcript_final", "provider_item_id": item_id}
    _put(out, "previous_item_id", previous_item_id)
    _put(out, "content_index", content_index)
    _put(out, "response_id", response_id)
    out["text"] = text
    out["stop_reason"] = "end_turn"
    out["usage"] = zero_usage()
    return out


def turn_usage(usage: dict | None) -> dict:
    """WireTurnUsage (v0.8.22+): WireUsage flattened plus provider accounting."""
    usage = usage or {}
    input_tokens = int(usage.get("input_tokens", 0))
    output_tokens = int(usage.get("output_tokens", 0))
    cached = (usage.get("input_token_details") or {}).get("cached_tokens")
    out: dict[str, Any] = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }
    if cached:
        out["cache_read_tokens"] = int(cached)
    out["accounting"] = {
        "provider": "openai",
        "model": MODEL,
        "presented_tokens": input_tokens,
        "convention": "open_ai_input_includes_cached_subset",
        "aggregation": "provider_inclusive_input_total",
    }
    return out


def turn_completed(response_id: str | None, stop_reason: str, usage: dict | None) -> dict:
    out: dict[str, Any] = {"observation": "turn_completed"}
    _put(out, "response_id", response_id)
    out["stop_reason"] = stop_reason
    out["usage"] = turn_usage(usage)
    return out


def turn_interrupted(response_id: str | None) -> dict:
    out: dict[str, Any] = {"observation": "turn_interrupted"}
    _put(out, "response_id", response_id)
    return out


def transcript_truncated(item_id: str, content_index: int | None, response_id: str | None,
                         text: str | None) -> dict:
    out: dict[str, Any] = {"observation": "assistant_transcript_truncated", "provider_item_id": item_id}
    _put(out, "content_index", content_index)
    _put(out, "response_id", response_id)
    _put(out, "text", text)
    return out


def tool_call_requested(call_id: str, tool_name: str, arguments: Any) -> dict:
    return {"observation": "tool_call_requested", "provider_call_id": call_id, "tool_name": tool_name,
            "arguments": arguments}


def item_observed(item_id: str, previous_item_id: str | None, role: str, response_id: str | None) -> dict:
    return {"observation": "realtime_transcript", "event": {
        "type": "item_observed", "item_id": item_id, "previous_item_id": previous_item_id,
        "role": role, "response_id": response_id}}


def item_skipped(item_id: str, previous_item_id: str | None) -> dict:
    return {"observation": "realtime_transcript", "event": {
        "type": "item_skipped", "item_id": item_id, "previous_item_id": previous_item_id}}


def command_rejected(reason: dict, message: str) -> dict:
    return {"observation": "command_rejected", "code": {"code": "config_rejected", "reason": reason},
            "message": message}


def audio_format_rejection(rate: int, channels: int) -> dict:
    return command_rejected(
        {"kind": "audio_input_format_mismatch", "expected_sample_rate_hz": SAMPLE_RATE_HZ,
         "expected_channels": CHANNELS, "actual_sample_rate_hz": rate, "actual_channels": channels},
        f"live adapter send_input: audio chunk declared rate={rate}Hz ch={channels} but OpenAI "
        f"Realtime session is fixed at rate={SAMPLE_RATE_HZ}Hz ch={CHANNELS} (PCM mono)",
    )


def backpressure_rejection(requested: int) -> dict:
    return command_rejected(
        {"kind": "input_backpressured", "max_pending_bytes": INGRESS_BUDGET_BYTES},
        f"live WebSocket ingress is backpressured: requested {requested} bytes from a "
        f"{INGRESS_BUDGET_BYTES}-byte budget",
    )


def terminal_error(message: str) -> dict:
    """The terminal `error` observation (published only by 0.6.5-0.6.x)."""
    return {"observation": "error", "code": {"code": "provider_error"}, "message": message}


def error_frame(error: str, reason: str | None) -> dict:
    """The non-observation WS error frame {"error", "reason"?}."""
    out: dict[str, Any] = {"error": error}
    _put(out, "reason", reason)
    return out


def not_ready_message(channel_id: str, status: str) -> str:
    return f"channel {channel_id} is not ready (status: {status.capitalize()})"


# -- inbound chunks (LiveInputChunkWire, section 3.5) -------------------------------------


class ChunkError(ValueError):
    """The text is not a valid LiveInputChunkWire (the channel closes)."""


def _field(obj: dict, name: str) -> Any:
    if name not in obj:
        raise ChunkError(f"missing field `{name}`")
    return obj[name]


def _string(obj: dict, name: str) -> str:
    value = _field(obj, name)
    if not isinstance(value, str):
        raise ChunkError(f"invalid type for `{name}`, expected a string")
    return value


def _uint(obj: dict, name: str, limit: int) -> int:
    value = _field(obj, name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise ChunkError(f"invalid value for `{name}`")
    return value


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ChunkError("invalid base64 in live input chunk") from None


def parse_chunk(value: Any) -> dict:
    """Decode one LiveInputChunkWire (a parsed JSON value) -> {"kind", ...} with audio and
    video data decoded; ChunkError for anything serde or the base64 check would refuse."""
    if not isinstance(value, dict):
        raise ChunkError("expected an internally tagged LiveInputChunkWire")
    kind = _field(value, "kind")
    if kind == "audio":
        return {"kind": "audio", "pcm": _b64(_string(value, "data")),
                "sample_rate_hz": _uint(value, "sample_rate_hz", 0xFFFFFFFF),
                "channels": _uint(value, "channels", 0xFFFF)}
    if kind == "text":
        return {"kind": "text", "text": _string(value, "text")}
    if kind == "video_frame":
        _string(value, "codec")
        _uint(value, "timestamp_ms", 0xFFFFFFFFFFFFFFFF)
        return {"kind": "video_frame", "data": _b64(_string(value, "data"))}
    if kind == "image":
        return {"kind": "image", "idempotency_key": _string(value, "idempotency_key"),
                "mime": _string(value, "mime"), "data": _string(value, "data")}
    raise ChunkError(f"unknown variant `{kind}`, expected one of `audio`, `text`, `video_frame`, `image`")


def parse_chunk_text(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ChunkError(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    return parse_chunk(value)
