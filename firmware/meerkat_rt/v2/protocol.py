# meerkat_rt.v2.protocol: the Meerkat realtime channel protocol v2 wire codec (Meerkat 0.6.0 to
# 0.6.4).
#
# Builders for every client frame the device sends, a validating parser for every server frame,
# the RealtimeOpenInfo bootstrap shape and the preformatted audio-input template. Pure logic: no
# sockets, no hardware. Shapes follow Meerkat v0.6.2's wire/realtime.rs, plus the item_id
# extension (item_id, response_id, content_index next to or inside an output_audio_chunk's
# chunk), which only our development server sends when asked to.
#
# Parsing contract: parse_server_frame() returns the decoded frame (a dict, normalised in place)
# or raises ProtocolError with a reason naming the offending field. Unknown event types, error
# codes, detail kinds, enum values and fields are tolerated where serde would tolerate them or
# where a newer server may add them: their names go to the caller's `report` list so the caller
# can count them. Reasons and reports never quote field values, so a token cannot leak through
# an error message.
import json

from ..compat import const
from ..shapes import ProtocolError, check as _check_shape, loads

PROTOCOL_VERSION = "2"
AUDIO_MIME = "audio/pcm"
SAMPLE_RATE_HZ = const(24000)
CHANNELS = const(1)

ROLES = ("primary", "observer")
TURNING_MODES = ("provider_managed", "explicit_commit")
CHANNEL_STATES = ("opening", "ready", "interrupted", "reconnecting", "closed", "error")
KINDS = ("text", "audio", "video")
TARGET_TYPES = ("session_target", "mob_member")

CLIENT_FRAME_TYPES = (
    "channel.open",
    "channel.input",
    "channel.commit_turn",
    "channel.interrupt",
    "channel.barge_in_truncate",
    "channel.close",
)
SERVER_FRAME_TYPES = ("channel.opened", "channel.status", "channel.event", "channel.error", "channel.closed")

# RealtimeErrorCode: wire/realtime.rs L64-184 at v0.6.2 (the same 32 values are in the
# generated types of meerkat-sdk 0.6.2).
ERROR_CODES = (
    "invalid_frame",
    "expected_channel_open",
    "invalid_open_token",
    "open_token_expired",
    "role_mismatch",
    "turning_mode_mismatch",
    "unsupported_turning_mode",
    "target_busy",
    "unsupported_protocol_version",
    "audio_format_mismatch",
    "unauthorized_realm",
    "tool_call_timeout",
    "internal_error",
    "reconnect_exhausted",
    "invalid_target",
    "channel_not_bound",
    "runtime_internal",
    "runtime_not_ready",
    "provider_session_closed",
    "provider_session_failed",
    "provider_session_unavailable",
    "unsupported_input_kind",
    "no_pending_turn",
    "observer_read_only",
    "unexpected_channel_open",
    "commit_turn_unavailable",
    "channel_reconnecting",
    "binding_released",
    "authentication_failed",
    "content_filtered",
    "model_not_found",
    "invalid_request",
)


########################################################################################
# Shape tables, as strings because every tuple costs 50-100 bytes of heap on MicroPython and a
# string a few. A shape is space-separated `key:kind` fields; a trailing `?` marks an optional
# field. Kinds: s string, u u32, c u8 (channels), n unsigned integer, b bool, v the version
# string "2", l list of strings, o object (not looked into), o=NAME nested shape,
# e=NAME string from an enum, k=NAME list of strings whose unknown values are reported.

