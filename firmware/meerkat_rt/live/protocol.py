# meerkat_rt.live.protocol: the Meerkat live surface's wire codec (Meerkat 0.6.5 and later).
#
# Control is JSON-RPC (live/open, live/interrupt, live/truncate, live/commit_input, live/close,
# and the mob/member_live_* twins for a mob member); the channel's WebSocket
# (/live/ws?token=&channel=&format=pcm_24k_mono) carries the device's audio as raw binary PCM,
# its text input as {"kind":"text"} frames, and the server's observations as JSON text frames
# tagged on "observation" (plus a bare {"error","reason"} frame for refusals). Shapes follow
# Meerkat v0.8.26's wire/live.rs; unknown observations and fields are reported, not rejected
# (a newer server adds them). Pure logic: no sockets. Reasons never quote values: the token and
# channel ids travel in these messages.
import json

from ..compat import const
from ..shapes import ProtocolError, check, loads

SAMPLE_RATE_HZ = const(24000)
CHANNELS = const(1)
FORMAT = "pcm_24k_mono"

_LIVE_IDS = "provider_item_id:s? previous_item_id:s? content_index:u? response_id:s?"
OBSERVATIONS = {
    "ready": "observation:s",
    "status_changed": "observation:s status:o",
    "user_transcript_final": "observation:s provider_item_id:s? previous_item_id:s? content_index:u? text:s",
    "assistant_transcript_delta": "observation:s " + _LIVE_IDS + " delta_id:s? delta:s",
    "assistant_text_delta": "observation:s " + _LIVE_IDS + " delta_id:s? delta:s",
    "assistant_audio_chunk": "observation:s data:s sample_rate_hz:u channels:u response_id:s? item_id:s? content_index:u?",
    "assistant_transcript_final": "observation:s " + _LIVE_IDS + " text:s stop_reason:s? usage:o?",
    "turn_completed": "observation:s response_id:s? stop_reason:s? usage:o?",
    "turn_interrupted": "observation:s response_id:s?",
    "assistant_transcript_truncated": "observation:s " + _LIVE_IDS + " text:s?",
    "tool_call_requested": "observation:s provider_call_id:s tool_name:s arguments:a?",
    "realtime_transcript": "observation:s event:o",
    "command_rejected": "observation:s code:o message:s?",
    "user_content_committed": "observation:s idempotency_key:s? item_id:s? content_index:u? media_type:s?",
    "error": "observation:s code:o message:s?",
    "unknown": "observation:s debug:s?",
}
_ERROR_FRAME = "error:s reason:s?"


def parse_server_frame(data, report=None):
    """Decode and validate one server text frame: an observation, or the error frame."""
    return check_server_frame(loads(data), report)


def check_server_frame(frame, report=None):
    """Validate one decoded server text frame; returns it."""
    if type(frame) is not dict:
        raise ProtocolError("frame is not a JSON object")
    name = frame.get("observation")
    if name is None:
        if "error" in frame:
            return check(frame, _ERROR_FRAME, "error", report)
        raise ProtocolError("frame has neither observation nor error")
    if type(name) is not str:
        raise ProtocolError("field observation must be a string")
    shape = OBSERVATIONS.get(name)
    if shape is None:
        if report is not None:
            report.append("observation:" + name)
        return frame
    check(frame, shape, name, report)
    if name == "realtime_transcript":
        ev = frame["event"]
        if type(ev.get("type")) is not str:
            raise ProtocolError("missing field realtime_transcript.event.type")
        for key in ("item_id", "previous_item_id", "role", "response_id"):  # null when absent
            v = ev.get(key)
            if v is not None and type(v) is not str:
                raise ProtocolError("field realtime_transcript.event.%s must be a string or null" % key)
    elif name == "status_changed":
        if type(frame["status"].get("status")) is not str:
            raise ProtocolError("missing field status_changed.status.status")
    elif name in ("command_rejected", "error"):
        if type(frame["code"].get("code")) is not str:
            raise ProtocolError("missing field %s.code.code" % name)
    return frame


