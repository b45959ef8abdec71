"""Status emission (reference 6.1), the reconnect cycle (6.2) and provider-side errors (5.10)."""

from __future__ import annotations

import datetime as dt

import pytest

from meerkat_tools.devserver import Faults

from ._client import FAST_POLICY, RpcClient, connect, is_event, silence, target

REATTACH = "realtime attachment requires reattach"


def when(stamp: str) -> dt.datetime:
    assert stamp.endswith("+00:00")
    return dt.datetime.fromisoformat(stamp)


def status_pairs(frames: list[dict]) -> list[dict]:
    """Every channel.status must be followed at once by status_changed with the same status."""
    out = []
    for i, frame in enumerate(frames):
        if frame.get("type") == "channel.status":
            nxt = frames[i + 1]
            assert nxt == {"type": "channel.event", "event": {"type": "status_changed", "status": frame["status"]}}
            out.append(frame["status"])
    return out


def test_successful_reconnect_cycle(srv):
    ch, _ = connect(srv, policy=FAST_POLICY)
    assert srv.force_reconnect_cycle(succeed=True)
    frames = ch.recv_until(lambda f: f.get("type") == "channel.status" and f["status"]["state"] == "ready")
    frames.append(ch.recv())  # its status_changed
    statuses = status_pairs(frames)
    assert [s["state"] for s in statuses] == ["reconnecting", "ready"]
    first = statuses[0]
    assert list(first) == ["state", "attempt_count", "next_retry_at", "deadline_at", "reason"]
    assert first["attempt_count"] == 1 and first["reason"] == REATTACH
    backoff = (when(first["next_retry_at"]) - dt.datetime.now(dt.timezone.utc)).total_seconds()
    assert backoff <= 0.05  # full jitter within [0, initial_backoff]
    assert 4 < (when(first["deadline_at"]) - dt.datetime.now(dt.timezone.utc)).total_seconds() <= 5
    assert statuses[1] == {"state": "ready", "attempt_count": 0}
    # needs_reattach comes once, right after the first status pair.
    assert [f["event"]["type"] for f in frames if is_event(f, "needs_reattach")] == ["needs_reattach"]
    assert is_event(frames[2], "needs_reattach")
    # The channel works again.
    ch.send_text("back?")
    ch.recv_event("turn_completed")


def test_failed_attempts_then_success(srv):
    ch, _ = connect(srv, policy=FAST_POLICY)
    srv.force_reconnect_cycle(failures=2)
    frames = ch.recv_until(lambda f: f.get("type") == "channel.status" and f["status"]["state"] == "ready")
    frames.append(ch.recv())
    statuses = status_pairs(frames)
    assert [(s["state"], s["attempt_count"]) for s in statuses] == [
        ("reconnecting", 1), ("reconnecting", 2), ("reconnecting", 3), ("ready", 0)]
    assert len({s["deadline_at"] for s in statuses[:3]}) == 1  # one deadline per cycle
    assert sum(1 for f in frames if is_event(f, "needs_reattach")) == 1


def test_exhaustion_after_max_attempts(srv):
    policy = dict(FAST_POLICY, max_attempts=2)
    ch, _ = connect(srv, policy=policy)
    srv.force_reconnect_cycle(succeed=False)
    frames = ch.recv_until(lambda f: f.get("type") == "channel.closed")
    statuses = status_pairs(frames)
    assert [(s["state"], s["attempt_count"]) for s in statuses] == [
        ("reconnecting", 1), ("reconnecting", 2), ("error", 0)]
    assert statuses[-1] == {"state": "error", "attempt_count": 0, "reason": "realtime reconnect attempts exhausted"}
    error, closed = frames[-2], frames[-1]
    assert error["type"] == "channel.error" and error["code"] == "reconnect_exhausted"
    assert error["message"].startswith("realtime reconnect attempts exhausted: ")
    assert closed == {"type": "channel.closed", "reason": "reconnect_exhausted"}
    assert ch.expect_end() is None
    srv.wait_channel_ended(1)
    assert srv.status()["state"] == "closed"


def test_exhaustion_when_the_budget_expires(srv):
    policy = {"max_attempts": 1000, "initial_backoff_ms": 30, "max_backoff_ms": 60, "max_total_ms": 400}
    ch, _ = connect(srv, policy=policy)
    srv.force_reconnect_cycle(succeed=False)
    frames = ch.recv_until(lambda f: f.get("type") == "channel.closed")
    assert frames[-2]["message"] == (
        "realtime reconnect attempts exhausted: realtime reconnect budget expired before the next retry")
    assert frames[-1]["reason"] == "reconnect_exhausted"


def test_policy_is_clamped(srv):
    policy = {"max_attempts": 0, "initial_backoff_ms": 20, "max_backoff_ms": 0, "max_total_ms": 0}
    ch, _ = connect(srv, policy=policy)
    srv.force_reconnect_cycle(succeed=False)
    frames = ch.recv_until(lambda f: f.get("type") == "channel.closed")
    statuses = status_pairs(frames)
    assert [s["state"] for s in statuses] == ["reconnecting", "error"]  # max_attempts clamped to 1
    assert "deadline_at" not in statuses[0]  # max_total_ms 0: no deadline


