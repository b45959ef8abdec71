# Table-driven tests of meerkat_rt.v2.protocol. Portable: pytest runs them on CPython and, through
# mprun.py, on the MicroPython unix port at -X heapsize=110K. Parsed JSON is compared, never raw
# strings (MicroPython dicts are unordered).
import json

from meerkat_rt.downlink import data_value_at
from meerkat_rt.v2 import protocol as P

# The case tables below take about 35 KB of heap on the 64-bit unix port by themselves, so the
# codec cases run with room to spare; device-sized (110K) runs are the end-to-end tests' job.
MP_HEAP = "256K"

FMT = {"mime_type": "audio/pcm", "sample_rate_hz": 24000, "channels": 1}
CAPS_FULL = {
    "input_kinds": ["text", "audio"],
    "output_kinds": ["text", "audio"],
    "turning_modes": ["provider_managed", "explicit_commit"],
    "interrupt_supported": True,
    "transcript_supported": True,
    "tool_lifecycle_events_supported": True,
    "video_supported": False,
    "audio_input_format": FMT,
    "audio_output_format": FMT,
}
CAPS_NO_FACTORY = {
    "input_kinds": ["text", "audio"],
    "output_kinds": ["text", "audio"],
    "turning_modes": ["provider_managed"],
    "interrupt_supported": True,
    "transcript_supported": True,
    "tool_lifecycle_events_supported": False,
    "video_supported": False,
}
STATUSES = [
    {"state": "ready", "attempt_count": 0},
    {"state": "opening", "attempt_count": 0, "reason": "realtime attachment is pending"},
    {
        "state": "reconnecting",
        "attempt_count": 1,
        "next_retry_at": "2026-05-08T13:36:52.318+00:00",
        "deadline_at": "2026-05-08T13:37:22.100+00:00",
        "reason": "realtime attachment requires reattach",
    },
    {"state": "error", "attempt_count": 0, "reason": "realtime reconnect attempts exhausted"},
    {"state": "closed", "attempt_count": 0, "reason": "no realtime channel is open for this target"},
    {"state": "interrupted"},
]


def _event(ev):
    return {"type": "channel.event", "event": ev}


AUDIO_CHUNK = {"mime_type": "audio/pcm", "sample_rate_hz": 24000, "channels": 1, "data": "AAAA"}
EVENTS = [
    {"type": "input_transcript_partial", "text": "hel"},
    {"type": "input_transcript_final", "text": "hello"},
    {"type": "input_transcript_final", "text": "hello", "prosody_hint": "rising"},
    {"type": "turn_started"},
    {"type": "turn_committed"},
    {"type": "turn_completed"},
    {"type": "output_text_delta", "delta": "Hi "},
    {"type": "output_audio_chunk", "chunk": AUDIO_CHUNK},
    {"type": "output_video_chunk", "chunk": {"mime_type": "image/jpeg", "data": "AAAA"}},
    {"type": "interrupted"},
    {"type": "tool_call_requested", "call_id": "c1", "tool_name": "lights"},
    {"type": "tool_call_completed", "call_id": "c1"},
    {"type": "tool_call_failed", "call_id": "c1", "error": "boom"},
    {"type": "tool_call_timed_out", "call_id": "c1", "elapsed_ms": 15003},
    {"type": "assistant_transcript_truncated", "item_id": "item_1", "audio_played_ms": 1840},
    {
        "type": "assistant_transcript_truncated",
        "item_id": "item_1",
        "audio_played_ms": 0,
        "truncated_text": "Hel",
    },
    {"type": "status_changed", "status": STATUSES[2]},
    {"type": "needs_reattach"},
]

VALID_SERVER_FRAMES = (
    [
        {"type": "channel.opened", "protocol_version": "2", "status": STATUSES[0], "capabilities": CAPS_FULL, "role": "primary"},
        {"type": "channel.opened", "protocol_version": "2", "status": STATUSES[1], "capabilities": CAPS_NO_FACTORY, "role": "observer"},
        {"type": "channel.closed", "reason": "client_closed"},
        {"type": "channel.closed"},
        {"type": "channel.error", "code": "invalid_frame", "message": "failed to parse realtime frame: x"},
    ]
    + [{"type": "channel.status", "status": s} for s in STATUSES]
    + [_event(e) for e in EVENTS]
)


