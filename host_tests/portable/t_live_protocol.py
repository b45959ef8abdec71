# Tests of meerkat_rt.live.protocol, the live surface's codec, on both runtimes. The frames are the
# shapes of Meerkat v0.8.26's wire/live.rs (observations, the error frame, live/open's result).
# Parsed JSON is compared, never raw strings (MicroPython dicts are unordered).
import json

from meerkat_rt.live import protocol as L

MP_HEAP = "256K"

USAGE = {"input_tokens": 812, "output_tokens": 95, "total_tokens": 907}
VALID_OBSERVATIONS = [
    {"observation": "ready"},
    {"observation": "status_changed", "status": {"status": "ready"}},
    {"observation": "status_changed", "status": {"status": "degraded", "reason": {"kind": "rate_limited"}}},
    {"observation": "user_transcript_final", "provider_item_id": "item_C1", "previous_item_id": "item_B9", "content_index": 0, "text": "what's the weather"},
    {"observation": "user_transcript_final", "text": "a synthetic text turn"},
    {"observation": "assistant_transcript_delta", "provider_item_id": "item_D2", "previous_item_id": "item_C1", "content_index": 0, "response_id": "resp_E3", "delta_id": "event_F4", "delta": "It's"},
    {"observation": "assistant_text_delta", "provider_item_id": "item_D2", "content_index": 0, "response_id": "resp_E3", "delta": "It's"},
    {"observation": "assistant_audio_chunk", "data": "AAAA", "sample_rate_hz": 24000, "channels": 1, "response_id": "resp_E3", "item_id": "item_D2", "content_index": 0},
    {"observation": "assistant_transcript_final", "provider_item_id": "item_D2", "content_index": 0, "response_id": "resp_E3", "text": "It's sunny.", "stop_reason": "end_turn", "usage": USAGE},
    {"observation": "turn_completed", "response_id": "resp_E3", "stop_reason": "end_turn", "usage": USAGE},
    {"observation": "turn_completed", "response_id": "resp_E3", "stop_reason": "cancelled", "usage": USAGE},
    {"observation": "turn_interrupted", "response_id": "resp_E3"},
    {"observation": "assistant_transcript_truncated", "provider_item_id": "item_D2", "content_index": 0, "response_id": "resp_E3", "text": "It's sunny and the wind"},
    {"observation": "assistant_transcript_truncated", "provider_item_id": "item_D2", "content_index": 0, "response_id": "resp_E3"},
    {"observation": "tool_call_requested", "provider_call_id": "call_G5", "tool_name": "get_weather", "arguments": {"city": "Oslo"}},
    {"observation": "realtime_transcript", "event": {"type": "item_observed", "item_id": "item_D2", "previous_item_id": "item_C1", "role": "assistant", "response_id": "resp_E3"}},
    {"observation": "realtime_transcript", "event": {"type": "item_observed", "item_id": "item_C1", "previous_item_id": None, "role": "user", "response_id": None}},
    {"observation": "command_rejected", "code": {"code": "config_rejected", "reason": {"kind": "audio_input_format_mismatch", "expected_sample_rate_hz": 24000, "expected_channels": 1, "actual_sample_rate_hz": 16000, "actual_channels": 1}}, "message": "live adapter send_input: audio chunk declared rate=16000Hz"},
    {"observation": "user_content_committed", "idempotency_key": "turn-42", "item_id": "item_9", "content_index": 0, "media_type": "image/png"},
    {"observation": "error", "code": {"code": "provider_error"}, "message": "boom"},
    {"observation": "unknown", "debug": "internal_user_content_filtered"},
    {"error": "invalid_token", "reason": "token expired"},
    {"error": "channel 6b0f is not ready (status: Opening)", "reason": "channel_not_ready"},
]


def test_valid_observations_parse_without_reports():
    for obs in VALID_OBSERVATIONS:
        report = []
        frame = L.parse_server_frame(json.dumps(obs), report)
        assert frame == obs, obs
        assert report == [], (obs, report)


def test_parser_takes_bytes_and_memoryview():
    raw = json.dumps(VALID_OBSERVATIONS[7]).encode()
    assert L.parse_server_frame(raw)["item_id"] == "item_D2"
    assert L.parse_server_frame(memoryview(bytearray(raw)))["response_id"] == "resp_E3"


def test_unknown_observations_and_fields_are_reported_not_rejected():
    report = []
    frame = L.parse_server_frame('{"observation":"turn_failed","failure":{"status":"x"}}', report)
    assert frame["observation"] == "turn_failed" and report == ["observation:turn_failed"]
    report = []
    frame = L.parse_server_frame(json.dumps(dict(VALID_OBSERVATIONS[9], accounting={"a": 1})), report)
    assert frame["observation"] == "turn_completed" and report == ["field:turn_completed.accounting"]


def test_malformed_observations_raise_protocol_error():
    bad = [
        "not json",
        "[1]",
        '{"observation":5}',
        '{"nothing":"here"}',
        '{"observation":"assistant_audio_chunk","data":"AAAA","sample_rate_hz":24000}',
        '{"observation":"assistant_audio_chunk","data":7,"sample_rate_hz":24000,"channels":1}',
        '{"observation":"turn_interrupted","response_id":5}',
        '{"observation":"status_changed","status":{"state":"ready"}}',
        '{"observation":"realtime_transcript","event":{"type":"item_observed","role":7}}',
        '{"observation":"command_rejected","code":{"reason":{}},"message":"m"}',
        '{"error":5}',
    ]
    for text in bad:
        try:
            L.parse_server_frame(text)
        except L.ProtocolError as exc:
            assert exc.reason
            continue
        raise AssertionError("accepted " + text)


