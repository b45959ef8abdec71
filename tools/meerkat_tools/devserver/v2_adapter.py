"""Meerkat 0.6.2's OpenAI adapter, as the v2 surface sees it: provider events in, the host's
provider-neutral session events out, and client commands turned into provider commands.

This follows `OpenAiRealtimeSession` in `meerkat-openai/src/live.rs@v0.6.2` flag for flag,
because its flags are what make the real wire awkward:

- `interrupted` is produced when `response.done(cancelled)` arrives (L1466-1520), or at
  `speech_started` / an unprompted commit while assistant output is active; never when a
  cancel is asked for. The `TurnCompleted` of a cancelled response is queued behind it.
- After a provider-managed commit (server VAD, or a typed turn) the adapter is "awaiting" the
  new response and *suppresses* any `response.done` that arrives meanwhile (L1466-1483); any
  output delta, even a stale one of the cancelled reply, ends the wait (L1300-1305). So a late
  `response.done(cancelled)` is reported only if a stale delta came first.
- Typed turns in `provider_managed` queue `turn_started`, `input_transcript_partial`,
  `input_transcript_final`, `turn_committed` as pending events, which go out before the next
  provider event (L1846-1898, L2002-2004): they can precede a late `interrupted`.
- A cancel with nothing active comes back as OpenAI's "no active response" error, recognised
  by the cancel's event id and dropped (L1128).

The response-nudge recovery (750 ms windows, L2002-2170) is not modelled: the fake provider
always starts a requested response (README: differences).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque

from .agent import IdSource
from .provider import FakeProvider

U32_MAX = 0xFFFFFFFF


class AdapterError(Exception):
    """A command failed synchronously: `channel.error` and the channel survives."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class ProviderFatal(Exception):
    """The provider's event stream failed: the channel ends (error, closed{code}, drop)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


# Provider-neutral session events (meerkat-llm-core RealtimeSessionEvent), as dicts with "kind".
def session_event(kind: str, **fields) -> dict:
    return {"kind": kind, **fields}


_CLOSED = object()


class V2Adapter:
    def __init__(self, provider: FakeProvider, turning_mode: str, ids: IdSource):
        self.provider = provider
        self.turning_mode = turning_mode
        self.ids = ids
        self.pending: deque[dict] = deque()
        self._raw: asyncio.Queue = asyncio.Queue()
        self.response_output_active = False
        self.response_interrupt_emitted = False
        self.response_tool_call_observed = False
        self.active_response_id: str | None = None
        self.pending_interrupted_cancel: str | None = None
        self.awaiting_after_commit = False
        self.acknowledged_without_progress = False
        self.pending_truncations: dict[str, int] = {}
        self.pending_transcripts: dict[tuple[str, int], str] = {}
        self.cancel_event_ids: set[str] = set()
        self.has_staged_input = False
        self.has_staged_audio = False

    # -- provider side ----------------------------------------------------------------------

    def feed(self, event: dict) -> None:
        """The provider's deliver callback."""
        self._raw.put_nowait(event)

    def provider_closed(self) -> None:
        """The provider's event stream ended cleanly."""
        self._raw.put_nowait(_CLOSED)

    def _wake(self) -> None:
        # Pending events go out at the pump's next turn, before any later provider event.
        self._raw.put_nowait(None)

    async def next_event(self) -> dict | None:
        """The next session event; None when the provider's stream ended. Raises
        ProviderFatal for a provider error."""
        while True:
            if self.pending:
                return self.pending.popleft()
            raw = await self._raw.get()
            if raw is _CLOSED:
                return None
            if raw is None:
                continue
            mapped = self.map(raw)
            if mapped is not None:
                return mapped

    # -- commands (the channel's provider commands) -----------------------------------------

    def send_audio(self, data: str | bytes) -> bytes | None:
        pcm = self.provider.append_audio(data)
        self.has_staged_input = True
        self.has_staged_audio = True
        return pcm

    def send_text(self, text: str) -> None:
        item_id = self.ids.synthetic_text_item()
        self.provider.create_text_item(item_id, text)
        self.has_staged_input = True
        if self.turning_mode == "provider_managed":
            self.pending.append(session_event("turn_started"))
            self.pending.append(session_event("input_partial", text=text))
            self.pending.append(session_event("input_final", item_id=item_id, text=text))
            self.pending.append(session_event("turn_committed"))
            self.provider.create_response()
            self.has_staged_input = False
            self.awaiting_after_commit = True
            self._wake()

    def send_video(self) -> None:
        raise AdapterError(
            "invalid_request",
            "realtime input failed: openai realtime video input is not supported by the current adapter",
        )

    def commit_turn(self) -> None:
        if self.turning_mode != "explicit_commit":
            raise AdapterError(
                "invalid_request",
                "realtime commit_turn failed: realtime commit_turn is only valid for explicit_commit sessions",
            )
        if not self.has_staged_input:
            raise AdapterError(
                "invalid_request", "realtime commit_turn failed: realtime commit_turn requires staged input"
            )
        if self.has_staged_audio:
            self.provider.commit_audio()
        self.provider.create_response()
        self.has_staged_input = False
        self.has_staged_audio = False

    def interrupt(self) -> None:
        target = self.pending_interrupted_cancel or self.active_response_id
        self.pending_interrupted_cancel = None
        event_id = "evt_cancel_" + self.ids.event()[len("event_"):]
        self.cancel_event_ids.add(event_id)
        self.provider.cancel(event_id, target)

    def truncate(self, item_id: str, content_index: int, audio_played_ms: int) -> None:
        self.pending_truncations[item_id] = audio_played_ms
        self.provider.truncate(item_id, content_index, min(audio_played_ms, U32_MAX))

    def submit_tool_result(self, call_id: str, output: str) -> None:
        self.provider.submit_function_output(call_id, output)
        self.provider.create_response()

    def submit_tool_error(self, call_id: str, error: str) -> None:
        # An error output only: nothing asks for a continuation response.
        self.provider.submit_function_output(call_id, json.dumps({"error": error}))

    # -- mapping (map_server_event) ---------------------------------------------------------

    def _mark_output(self) -> None:
        """mark_response_output_active: fresh output re-arms the interrupt latch."""
        if not self.response_output_active:
            self.response_interrupt_emitted = False
        self.response_output_active = True

    def _progressed(self) -> None:
        self.awaiting_after_commit = False
        self.acknowledged_without_progress = False

    def _interrupt_now(self, then: list[dict]) -> dict:
        response_id = self.active_response_id
        self.response_output_active = False
        self.response_interrupt_emitted = True
        self.pending_interrupted_cancel = response_id
        self.pending.extend(then)
        return session_event("interrupted", response_id=response_id)

    def map(self, event: dict) -> dict | None:
        kind = event["type"]
        if kind in ("conversation.item.added", "conversation.item.done", "conversation.item.created"):
            return session_event("transcript", item=event["item"])
        if kind == "conversation.item.input_audio_transcription.delta":
            return session_event("input_partial", text=event["delta"])
        if kind == "conversation.item.input_audio_transcription.completed":
            return session_event("input_final", item_id=event["item_id"], text=event["transcript"])
        if kind == "input_audio_buffer.speech_started":
            if self.response_output_active and not self.response_interrupt_emitted:
                return self._interrupt_now([session_event("turn_started")])
            return session_event("turn_started")
        if kind == "input_audio_buffer.committed":
            self.awaiting_after_commit = self.turning_mode == "provider_managed"
            self.acknowledged_without_progress = False
            if self.response_output_active and not self.response_interrupt_emitted:
                return self._interrupt_now([session_event("turn_started"), session_event("turn_committed")])
            return session_event("turn_committed")
        if kind == "response.created":
            self.active_response_id = event["response"]["id"]
            self.awaiting_after_commit = False
            self.acknowledged_without_progress = True
            return None
        if kind == "response.done":
            return self._response_done(event["response"])
        if kind in ("response.output_item.added", "response.output_item.done"):
            self._progressed()
            item = event["item"]
            if item.get("type") == "message" and item.get("role") == "assistant":
                return session_event("transcript", item=item, response_id=event["response_id"])
            return None
        if kind == "response.output_text.delta":
            self._progressed()
            self._mark_output()
            return self._text_delta(event, event["delta"])
        if kind == "response.output_audio_transcript.delta":
            self._progressed()
            self._mark_output()
            key = (event["item_id"], event["content_index"])
            self.pending_transcripts[key] = self.pending_transcripts.get(key, "") + event["delta"]
            return self._text_delta(event, event["delta"])
        if kind == "response.output_audio_transcript.done":
            self._progressed()
            self._mark_output()
            seen = self.pending_transcripts.pop((event["item_id"], event["content_index"]), "")
            transcript = event["transcript"]
            if not transcript:
                return None
            if not seen:
                return self._text_delta(event, transcript)
            if transcript.startswith(seen) and len(transcript) > len(seen):
                return self._text_delta(event, transcript[len(seen):])
            return None
        if kind == "response.output_audio.delta":
            self._progressed()
            self._mark_output()
            return session_event("output_audio", data=event["delta"], response_id=event["response_id"],
                                 item_id=event["item_id"], content_index=event["content_index"])
        if kind == "response.function_call_arguments.done":
            self._progressed()
            self.response_tool_call_observed = True
            return session_event("tool_call", call_id=event["call_id"], tool_name=event["name"],
                                 arguments=event["arguments"])
        if kind == "conversation.item.truncated":
            item_id = event["item_id"]
            server_ms = event["audio_end_ms"]
            client_ms = self.pending_truncations.pop(item_id, None)
            played = server_ms if client_ms is None else max(server_ms, client_ms)
            return session_event("truncated", item_id=item_id, audio_played_ms=played,
                                 truncated_text=self.pending_transcripts.get((item_id, 0)))
        if kind == "error":
            return self._error(event["error"])
        return None

    def _text_delta(self, event: dict, delta: str) -> dict:
        return session_event("output_text", delta=delta, response_id=event["response_id"],
                             item_id=event["item_id"], content_index=event["content_index"])

    def _response_done(self, response: dict) -> dict | None:
        if self.awaiting_after_commit:
            # A late completion of the previous response while the next turn awaits its own.
            self.response_output_active = False
            self.response_interrupt_emitted = False
            self.response_tool_call_observed = False
            return None
        self._progressed()
        self.response_output_active = False
        already_interrupted, self.response_interrupt_emitted = self.response_interrupt_emitted, False
        tool_call, self.response_tool_call_observed = self.response_tool_call_observed, False
        status = response["status"]
        stop_reason = stop_reason_of(response, tool_call)
        completed = session_event("turn_completed", response_id=response["id"], stop_reason=stop_reason)
        if status == "cancelled" and not already_interrupted:
            self.response_interrupt_emitted = True
            self.pending_interrupted_cancel = response["id"]
            self.pending.append(completed)
            return session_event("interrupted", response_id=response["id"])
        return completed

    def _error(self, error: dict) -> dict | None:
        message = error.get("message", "")
        lowered = message.lower()
        event_id = error.get("event_id")
        if event_id in self.cancel_event_ids and "cancellation failed" in lowered and "no active response" in lowered:
            self.cancel_event_ids.discard(event_id)
            return None
        if "active response in progress" in lowered and (
            self.response_output_active or self.awaiting_after_commit or self.acknowledged_without_progress
        ):
            self.awaiting_after_commit = False
            self.acknowledged_without_progress = True
            return None
        raise ProviderFatal("invalid_request", "realtime event_pump failed: " + message)


