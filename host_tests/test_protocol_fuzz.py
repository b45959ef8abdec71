"""Property tests of the server-frame parsers of both surfaces (CPython + hypothesis): whatever
arrives, a parser returns a validated frame or raises ProtocolError, nothing else."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meerkat_rt.downlink import data_value_at
from meerkat_rt.live import protocol as L
from meerkat_rt.v2 import protocol as P
from t_live_protocol import VALID_OBSERVATIONS
from t_v2_protocol import VALID_SERVER_FRAMES

json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
field_names = st.sampled_from(
    ["type", "event", "status", "state", "code", "message", "details", "kind", "chunk", "data",
     "item_id", "content_index", "capabilities", "role", "protocol_version", "reason", "delta",
     "text", "attempt_count", "sample_rate_hz", "channels", "mime_type"]
) | st.text(max_size=8)


def _parse_ok_or_protocol_error(data) -> None:
    report: list[str] = []
    try:
        frame = P.parse_server_frame(data, report)
    except P.ProtocolError as exc:
        assert isinstance(exc.reason, str) and exc.reason
        return
    assert isinstance(frame, dict) and frame["type"] in P.SERVER_FRAME_TYPES
    assert all(isinstance(r, str) for r in report)


def _live_ok_or_protocol_error(data) -> None:
    report: list[str] = []
    try:
        frame = L.parse_server_frame(data, report)
    except L.ProtocolError as exc:
        assert isinstance(exc.reason, str) and exc.reason
        return
    assert isinstance(frame, dict) and ("observation" in frame or "error" in frame)
    assert all(isinstance(r, str) for r in report)


@given(json_values)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_random_json(value):
    _parse_ok_or_protocol_error(json.dumps(value))
    _live_ok_or_protocol_error(json.dumps(value))


@given(st.binary(max_size=200))
def test_random_bytes(data):
    _parse_ok_or_protocol_error(data)
    _live_ok_or_protocol_error(data)


def _mutate(obj, path, action, value):
    """Apply one mutation at a path of keys inside nested dicts."""
    target = obj
    for key in path[:-1]:
        if not isinstance(target, dict) or key not in target:
            return obj
        target = target[key]
    if not isinstance(target, dict):
        return obj
    key = path[-1]
    if action == "delete":
        target.pop(key, None)
    else:
        target[key] = value
    return obj


@given(
    st.sampled_from(range(len(VALID_SERVER_FRAMES))),
    st.lists(st.tuples(st.lists(field_names, min_size=1, max_size=3), st.sampled_from(["delete", "set"]), json_values), min_size=1, max_size=4),
)
@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_valid_frames(index, mutations):
    obj = json.loads(json.dumps(VALID_SERVER_FRAMES[index]))
    for path, action, value in mutations:
        obj = _mutate(obj, path, action, value)
    _parse_ok_or_protocol_error(json.dumps(obj))


@given(
    st.sampled_from(range(len(VALID_OBSERVATIONS))),
    st.lists(st.tuples(st.lists(field_names, min_size=1, max_size=3), st.sampled_from(["delete", "set"]), json_values), min_size=1, max_size=4),
)
@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_valid_observations(index, mutations):
    obj = json.loads(json.dumps(VALID_OBSERVATIONS[index]))
    for path, action, value in mutations:
        obj = _mutate(obj, path, action, value)
    _live_ok_or_protocol_error(json.dumps(obj))


@given(st.sampled_from(range(len(VALID_SERVER_FRAMES))), st.integers(0, 400), st.binary(max_size=3))
def test_truncated_and_spliced_text(index, cut, splice):
    text = json.dumps(VALID_SERVER_FRAMES[index]).encode()
    _parse_ok_or_protocol_error(text[:cut] + splice + text[cut + len(splice):])


@given(st.binary(max_size=300))
def test_data_value_at_never_raises(data):
    buf = bytearray(data + b'"output_audio_chunk" "data":"')
    i = data_value_at(buf, 0, len(buf))
    assert i == -1 or 0 < i <= len(buf)


def test_deep_nesting_is_a_protocol_error():
    for opener, closer in (("[", "]"), ('{"a":', "}")):
        text = opener * 100000 + "1" + closer * 100000
        _parse_ok_or_protocol_error(text)
        _live_ok_or_protocol_error(text)