_ENUMS = {
    "state": CHANNEL_STATES,
    "role": ROLES,
    "kinds": KINDS,
    "modes": TURNING_MODES,
}
_FORMAT = "mime_type:s sample_rate_hz:u channels:c"
_IDS = " item_id:s? response_id:s? content_index:u?"
SHAPES = {
    "format": _FORMAT,
    "status": "state:e=state attempt_count:n? next_retry_at:s? deadline_at:s? reason:s?",
    "capabilities": "input_kinds:k=kinds? output_kinds:k=kinds? turning_modes:k=modes? "
    "interrupt_supported:b transcript_supported:b tool_lifecycle_events_supported:b "
    "video_supported:b audio_input_format:o=format? audio_output_format:o=format?",
    "session_target": "type:s session_id:s",
    "mob_member": "type:s mob_id:s agent_identity:s",
    "audio_chunk": _FORMAT + " data:s" + _IDS,
    "video_chunk": "mime_type:s data:s",
    "open_info": "ws_url:s open_token:s expires_at:s target:o supported_protocol_versions:l? "
    "default_protocol_version:s capabilities:o=capabilities",
    # server frames
    "channel.opened": "type:s protocol_version:v status:o=status capabilities:o=capabilities role:e=role",
    "channel.status": "type:s status:o=status",
    "channel.event": "type:s event:o",
    "channel.error": "type:s code:s message:s details:o?",
    "channel.closed": "type:s reason:s?",
    # error details, by kind
    "audio_format_mismatch": "kind:s expected:o=format actual:o=format",
    "tool_call_timeout": "kind:s call_id:s elapsed_ms:n timeout_ms:n",
    "unsupported_protocol_version": "kind:s requested:s supported:l",
}
# RealtimeEvent shapes, by event type.
EVENT_SHAPES = {
    "input_transcript_partial": "type:s text:s",
    "input_transcript_final": "type:s text:s prosody_hint:s?",
    "turn_started": "type:s",
    "turn_committed": "type:s",
    "turn_completed": "type:s",
    "output_text_delta": "type:s delta:s",
    "output_audio_chunk": "type:s chunk:o=audio_chunk" + _IDS,
    "output_video_chunk": "type:s chunk:o=video_chunk",
    "interrupted": "type:s",
    "tool_call_requested": "type:s call_id:s tool_name:s",
    "tool_call_completed": "type:s call_id:s",
    "tool_call_failed": "type:s call_id:s error:s",
    "tool_call_timed_out": "type:s call_id:s elapsed_ms:n",
    "assistant_transcript_truncated": "type:s item_id:s audio_played_ms:n truncated_text:s?",
    "status_changed": "type:s status:o=status",
    "needs_reattach": "type:s",
}
EVENT_TYPES = tuple(EVENT_SHAPES)
_ID_KEYS = ("item_id", "response_id", "content_index")
_DETAIL_KINDS = ("audio_format_mismatch", "tool_call_timeout", "unsupported_protocol_version")


def check(obj, shape, where, report=None):
    """Validate a decoded object against a shape string (see SHAPES); returns obj."""
    return _check_shape(obj, shape, where, report, SHAPES, _ENUMS, PROTOCOL_VERSION)


def check_target(target, where="target", report=None):
    if type(target) is not dict or target.get("type") not in TARGET_TYPES:
        raise ProtocolError("field %s.type must be session_target or mob_member" % where)
    return check(target, SHAPES[target["type"]], where, report)


def check_event(event, report=None):
    """Validate one RealtimeEvent in place. Unknown event types are reported, not rejected."""
    if type(event) is not dict:
        raise ProtocolError("field event must be an object")
    etype = event.get("type")
    shape = EVENT_SHAPES.get(etype) if type(etype) is str else None
    if shape is None:
        check(event, "type:s", "event", None)
        if report is not None:
            report.append("event:%s" % etype)
        return event
    if etype == "output_audio_chunk":
        chunk = event.get("chunk")
        if type(chunk) is dict:
            # Normalise the extension ids onto the event; the event-level value wins.
            for key in _ID_KEYS:
                if key in chunk and key not in event:
                    event[key] = chunk[key]
    return check(event, shape, "event", report)


def check_server_frame(frame, report=None):
    """Validate a decoded server frame in place and return it."""
    if type(frame) is not dict:
        raise ProtocolError("frame is not a JSON object")
    ftype = frame.get("type")
    if type(ftype) is not str:
        raise ProtocolError("frame has no string field type")
    shape = SHAPES.get(ftype) if ftype in SERVER_FRAME_TYPES else None
    if shape is None:
        raise ProtocolError("unknown frame type")
    check(frame, shape, ftype, report)
    if ftype == "channel.event":
        check_event(frame["event"], report)
    elif ftype == "channel.error":
        if frame["code"] not in ERROR_CODES and report is not None:
            report.append("code:" + frame["code"])
        details = frame.get("details")
        if details is not None:
            kind = details.get("kind")
            dshape = SHAPES.get(kind) if kind in _DETAIL_KINDS else None
            if dshape is not None:
                check(details, dshape, "details", report)
            elif type(kind) is not str:
                raise ProtocolError("missing field details.kind")
            elif report is not None:
                report.append("details:" + kind)
    return frame


def parse_server_frame(data, report=None):
    """Decode and validate one server text frame (str, bytes or memoryview)."""
    return check_server_frame(loads(data), report)


def format_matches(fmt, sample_rate_hz=SAMPLE_RATE_HZ, channels=CHANNELS, mime_type=AUDIO_MIME):
    """True when a RealtimeAudioFormat is exactly this one (plain compare, as the server does)."""
    return (
        type(fmt) is dict
        and fmt.get("mime_type") == mime_type
        and fmt.get("sample_rate_hz") == sample_rate_hz
        and fmt.get("channels") == channels
    )


def describe_format(fmt):
    if type(fmt) is not dict:
        return "none"
    return "%s @ %s Hz / %s ch" % (fmt.get("mime_type"), fmt.get("sample_rate_hz"), fmt.get("channels"))


########################################################################################
# Client frames. Control frames are rare, so json.dumps is fine for them; the audio frame,
# sent 25 times a second, goes through AudioInputTemplate instead.


def _dumps(obj):
    return json.dumps(obj, separators=(",", ":"))