def _parse(obj):
    report = []
    frame = P.parse_server_frame(json.dumps(obj), report)
    return frame, report


def _raises(text, reason_part=None):
    try:
        P.parse_server_frame(text)
    except P.ProtocolError as exc:
        if reason_part is not None:
            assert reason_part in exc.reason, (text, exc.reason)
        return exc.reason
    raise AssertionError("no ProtocolError for %s" % text)


def test_every_event_type_is_covered():
    covered = [e["type"] for e in EVENTS]
    for etype in P.EVENT_TYPES:
        assert etype in covered, etype
    assert len(P.EVENT_TYPES) == 16


def test_valid_server_frames_parse_unchanged_without_reports():
    for obj in VALID_SERVER_FRAMES:
        frame, report = _parse(obj)
        assert frame == obj, (frame, obj)
        assert report == [], (obj, report)


def test_parser_accepts_bytes_and_memoryview():
    text = json.dumps(VALID_SERVER_FRAMES[0]).encode()
    assert P.parse_server_frame(text)["role"] == "primary"
    assert P.parse_server_frame(memoryview(bytearray(text)))["type"] == "channel.opened"


def test_every_error_code_parses_without_report():
    assert len(P.ERROR_CODES) == 32
    for code in P.ERROR_CODES:
        frame, report = _parse({"type": "channel.error", "code": code, "message": "m"})
        assert frame["code"] == code and report == [], (code, report)


def test_error_details_all_three_kinds():
    details = [
        {"kind": "audio_format_mismatch", "expected": FMT, "actual": {"mime_type": "audio/pcm", "sample_rate_hz": 16000, "channels": 1}},
        {"kind": "tool_call_timeout", "call_id": "c9", "elapsed_ms": 15003, "timeout_ms": 15000},
        {"kind": "unsupported_protocol_version", "requested": "999", "supported": ["2"]},
    ]
    for d in details:
        obj = {"type": "channel.error", "code": "audio_format_mismatch", "message": "m", "details": d}
        frame, report = _parse(obj)
        assert frame == obj and report == [], (d, report)


def test_item_id_extension_next_to_chunk_inside_chunk_and_both():
    ev, rep = _parse(_event({"type": "output_audio_chunk", "chunk": AUDIO_CHUNK, "item_id": "i1", "response_id": "r1", "content_index": 0}))
    assert (ev["event"]["item_id"], ev["event"]["response_id"], ev["event"]["content_index"]) == ("i1", "r1", 0)
    assert rep == []
    inner = dict(AUDIO_CHUNK)
    inner.update({"item_id": "i2", "response_id": "r2", "content_index": 3})
    ev, rep = _parse(_event({"type": "output_audio_chunk", "chunk": inner}))
    assert (ev["event"]["item_id"], ev["event"]["response_id"], ev["event"]["content_index"]) == ("i2", "r2", 3)
    assert rep == []
    ev, rep = _parse(_event({"type": "output_audio_chunk", "chunk": inner, "item_id": "outer"}))
    assert ev["event"]["item_id"] == "outer"  # the event-level id wins
    ev, rep = _parse(_event({"type": "output_audio_chunk", "chunk": AUDIO_CHUNK}))
    assert "item_id" not in ev["event"]  # plain v2: no id at all


def test_unknowns_are_tolerated_and_reported():
    cases = [
        (_event({"type": "brand_new_event", "x": 1}), "event:brand_new_event"),
        ({"type": "channel.error", "code": "future_code", "message": "m"}, "code:future_code"),
        ({"type": "channel.error", "code": "internal_error", "message": "m", "details": {"kind": "future"}}, "details:future"),
        ({"type": "channel.closed", "reason": "x", "extra": 1}, "field:channel.closed.extra"),
        (_event({"type": "turn_started", "trace": "t"}), "field:event.trace"),
        ({"type": "channel.status", "status": {"state": "ready", "attempt_count": 0, "hint": 1}}, "field:channel.status.status.hint"),
        (
            {"type": "channel.opened", "protocol_version": "2", "status": STATUSES[0], "capabilities": dict(CAPS_FULL, input_kinds=["text", "smell"]), "role": "primary"},
            "value:channel.opened.capabilities.input_kinds",
        ),
    ]
    for obj, expected in cases:
        frame, report = _parse(obj)
        assert expected in report, (obj, report)


