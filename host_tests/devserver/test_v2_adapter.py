"""The v0.6.2 adapter mapping, fed OpenAI-like events directly: the flag logic that makes the
real wire awkward (live.rs@v0.6.2 map_server_event), deterministic here."""

from __future__ import annotations

import asyncio

import pytest

from meerkat_tools.devserver.agent import IdSource
from meerkat_tools.devserver.v2_adapter import ProductTurnPhase, ProviderFatal, V2Adapter


class Provider:
    """Records commands; emits nothing by itself."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name,) + args)


def adapter(mode: str = "provider_managed") -> tuple[V2Adapter, Provider]:
    provider = Provider()
    return V2Adapter(provider, mode, IdSource("short")), provider  # type: ignore[arg-type]


def kinds(a: V2Adapter, events: list[dict]) -> list[str]:
    out = []
    for event in events:
        mapped = a.map(event)
        if mapped is not None:
            out.append(mapped["kind"])
        while a.pending:
            out.append(a.pending.popleft()["kind"])
    return [k for k in out if k != "transcript"]


def created(rid: str = "resp_1") -> dict:
    return {"type": "response.created", "response": {"id": rid, "status": "in_progress"}}


def audio(rid: str = "resp_1", item: str = "item_2") -> dict:
    return {"type": "response.output_audio.delta", "response_id": rid, "item_id": item, "content_index": 0,
            "delta": "AAAA"}


def done(status: str, rid: str = "resp_1", output: list | None = None) -> dict:
    return {"type": "response.done", "response": {"id": rid, "status": status, "output": output or []}}


SPEECH = {"type": "input_audio_buffer.speech_started", "item_id": "item_3"}
COMMIT = {"type": "input_audio_buffer.committed", "item_id": "item_3", "previous_item_id": "item_2"}


def test_cancel_reported_by_response_done_is_interrupted_then_a_suppressed_completion():
    a, _ = adapter()
    assert kinds(a, [created(), audio(), done("cancelled")]) == ["output_audio", "interrupted", "turn_completed"]


def test_speech_over_output_interrupts_at_once_and_the_done_only_completes():
    a, _ = adapter()
    assert kinds(a, [created(), audio(), SPEECH]) == ["output_audio", "interrupted", "turn_started"]
    events = [a.map(done("cancelled"))]
    assert [e["kind"] for e in events if e] == ["turn_completed"]
    assert events[0]["stop_reason"] == "cancelled"


def test_a_stale_delta_rearms_the_latch_so_the_commit_interrupts_again():
    a, _ = adapter()
    assert kinds(a, [created(), audio(), SPEECH, audio(), COMMIT]) == [
        "output_audio", "interrupted", "turn_started", "output_audio", "interrupted", "turn_started", "turn_committed"]


def test_a_late_done_while_awaiting_the_next_response_is_dropped():
    a, _ = adapter()
    kinds(a, [created(), audio()])
    a.send_text("typed barge-in")  # provider-managed: synthetic turn events, awaiting
    assert [e["kind"] for e in list(a.pending)] == ["turn_started", "input_partial", "input_final", "turn_committed"]
    a.pending.clear()
    assert kinds(a, [done("cancelled")]) == []  # no interrupted, no completion: dropped


def test_a_stale_delta_ends_the_wait_and_the_late_done_is_reported():
    a, _ = adapter()
    kinds(a, [created(), audio()])
    a.send_text("typed barge-in")
    a.pending.clear()
    assert kinds(a, [audio(), done("cancelled")]) == ["output_audio", "interrupted", "turn_completed"]


def test_tool_use_stop_reason():
    a, _ = adapter()
    call = {"type": "response.function_call_arguments.done", "response_id": "resp_1", "item_id": "item_2",
            "call_id": "call_1", "name": "get_weather", "arguments": "{}"}
    a.map(created())
    assert a.map(call)["kind"] == "tool_call"
    assert a.map(done("completed", output=[{"type": "function_call"}]))["stop_reason"] == "tool_use"


def test_cancel_error_with_its_event_id_is_dropped_and_others_are_fatal():
    a, provider = adapter()
    a.interrupt()
    name, event_id, target = provider.calls[-1]
    assert name == "cancel" and event_id.startswith("evt_cancel_") and target is None
    error = {"type": "error", "error": {"message": "Cancellation failed: no active response found", "event_id": event_id}}
    assert a.map(error) is None
    with pytest.raises(ProviderFatal) as exc:
        a.map({"type": "error", "error": {"message": "Audio content of 5ms is already shorter than 9ms"}})
    assert exc.value.code == "invalid_request"
    assert exc.value.message == "realtime event_pump failed: Audio content of 5ms is already shorter than 9ms"


def test_truncation_result_carries_the_whole_pending_transcript():
    a, provider = adapter()
    delta = {"type": "response.output_audio_transcript.delta", "response_id": "resp_1", "item_id": "item_2",
             "content_index": 0, "delta": "It is "}
    a.map(delta)
    a.map(dict(delta, delta="sunny"))
    a.truncate("item_2", 0, 700)
    assert provider.calls[-1] == ("truncate", "item_2", 0, 700)
    out = a.map({"type": "conversation.item.truncated", "item_id": "item_2", "content_index": 0, "audio_end_ms": 650})
    assert out == {"kind": "truncated", "item_id": "item_2", "audio_played_ms": 700, "truncated_text": "It is sunny"}
    a.map({"type": "response.output_audio_transcript.done", "response_id": "resp_1", "item_id": "item_2",
           "content_index": 0, "transcript": "It is sunny"})
    out = a.map({"type": "conversation.item.truncated", "item_id": "item_2", "content_index": 0, "audio_end_ms": 650})
    assert out["truncated_text"] is None and out["audio_played_ms"] == 650


def test_explicit_commit_text_gets_no_turn_events():
    a, provider = adapter("explicit_commit")
    a.send_text("typed")
    assert not a.pending
    a.commit_turn()
    assert [c[0] for c in provider.calls] == ["create_text_item", "create_response"]


def test_pending_events_go_out_before_later_provider_events():
    async def main() -> list[str]:
        a, _ = adapter()
        a.feed(audio())
        a.send_text("typed")
        out = []
        for _ in range(5):
            out.append((await a.next_event())["kind"])
        return out

    assert asyncio.run(main()) == ["turn_started", "input_partial", "input_final", "turn_committed", "output_audio"]


def test_product_turn_phase():
    phase = ProductTurnPhase()
    phase.output_started()
    assert phase.phase == "idle"  # output without a turn in flight does not count
    phase.in_flight()
    phase.committed()
    assert not phase.preemptible
    phase.output_started()
    assert phase.preemptible
    phase.interrupted()
    assert phase.phase == "committed"
    phase.terminal()
    assert phase.phase == "idle"