def test_audio_question():
    skeleton = dict(VALID_OBSERVATIONS[7], data="")
    assert L.audio(skeleton) == ("item_D2", 0, "resp_E3")
    assert L.audio({"observation": "assistant_audio_chunk", "data": "", "sample_rate_hz": 24000, "channels": 1}) == (None, 0, None)
    assert "16000" in L.audio(dict(skeleton, sample_rate_hz=16000))
    assert type(L.audio(dict(skeleton, data="AAAA"))) is str
    assert L.audio(VALID_OBSERVATIONS[0]) is None


def test_code_of_rejections():
    assert L.code_of(VALID_OBSERVATIONS[17]) == "config_rejected/audio_input_format_mismatch"
    assert L.code_of(VALID_OBSERVATIONS[19]) == "provider_error"


SESSION = {"type": "session_target", "session_id": "019e2c1a-5b7e-7c40-9d1a-3f0c5a526a3e"}
MOB = {"type": "mob_member", "mob_id": "mob-1", "agent_identity": "voice"}


def test_open_calls_for_sessions_and_mob_members():
    assert L.open_call(SESSION, "provider_managed") == (
        "live/open",
        {"session_id": SESSION["session_id"], "turning_mode": "provider_managed", "transport": "websocket"},
    )
    assert L.open_call(MOB, "explicit_commit") == (
        "mob/member_live_open",
        {"mob_id": "mob-1", "agent_identity": "voice", "turning_mode": "explicit_commit", "transport": "websocket"},
    )


def test_control_calls_for_sessions_and_mob_members():
    assert L.control_call(SESSION, "ch", "interrupt") == ("live/interrupt", {"channel_id": "ch"})
    assert L.control_call(SESSION, "ch", "commit_input") == ("live/commit_input", {"channel_id": "ch"})
    assert L.control_call(SESSION, "ch", "close") == ("live/close", {"channel_id": "ch"})
    assert L.control_call(SESSION, "ch", "truncate", "item_D2", 0, 1840) == (
        "live/truncate",
        {"channel_id": "ch", "item_id": "item_D2", "content_index": 0, "audio_played_ms": 1840},
    )
    assert L.control_call(MOB, "ch", "truncate", "item_D2", 0, 1840) == (
        "mob/member_live_control",
        {"mob_id": "mob-1", "agent_identity": "voice", "channel_id": "ch", "verb": {"verb": "truncate", "item_id": "item_D2", "content_index": 0, "audio_played_ms": 1840}},
    )
    assert L.control_call(MOB, "ch", "interrupt")[1]["verb"] == {"verb": "interrupt"}
    assert L.control_call(MOB, "ch", "close") == ("mob/member_live_close", {"mob_id": "mob-1", "agent_identity": "voice", "channel_id": "ch"})
    for args in (("", 0, 5), ("i", -1, 5), ("i", 0, -1), (None, 0, 5), ("i", 0, True)):
        try:
            L.control_call(SESSION, "ch", "truncate", *args)
        except ValueError:
            continue
        raise AssertionError("accepted a bad truncate %r" % (args,))


OPEN_RESULT = {
    "channel_id": "6b0f3c1e-2d4a-4b8e-9a51-0c7d2e9f4b11",
    "transport": {
        "transport": "websocket",
        "url": "ws://0.0.0.0:4900/live/ws?token=3f0c5a52&channel=6b0f3c1e-2d4a-4b8e-9a51-0c7d2e9f4b11&format=pcm_24k_mono",
        "token": "3f0c5a52",
    },
    "capabilities": {"audio_in": True, "audio_out": True},
    "continuity": {"mode": "transcript_only"},
}


def test_open_result():
    cid, url, token = L.check_open_result(json.loads(json.dumps(OPEN_RESULT)))
    assert cid == OPEN_RESULT["channel_id"] and token == "3f0c5a52" and url.endswith("format=pcm_24k_mono")
    for change in (
        {"channel_id": ""},
        {"transport": {"transport": "webrtc", "url": "x", "token": "t"}},
        {"transport": {"transport": "websocket", "url": "http://h/live/ws?format=pcm_24k_mono", "token": "t"}},
        {"transport": {"transport": "websocket", "url": "ws://h/live/ws?token=t&channel=c", "token": "t"}},
        {"transport": {"transport": "websocket", "url": "ws://h/live/ws?format=pcm_24k_mono", "token": ""}},
    ):
        bad = dict(OPEN_RESULT)
        bad.update(change)
        try:
            L.check_open_result(bad)
        except L.ProtocolError as exc:
            assert "3f0c5a52" not in exc.reason  # never the token
            continue
        raise AssertionError("accepted %r" % (change,))


def test_text_frame():
    assert json.loads(L.text_frame('say "hi"')) == {"kind": "text", "text": 'say "hi"'}
    try:
        L.text_frame(5)
    except ValueError:
        return
    raise AssertionError("accepted a non-string text")