def test_control_frames_during_reconnecting_get_channel_reconnecting(srv):
    policy = {"max_attempts": 1000, "initial_backoff_ms": 50, "max_backoff_ms": 100, "max_total_ms": 1500}
    ch, _ = connect(srv, policy=policy)
    srv.force_reconnect_cycle(succeed=False)
    ch.recv_until(lambda f: is_event(f, "needs_reattach"))
    sends = [
        {"type": "channel.input", "chunk": {"kind": "text_chunk", "text": "hello?"}},
        {"type": "channel.interrupt"},
        {"type": "channel.barge_in_truncate", "item_id": "item_1", "content_index": 0, "audio_played_ms": 5},
    ]
    for frame in sends:
        ch.send(frame)
        reply = ch.recv_until(lambda f: f.get("type") == "channel.error")[-1]
        assert reply["code"] == "channel_reconnecting", reply
    assert srv.input_pcm() == b""


def test_commit_during_reconnecting(srv):
    policy = {"max_attempts": 1000, "initial_backoff_ms": 50, "max_backoff_ms": 100, "max_total_ms": 1500}
    ch, _ = connect(srv, mode="explicit_commit", policy=policy)
    srv.force_reconnect_cycle(succeed=False)
    ch.recv_until(lambda f: is_event(f, "needs_reattach"))
    ch.send_audio(silence(200))
    assert ch.recv_until(lambda f: f.get("type") == "channel.error")[-1]["code"] == "channel_reconnecting"
    ch.send({"type": "channel.commit_turn"})
    assert ch.recv_until(lambda f: f.get("type") == "channel.error")[-1]["code"] == "channel_reconnecting"


def test_reconnect_cancels_the_reply_silently(make_server):
    srv = make_server(paced=True)
    ch, _ = connect(srv, policy=FAST_POLICY)
    ch.send_text("talk")
    ch.recv_event("output_audio_chunk")
    srv.force_reconnect_cycle()
    frames = ch.recv_until(lambda f: f.get("type") == "channel.status" and f["status"]["state"] == "ready")
    assert not any(is_event(f, t) for f in frames for t in ("interrupted", "turn_completed"))
    assert srv.items()[0]["state"] == "abandoned"
    # Items of the old provider session are unknown to the new one.
    ch.recv()  # status_changed
    ch.send({"type": "channel.barge_in_truncate", "item_id": "item_1", "content_index": 0, "audio_played_ms": 1})
    assert ch.recv()["code"] == "invalid_request"


def test_realtime_status_follows_the_channel(srv):
    client = RpcClient(srv.rpc_address)

    def state() -> dict:
        return client.request("realtime/status", {"target": target(srv)})["result"]["status"]

    try:
        assert state()["state"] == "closed"
        ch, _ = connect(srv, policy={"max_attempts": 1000, "initial_backoff_ms": 50, "max_backoff_ms": 100,
                                      "max_total_ms": 1200})
        assert state() == {"state": "ready", "attempt_count": 0}
        srv.force_reconnect_cycle(succeed=False)
        ch.recv_until(lambda f: is_event(f, "needs_reattach"))
        assert state()["state"] == "reconnecting"
        ch.recv_until(lambda f: f.get("type") == "channel.closed")
        srv.wait_channel_ended(1)
        assert state()["state"] == "closed"
    finally:
        client.close()


def test_only_one_cycle_at_a_time(srv):
    policy = {"max_attempts": 1000, "initial_backoff_ms": 50, "max_backoff_ms": 100, "max_total_ms": 1000}
    ch, _ = connect(srv, policy=policy)
    assert srv.force_reconnect_cycle(succeed=False) is True
    ch.recv_until(lambda f: is_event(f, "needs_reattach"))
    assert srv.force_reconnect_cycle() is False


def test_timed_reconnect_fault(make_server):
    srv = make_server(faults=Faults(reconnect_at=0.05, reconnect_failures=1))
    ch, _ = connect(srv, policy=FAST_POLICY)
    frames = ch.recv_until(lambda f: f.get("type") == "channel.status" and f["status"]["state"] == "ready")
    states = [(f["status"]["state"], f["status"]["attempt_count"]) for f in frames if f.get("type") == "channel.status"]
    assert states == [("reconnecting", 1), ("reconnecting", 2), ("ready", 0)]
    assert srv.faults.reconnect_at is None


# -- provider errors -------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["authentication_failed", "invalid_request", "content_filtered",
                                  "model_not_found", "provider_session_failed", "provider_session_closed"])
def test_terminal_provider_error(srv, code):
    ch, _ = connect(srv)
    srv.force_provider_error(code)
    error = ch.recv()
    assert error["type"] == "channel.error" and error["code"] == code
    assert error["message"].startswith("realtime event_pump failed: ")
    assert ch.recv() == {"type": "channel.closed", "reason": code}
    assert ch.expect_end() is None


def test_timed_provider_error_fault(make_server):
    srv = make_server(faults=Faults(provider_error_at=0.05, provider_error_code="model_not_found"))
    ch, _ = connect(srv)
    assert ch.recv()["code"] == "model_not_found"
    assert ch.recv()["reason"] == "model_not_found"


def test_clean_provider_close_with_pending_input_reconnects(srv):
    ch, _ = connect(srv, policy=FAST_POLICY)
    ch.send_audio(silence(100))
    assert ch.sentinel() == []
    srv.force_provider_close()
    frames = ch.recv_until(lambda f: f.get("type") == "channel.status" and f["status"]["state"] == "ready")
    assert any(is_event(f, "needs_reattach") for f in frames)


def test_clean_provider_close_when_idle_leaves_a_dead_channel(srv):
    ch, _ = connect(srv)
    srv.force_provider_close()
    ch.send_text("anyone?")
    error = ch.recv()
    assert error["code"] == "channel_reconnecting"
    ch.send({"type": "channel.interrupt"})
    assert ch.recv()["code"] == "channel_reconnecting"
    assert srv.status() == {"state": "ready", "attempt_count": 0}  # status still reads ready