MALFORMED = [
    ("not json", "not valid JSON"),
    ("", "not valid JSON"),
    ('{"type": "channel.closed"', "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    ('"channel.closed"', "not a JSON object"),
    ("{}", "type"),
    ('{"type": 7}', "type"),
    ('{"type": "channel.explode"}', "unknown frame type"),
    ('{"type": "channel.open", "protocol_version": "2"}', "unknown frame type"),  # client frame
    ('{"type": "channel.status"}', "missing field channel.status.status"),
    ('{"type": "channel.status", "status": []}', "channel.status.status"),
    ('{"type": "channel.status", "status": {"state": 3}}', "state"),
    ('{"type": "channel.status", "status": {"state": "dancing"}}', "state"),
    ('{"type": "channel.status", "status": {"state": "ready", "attempt_count": -1}}', "attempt_count"),
    ('{"type": "channel.status", "status": {"state": "ready", "attempt_count": 1.5}}', "attempt_count"),
    ('{"type": "channel.status", "status": {"state": "ready", "attempt_count": true}}', "attempt_count"),
    ('{"type": "channel.status", "status": {"state": "ready", "reason": 5}}', "reason"),
    ('{"type": "channel.event"}', "event"),
    ('{"type": "channel.event", "event": {}}', "event.type"),
    ('{"type": "channel.event", "event": {"type": 5}}', "event.type"),
    ('{"type": "channel.event", "event": {"type": "output_text_delta"}}', "delta"),
    ('{"type": "channel.event", "event": {"type": "output_text_delta", "delta": null}}', "delta"),
    ('{"type": "channel.event", "event": {"type": "output_audio_chunk", "chunk": {"mime_type": "audio/pcm", "sample_rate_hz": 24000, "channels": 1}}}', "data"),
    ('{"type": "channel.event", "event": {"type": "output_audio_chunk", "chunk": {"mime_type": "audio/pcm", "sample_rate_hz": "24000", "channels": 1, "data": ""}}}', "sample_rate_hz"),
    ('{"type": "channel.event", "event": {"type": "output_audio_chunk", "chunk": {"mime_type": "audio/pcm", "sample_rate_hz": 24000, "channels": 256, "data": ""}}}', "channels"),
    ('{"type": "channel.event", "event": {"type": "output_audio_chunk", "chunk": {"mime_type": "audio/pcm", "sample_rate_hz": 24000, "channels": 1, "data": ""}, "content_index": -1}}', "content_index"),
    ('{"type": "channel.event", "event": {"type": "output_audio_chunk", "chunk": {"mime_type": "audio/pcm", "sample_rate_hz": 24000, "channels": 1, "data": ""}, "item_id": 9}}', "item_id"),
    ('{"type": "channel.event", "event": {"type": "assistant_transcript_truncated", "item_id": "i", "audio_played_ms": -5}}', "audio_played_ms"),
    ('{"type": "channel.event", "event": {"type": "tool_call_timed_out", "call_id": "c", "elapsed_ms": 2.5}}', "elapsed_ms"),
    ('{"type": "channel.event", "event": {"type": "status_changed"}}', "status"),
    ('{"type": "channel.error", "message": "m"}', "code"),
    ('{"type": "channel.error", "code": "invalid_frame"}', "message"),
    ('{"type": "channel.error", "code": "invalid_frame", "message": "m", "details": "x"}', "details"),
    ('{"type": "channel.error", "code": "audio_format_mismatch", "message": "m", "details": {"kind": "audio_format_mismatch"}}', "expected"),
    ('{"type": "channel.error", "code": "x", "message": "m", "details": {}}', "kind"),
    ('{"type": "channel.closed", "reason": 3}', "reason"),
    ('{"type": "channel.opened", "protocol_version": 2, "status": {"state": "ready"}, "capabilities": {}, "role": "primary"}', "protocol_version"),
    ('{"type": "channel.opened", "protocol_version": "999", "status": {"state": "ready"}, "capabilities": {}, "role": "primary"}', "protocol_version"),
    ('{"type": "channel.opened", "protocol_version": "2", "status": {"state": "ready"}, "capabilities": {}, "role": "primary"}', "interrupt_supported"),
    ('{"type": "channel.opened", "protocol_version": "2", "status": {"state": "ready"}, "role": "primary"}', "capabilities"),
]


def test_malformed_frames_raise_protocol_error_with_reason():
    for text, part in MALFORMED:
        _raises(text, part)


def test_protocol_error_reason_never_quotes_values():
    secret = "3f0c5a52-6a3e-4d0e-9f1e-2b7c8d9e0a11"
    reason = _raises('{"type": "channel.status", "status": {"state": "%s"}}' % secret)
    assert secret not in reason


def test_oversized_strings_parse():
    big = "x" * 16000
    frame, report = _parse(_event({"type": "output_text_delta", "delta": big}))
    assert len(frame["event"]["delta"]) == 16000 and report == []


def _loads(s):
    return json.loads(s)


def test_client_frames_built_exactly():
    cases = [
        (
            P.open_frame("tok", "primary", "provider_managed"),
            {"type": "channel.open", "protocol_version": "2", "open_token": "tok", "role": "primary", "turning_mode": "provider_managed"},
        ),
        (
            P.open_frame("tok", "observer", "explicit_commit"),
            {"type": "channel.open", "protocol_version": "2", "open_token": "tok", "role": "observer", "turning_mode": "explicit_commit"},
        ),
        (P.text_input_frame('say "hi"\n'), {"type": "channel.input", "chunk": {"kind": "text_chunk", "text": 'say "hi"\n'}}),
        (P.COMMIT_TURN_FRAME, {"type": "channel.commit_turn"}),
        (P.INTERRUPT_FRAME, {"type": "channel.interrupt"}),
        (P.CLOSE_FRAME, {"type": "channel.close"}),
        (
            P.barge_in_truncate_frame("item_abc", 0, 1840),
            {"type": "channel.barge_in_truncate", "item_id": "item_abc", "content_index": 0, "audio_played_ms": 1840},
        ),
    ]
    for built, expected in cases:
        assert _loads(built) == expected, (built, expected)
    types = [_loads(b)["type"] for b, _ in cases]
    for ftype in P.CLIENT_FRAME_TYPES:
        assert ftype in types or ftype == "channel.input", ftype


def test_client_builders_reject_bad_arguments():
    bad = [
        lambda: P.open_frame("tok", "admin"),
        lambda: P.open_frame("tok", "primary", "continuous"),
        lambda: P.open_frame(""),
        lambda: P.text_input_frame(5),
        lambda: P.barge_in_truncate_frame("", 0, 5),
        lambda: P.barge_in_truncate_frame("i", 0, -1),
        lambda: P.barge_in_truncate_frame("i", -1, 5),
        lambda: P.barge_in_truncate_frame("i", 0, True),
        lambda: P.barge_in_truncate_frame("i", 0, 1.5),
    ]
    for i, fn in enumerate(bad):
        try:
            fn()
        except ValueError:
            continue
        raise AssertionError("builder case %d accepted bad input" % i)


def test_audio_template_frames_carry_format_and_data():
    t = P.AudioInputTemplate()
    data = b"QUJD" * 640  # 2560 base64 characters: one 40 ms frame
    frame = t.prefix + data + t.suffix
    assert len(frame) == t.frame_len(len(data))
    obj = json.loads(frame)
    assert obj == {"type": "channel.input", "chunk": dict(AUDIO_CHUNK, kind="audio_chunk", data=data.decode())}


def test_data_value_at_finds_the_data_string():
    ok = [
        '{"type":"channel.event","event":{"type":"output_audio_chunk","chunk":{"mime_type":"audio/pcm","sample_rate_hz":24000,"channels":1,"data":"QUJD"}}}',
        '{"type": "channel.event", "event": {"type": "output_audio_chunk", "chunk": {"data" : "QUJD", "mime_type": "audio/pcm"}}}',
        '{"event":{"chunk":{"data":\n"QUJD"},"type":"output_audio_chunk"},"type":"channel.event"}',
    ]
    for text in ok:
        buf = bytearray(text.encode())
        i = data_value_at(buf, 0, len(buf))
        assert i > 0 and bytes(buf[i : i + 4]) == b"QUJD", text
    no = [
        '{"type":"channel.event","event":{"type":"output_text_delta","delta":"x"}}',
        '{"type":"channel.event","event":{"type":"output_audio_chunk","chunk":{"data":5}}}',
        '{"type":"channel.event","event":{"type":"output_audio_chunk","chunk":{"data"',
    ]
    for text in no:
        buf = bytearray(text.encode())
        assert data_value_at(buf, 0, len(buf)) < 0, text
    # Only the first n bytes count.
    buf = bytearray(ok[0].encode())
    assert data_value_at(buf, 0, 30) < 0


OPEN_INFO = {
    "ws_url": "ws://127.0.0.1:4900/realtime/ws",
    "open_token": "3f0c5a52-6a3e-4d0e-9f1e-2b7c8d9e0a11",
    "expires_at": "2026-05-08T13:37:52.123456789+00:00",
    "target": {"type": "session_target", "session_id": "019e"},
    "supported_protocol_versions": ["2"],
    "default_protocol_version": "2",
    "capabilities": CAPS_FULL,
}


def test_open_info_result():
    info = P.check_open_info(json.loads(json.dumps(OPEN_INFO)))
    assert info == OPEN_INFO


def test_open_info_validation():
    mob = dict(OPEN_INFO, target={"type": "mob_member", "mob_id": "m", "agent_identity": "a"})
    assert P.check_open_info(mob)["target"]["mob_id"] == "m"
    for key, value in (
        ("ws_url", "http://x/realtime/ws"),
        ("ws_url", 5),
        ("open_token", ""),
        ("target", {"type": "team"}),
        ("capabilities", {"interrupt_supported": True}),
        ("supported_protocol_versions", "2"),
    ):
        try:
            P.check_open_info(dict(OPEN_INFO, **{key: value}))
        except P.ProtocolError as exc:
            assert OPEN_INFO["open_token"] not in exc.reason
            continue
        raise AssertionError("accepted bad %s" % key)
    bad = dict(OPEN_INFO)
    del bad["expires_at"]
    try:
        P.check_open_info(bad)
    except P.ProtocolError as exc:
        assert "expires_at" in exc.reason
    else:
        raise AssertionError("accepted open_info without expires_at")


def test_rest_wire_error():
    err = P.parse_wire_error(json.dumps({"code": "CAPABILITY_UNAVAILABLE", "category": "capability", "message": "no realtime"}))
    assert err == ("CAPABILITY_UNAVAILABLE", "no realtime")
    assert P.parse_wire_error("<html>") is None
    assert P.parse_wire_error(json.dumps({"message": "no code"})) is None


def test_open_request_params():
    target = {"type": "session_target", "session_id": "019e"}
    params = P.open_request_params(
        target,
        "primary",
        "explicit_commit",
        reconnect_policy={"max_attempts": 3, "initial_backoff_ms": 500, "max_backoff_ms": 5000, "max_total_ms": 30000},
        channel_config={"tool_timeout": {"type": "finite", "timeout_ms": 15000}},
    )
    assert params == {
        "target": {"type": "session_target", "session_id": "019e"},
        "role": "primary",
        "turning_mode": "explicit_commit",
        "reconnect_policy": {"max_attempts": 3, "initial_backoff_ms": 500, "max_backoff_ms": 5000, "max_total_ms": 30000},
        "channel_config": {"tool_timeout": {"type": "finite", "timeout_ms": 15000}},
    }
    mob = {"type": "mob_member", "mob_id": "m", "agent_identity": "a"}
    assert P.open_request_params(mob)["target"]["type"] == "mob_member"
    for fn in (
        lambda: P.open_request_params({"type": "team"}),
        lambda: P.open_request_params(target, "god"),
        lambda: P.open_request_params(target, reconnect_policy={"max_attempts": -1}),
    ):
        try:
            fn()
        except (ValueError, P.ProtocolError):
            continue
        raise AssertionError("accepted bad open request")


def test_format_helpers():
    assert P.format_matches(FMT)
    assert not P.format_matches(dict(FMT, sample_rate_hz=16000))
    assert not P.format_matches(dict(FMT, mime_type="audio/pcm;rate=24000"))
    assert not P.format_matches(None)
    assert P.describe_format(FMT) == "audio/pcm @ 24000 Hz / 1 ch"
    assert P.describe_format(None) == "none"


def test_deep_nesting_is_a_protocol_error():
    for opener, closer in (("[", "]"), ('{"a":', "}")):
        text = opener * 3000 + "1" + closer * 3000
        _raises(text)