def stop_reason_of(response: dict, observed_tool_call: bool) -> str:
    """openai_response_stop_reason: the stop reason Meerkat derives from response.done."""
    status = response["status"]
    if status == "completed":
        has_tool = observed_tool_call or any(
            item.get("type") in ("function_call", "mcp_call") for item in response.get("output") or ()
        )
        return "tool_use" if has_tool else "end_turn"
    if status == "cancelled":
        return "cancelled"
    if status == "incomplete":
        reason = (response.get("status_details") or {}).get("reason") or ""
        return {"max_output_tokens": "max_tokens", "content_filter": "content_filter"}.get(reason, "end_turn")
    return "end_turn"



class ProductTurnPhase:
    """The v2 host's product-turn phase (meerkat-core handles.rs L1704-1786): input makes a
    turn in flight; `turn_committed` and output (a delta or a tool call) each advance it, and
    only with both is it Preemptible, the one phase in which input cancels the response
    (reference 5.3). An interrupt clears the output milestone; a logically terminal
    `turn_completed` (any stop reason but tool_use, cancelled included) and a preemption end
    the turn. A stale `turn_completed(cancelled)` can therefore end the *next* turn's phase."""

    IDLE, AWAITING, COMMITTED, OUTPUT_STARTED, PREEMPTIBLE = (
        "idle", "awaiting_progress", "committed", "output_started", "preemptible")

    def __init__(self) -> None:
        self.phase = self.IDLE

    def in_flight(self) -> None:
        if self.phase == self.IDLE:
            self.phase = self.AWAITING

    def committed(self) -> None:
        if self.phase == self.AWAITING:
            self.phase = self.COMMITTED
        elif self.phase == self.OUTPUT_STARTED:
            self.phase = self.PREEMPTIBLE

    def output_started(self) -> None:
        if self.phase == self.AWAITING:
            self.phase = self.OUTPUT_STARTED
        elif self.phase == self.COMMITTED:
            self.phase = self.PREEMPTIBLE

    def interrupted(self) -> None:
        if self.phase == self.PREEMPTIBLE:
            self.phase = self.COMMITTED
        elif self.phase == self.OUTPUT_STARTED:
            self.phase = self.AWAITING

    def terminal(self) -> None:
        self.phase = self.IDLE

    @property
    def preemptible(self) -> bool:
        return self.phase == self.PREEMPTIBLE