def _choice(value, allowed, name):
    if value not in allowed:
        raise ValueError("%s must be one of %s" % (name, ", ".join(allowed)))


def open_frame(open_token, role="primary", turning_mode="provider_managed"):
    _choice(role, ROLES, "role")
    _choice(turning_mode, TURNING_MODES, "turning_mode")
    if type(open_token) is not str or not open_token:
        raise ValueError("open_token must be a non-empty string")
    return _dumps(
        {
            "type": "channel.open",
            "protocol_version": PROTOCOL_VERSION,
            "open_token": open_token,
            "role": role,
            "turning_mode": turning_mode,
        }
    )


def _input(chunk):
    return _dumps({"type": "channel.input", "chunk": chunk})


def text_input_frame(text):
    if type(text) is not str:
        raise ValueError("text must be a string")
    return _input({"kind": "text_chunk", "text": text})


COMMIT_TURN_FRAME = '{"type":"channel.commit_turn"}'
INTERRUPT_FRAME = '{"type":"channel.interrupt"}'
CLOSE_FRAME = '{"type":"channel.close"}'


def barge_in_truncate_frame(item_id, content_index, audio_played_ms):
    if type(item_id) is not str or not item_id:
        raise ValueError("item_id must be a non-empty string")
    for v in (content_index, audio_played_ms):
        if type(v) is not int or v < 0:
            raise ValueError("content_index and audio_played_ms must be non-negative integers")
    return _dumps(
        {
            "type": "channel.barge_in_truncate",
            "item_id": item_id,
            "content_index": content_index,
            "audio_played_ms": audio_played_ms,
        }
    )


class AudioInputTemplate:
    """The channel.input audio frame as two constant byte strings around the base64 data.

    A device base64-encodes each PCM frame into a buffer it owns and sends
    prefix + data + suffix; nothing is formatted per frame. The format fields are always present
    (the server drops chunks that lack them or do not match its negotiated format).
    """

    def __init__(self):
        self.prefix = (
            '{"type":"channel.input","chunk":{"kind":"audio_chunk","mime_type":"%s",'
            '"sample_rate_hz":%d,"channels":%d,"data":"' % (AUDIO_MIME, SAMPLE_RATE_HZ, CHANNELS)
        ).encode()
        self.suffix = b'"}}'

    def frame_len(self, b64_len):
        return len(self.prefix) + b64_len + len(self.suffix)


########################################################################################
# Bootstrap: realtime/open_info over JSON-RPC (TCP JSON lines) or the REST proxy.


_POLICY_KEYS = ("max_attempts", "initial_backoff_ms", "max_backoff_ms", "max_total_ms")


def open_request_params(target, role="primary", turning_mode="provider_managed", reconnect_policy=None, channel_config=None):
    """RealtimeOpenRequest params."""
    check_target(target)
    _choice(role, ROLES, "role")
    _choice(turning_mode, TURNING_MODES, "turning_mode")
    params = {"target": target, "role": role, "turning_mode": turning_mode}
    if reconnect_policy is not None:
        for key in _POLICY_KEYS:
            v = reconnect_policy.get(key)
            if type(v) is not int or v < 0:
                raise ValueError("reconnect_policy.%s must be a non-negative integer" % key)
        params["reconnect_policy"] = reconnect_policy
    if channel_config is not None:
        params["channel_config"] = channel_config
    return params


def parse_wire_error(data):
    """A REST WireError body {code, category?, message, details?} -> (code, message), else
    None."""
    try:
        body = loads(data)
    except ProtocolError:
        return None
    if type(body) is not dict or type(body.get("code")) is not str:
        return None
    return body["code"], str(body.get("message", ""))


def check_open_info(info, report=None):
    """RealtimeOpenInfo, validated in place."""
    check(info, SHAPES["open_info"], "open_info", report)
    url = info["ws_url"]
    if not (url.startswith("ws://") or url.startswith("wss://")):
        raise ProtocolError("field open_info.ws_url must be a ws:// or wss:// URL")
    if not info["open_token"]:
        raise ProtocolError("field open_info.open_token is empty")
    check_target(info["target"], "open_info.target", report)
    return info


def audio(frame):
    """The downlink's question: is this frame an audio chunk? None (no), a reason (refused) or
    (item_id, content_index, response_id) (ids of the extension, None without it)."""
    if frame.get("type") != "channel.event":
        return None
    event = frame["event"]
    if event.get("type") != "output_audio_chunk":
        return None
    chunk = event["chunk"]
    if not format_matches(chunk):
        return "output audio is %s, expected audio/pcm @ 24000 Hz / 1 ch" % describe_format(chunk)
    if chunk["data"]:
        # The streamed string was another "data" field (an unknown one before the chunk): not
        # something a Meerkat server sends; refused rather than decoded twice.
        return "audio chunk with an unexpected second data field"
    return event.get("item_id"), event.get("content_index", 0), event.get("response_id")