def audio(frame):
    """The downlink's question: None (not audio), a reason (refused) or (item_id,
    content_index, response_id)."""
    if frame.get("observation") != "assistant_audio_chunk":
        return None
    if frame["sample_rate_hz"] != SAMPLE_RATE_HZ or frame["channels"] != CHANNELS:
        return "output audio is %s Hz / %s ch, expected 24000 Hz / 1 ch" % (frame["sample_rate_hz"], frame["channels"])
    if frame["data"]:
        return "audio chunk with an unexpected second data field"
    return frame.get("item_id"), frame.get("content_index", 0), frame.get("response_id")


def code_of(frame):
    """command_rejected / error observations: "config_rejected/<reason kind>" or the code."""
    code = frame["code"]
    reason = code.get("reason")
    if type(reason) is dict and type(reason.get("kind")) is str:
        return code["code"] + "/" + reason["kind"]
    return code["code"]


########################################################################################
# JSON-RPC: a target is {"type": "session_target", "session_id"} or {"type": "mob_member",
# "mob_id", "agent_identity"}, as in config.json.


def open_call(target, turning_mode):
    """(method, params) of live/open (or mob/member_live_open)."""
    if target["type"] == "mob_member":
        return "mob/member_live_open", {
            "mob_id": target["mob_id"],
            "agent_identity": target["agent_identity"],
            "turning_mode": turning_mode,
            "transport": "websocket",
        }
    return "live/open", {"session_id": target["session_id"], "turning_mode": turning_mode, "transport": "websocket"}


def control_call(target, channel_id, verb, item_id=None, content_index=0, audio_played_ms=0):
    """(method, params) of a channel verb: interrupt, truncate, commit_input or close."""
    mob = target["type"] == "mob_member"
    if verb == "close":
        if mob:
            return "mob/member_live_close", {"mob_id": target["mob_id"], "agent_identity": target["agent_identity"], "channel_id": channel_id}
        return "live/close", {"channel_id": channel_id}
    args = {"channel_id": channel_id}
    if verb == "truncate":
        if type(item_id) is not str or not item_id:
            raise ValueError("item_id must be a non-empty string")
        if type(content_index) is not int or content_index < 0 or type(audio_played_ms) is not int or audio_played_ms < 0:
            raise ValueError("content_index and audio_played_ms must be non-negative integers")
        args["item_id"] = item_id
        args["content_index"] = content_index
        args["audio_played_ms"] = audio_played_ms
    if not mob:
        return "live/" + verb, args
    v = {"verb": verb}
    for k in ("item_id", "content_index", "audio_played_ms"):
        if k in args:
            v[k] = args[k]
    return "mob/member_live_control", {"mob_id": target["mob_id"], "agent_identity": target["agent_identity"], "channel_id": channel_id, "verb": v}


def check_open_result(result):
    """LiveOpenResult -> (channel_id, url, token); ProtocolError when it is not one."""
    check(result, "channel_id:s transport:o capabilities:o? continuity:o?", "result")
    tr = result["transport"]
    check(tr, "transport:s url:s token:s", "result.transport")
    if tr["transport"] != "websocket":
        raise ProtocolError("field result.transport.transport is not websocket")
    url = tr["url"]
    if not (url.startswith("ws://") or url.startswith("wss://")) or not result["channel_id"] or not tr["token"]:
        raise ProtocolError("field result.transport.url must be a ws:// or wss:// URL with a channel and a token")
    if ("format=" + FORMAT) not in url:
        # Without it every binary audio frame closes the channel.
        raise ProtocolError("the live WebSocket URL does not negotiate format=" + FORMAT)
    return result["channel_id"], url, tr["token"]


def text_frame(text):
    if type(text) is not str:
        raise ValueError("text must be a string")
    return json.dumps({"kind": "text", "text": text}, separators=(",", ":"))
