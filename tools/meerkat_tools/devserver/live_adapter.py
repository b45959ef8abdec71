"""Meerkat 0.8.26's OpenAI live adapter: provider events in, live observations out on two lanes,
and the channel's commands turned into provider commands.

Mapping (meerkat-openai/src/live.rs@v0.8.26 L2525-3070, translate_realtime_event L6207-6369):
speech start, commit and every input-transcript delta become an indistinguishable
`status_changed{ready}` (the partial text is dropped); speech or a commit while assistant
*audio* output is active becomes `turn_interrupted{response_id}` first; `response.done` of the
current response becomes `turn_completed` with the provider's usage, and a cancelled one
`turn_interrupted` (if not yet sent) then `turn_completed{stop_reason:"cancelled"}`; a
`response.done` for anything but the current response is dropped. Truncation results carry the
whole pending transcript of the item, or no text once its transcript is done.

Output lanes (live.rs L4793-4794, L5089-5158): control observations go through a reliable
queue, assistant audio through a lossy one of `audio_lane_capacity` chunks (a full lane drops
the chunk with only a log line); the pump always drains control first, so transcript and turn
events can overtake queued audio of the same response.

Provider errors other than the two suppressed "active response" cases are terminal: the
`on_terminal` callback ends the channel.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from typing import Callable

from . import live_wire as lw
from .agent import IdSource
from .provider import FakeProvider, parse_arguments
from .v2_adapter import U32_MAX, stop_reason_of

log = logging.getLogger("meerkat_devserver.live")


class LiveAdapter:
    def __init__(
        self,
        provider: FakeProvider,
        turning_mode: str,
        ids: IdSource,
        audio_capacity: int,
        on_tool_call: Callable[[str, str, object], None],
        on_terminal: Callable[[str], None],
        on_user_turn: Callable[[], None] = lambda: None,
        on_drop: Callable[[], None] = lambda: None,
    ):
        self.provider = provider
        self.turning_mode = turning_mode
        self.ids = ids
        self.audio_capacity = audio_capacity
        self.on_tool_call = on_tool_call
        self.on_terminal = on_terminal
        self.on_user_turn = on_user_turn
        self.on_drop = on_drop
        self.control: deque[dict] = deque()
        self.audio: deque[dict] = deque()
        self.audio_dropped = 0
        self._wake = asyncio.Event()
        self.closed = False
        self.finished = False  # the provider's stream ended: drain the lanes, then stop
        self.audio_output_active = False
        self.response_interrupt_emitted = False
        self.response_tool_call_observed = False
        self.active_response_id: str | None = None
        self.pending_interrupted_cancel: str | None = None
        self.retiring: set[str] = set()
        self.cancel_event_ids: set[str] = set()
        self.pending_truncations: dict[str, int] = {}
        self.pending_transcripts: dict[tuple[str, int], str] = {}
        self.previous: dict[str, str | None] = {}
        self.response_for_item: dict[str, str] = {}
        self.awaiting = False  # after a provider-managed commit, until the response progresses
        self.has_staged_input = False
        self.has_staged_audio = False

    # -- lanes ------------------------------------------------------------------------------

    def push(self, observation: dict) -> None:
        if self.closed:
            return
        if observation["observation"] == "assistant_audio_chunk":
            if len(self.audio) >= self.audio_capacity:
                self.audio_dropped += 1
                log.info("live adapter: audio lane full (%d): chunk dropped", self.audio_capacity)
                self.on_drop()
                return
            self.audio.append(observation)
        else:
            self.control.append(observation)
        self._wake.set()

    async def next_out(self) -> dict | None:
        """The next observation to send, control lane first; None once closed."""
        while True:
            if self.closed:
                return None
            if self.control:
                return self.control.popleft()
            if self.audio:
                return self.audio.popleft()
            if self.finished:
                return None
            self._wake.clear()
            await self._wake.wait()

    def finish(self) -> None:
        self.finished = True
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self.control.clear()
        self.audio.clear()
        self._wake.set()

    def reject_later(self, observation: dict) -> None:
        """A scoped rejection the adapter reports asynchronously (after the input was taken)."""
        asyncio.get_running_loop().call_soon(self.push, observation)

    # -- commands ---------------------------------------------------------------------------

    def send_audio(self, pcm: bytes, sample_rate_hz: int = lw.SAMPLE_RATE_HZ, channels: int = lw.CHANNELS) -> bool:
        if sample_rate_hz != lw.SAMPLE_RATE_HZ or channels != lw.CHANNELS:
            self.reject_later(lw.audio_format_rejection(sample_rate_hz, channels))
            return False
        self.provider.append_audio(pcm)
        self.has_staged_input = True
        self.has_staged_audio = True
        return True

    def send_text(self, text: str) -> None:
        item_id = self.ids.synthetic_text_item()
        previous = self.provider.conversation[-1] if self.provider.conversation else None
        self.provider.create_text_item(item_id, text)
        self.has_staged_input = True
        if self.turning_mode == "provider_managed":
            # TurnStarted, InputTranscriptPartial, InputTranscriptFinalForItem, TurnCommitted.
            self.push(lw.status_changed())
            self.push(lw.status_changed())
            self.push(lw.user_transcript_final(item_id, previous, 0, text))
            self.push(lw.status_changed())
            self.on_user_turn()
            self.provider.create_response()
            self.has_staged_input = False
            self.awaiting = True

    def send_video(self) -> None:
        self.reject_later(lw.command_rejected({"kind": "video_frame_input_not_implemented"},
                                              "video_frame_input_not_implemented"))

    def commit(self, modality: str = "audio") -> str | None:
        """live/commit_input; returns the terminal error (the channel must end) or None."""
        if self.turning_mode != "explicit_commit":
            return "realtime commit_turn is only valid for explicit_commit sessions"
        if not self.has_staged_input:
            return "realtime commit_turn requires staged input"
        if self.has_staged_audio:
            self.provider.commit_audio()
        self.provider.create_response(modality)
        self.has_staged_input = False
        self.has_staged_audio = False
        return None

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
        predecessor, self.active_response_id = self.active_response_id, None
        self.provider.submit_function_output(call_id, output)
        self.provider.create_response()
        if predecessor is not None:
            self.retiring.add(predecessor)  # its late response.done must not end the continuation
        self.audio_output_active = False
        self.response_interrupt_emitted = False
        self.response_tool_call_observed = False
        self.awaiting = True

    def submit_tool_error(self, call_id: str, error: str) -> None:
        self.provider.submit_function_output(call_id, json.dumps({"error": error}))

    # -- mapping ----------------------------------------------------------------------------

    def feed(self, event: dict) -> None:
        """The provider's deliver callback."""
        if self.closed:
            return
        try:
            self._map(event)
        except Terminal as exc:
            self.on_terminal(str(exc))

    def _prev(self, item_id: str) -> str | None:
        return self.previous.get(item_id)

    def _interrupt(self) -> None:
        response_id = self.active_response_id
        self.audio_output_active = False
        self.response_interrupt_emitted = True
        self.pending_interrupted_cancel = response_id
        self.push(lw.turn_interrupted(response_id))

    def _mark_audio(self) -> None:
        if not self.audio_output_active:
            self.response_interrupt_emitted = False
        self.audio_output_active = True

    def _map(self, event: dict) -> None:
        kind = event["type"]
        if kind in ("conversation.item.added", "conversation.item.done", "conversation.item.created"):
            item = event["item"]
            self.previous.setdefault(item["id"], event.get("previous_item_id"))
            if item.get("type") == "message":
                self.push(lw.item_observed(item["id"], event.get("previous_item_id"), item["role"], None))
            else:
                self.push(lw.item_skipped(item["id"], event.get("previous_item_id")))
        elif kind == "conversation.item.input_audio_transcription.delta":
            self.push(lw.status_changed())
        elif kind == "conversation.item.input_audio_transcription.completed":
            item_id = event["item_id"]
            self.push(lw.user_transcript_final(item_id, self._prev(item_id), event["content_index"],
                                               event["transcript"]))
        elif kind == "input_audio_buffer.speech_started":
            if self.audio_output_active and not self.response_interrupt_emitted:
                self._interrupt()
            self.push(lw.status_changed())
        elif kind == "input_audio_buffer.committed":
            self.previous[event["item_id"]] = event.get("previous_item_id")
            self.has_staged_input = self.has_staged_audio = False
            self.awaiting = self.turning_mode == "provider_managed"
            if self.audio_output_active and not self.response_interrupt_emitted:
                self._interrupt()
                self.push(lw.status_changed())
            self.push(lw.status_changed())
            self.on_user_turn()
        elif kind == "response.created":
            rid = event["response"]["id"]
            if rid in self.retiring:
                return
            self.active_response_id = rid
        elif kind == "response.done":
            self._response_done(event["response"])
        elif kind in ("response.output_item.added", "response.output_item.done"):
            if event["response_id"] in self.retiring:
                return
            self.awaiting = False
            item = event["item"]
            self.response_for_item[item["id"]] = event["response_id"]
            if item.get("type") == "message" and item.get("role") == "assistant":
                self.push(lw.item_observed(item["id"], None, "assistant", event["response_id"]))
        elif kind == "response.output_text.delta":
            self.awaiting = False
            self.push(lw.assistant_delta("assistant_text_delta", event["item_id"], self._prev(event["item_id"]),
                                         event["content_index"], event["response_id"], event["event_id"],
                                         event["delta"]))
        elif kind == "response.output_audio_transcript.delta":
            if event["response_id"] in self.retiring:
                return
            self.awaiting = False
            self._mark_audio()
            key = (event["item_id"], event["content_index"])
            self.pending_transcripts[key] = self.pending_transcripts.get(key, "") + event["delta"]
            self.push(lw.assistant_delta("assistant_transcript_delta", event["item_id"],
                                         self._prev(event["item_id"]), event["content_index"],
                                         event["response_id"], event["event_id"], event["delta"]))
        elif kind == "response.output_audio_transcript.done":
            if event["response_id"] in self.retiring:
                return
            self._mark_audio()
            item_id, ci = event["item_id"], event["content_index"]
            seen = self.pending_transcripts.pop((item_id, ci), "")
            transcript = event["transcript"]
            suffix = transcript[len(seen):] if transcript.startswith(seen) else ""
            if transcript and (suffix or not seen):
                self.push(lw.assistant_delta("assistant_transcript_delta", item_id, self._prev(item_id), ci,
                                             event["response_id"], event["event_id"], suffix or transcript))
            self.push(lw.transcript_final(item_id, self._prev(item_id), ci, event["response_id"], transcript))
        elif kind == "response.output_audio.delta":
            if event["response_id"] in self.retiring:
                return
            self.awaiting = False
            self._mark_audio()
            self.response_for_item[event["item_id"]] = event["response_id"]
            self.push(lw.audio_chunk(event["delta"], event["response_id"], event["item_id"], event["content_index"]))
        elif kind == "response.function_call_arguments.done":
            self.awaiting = False
            self.response_tool_call_observed = True
            arguments = parse_arguments(event["arguments"])
            self.push(lw.tool_call_requested(event["call_id"], event["name"], arguments))
            self.on_tool_call(event["call_id"], event["name"], arguments)
        elif kind == "conversation.item.truncated":
            item_id = event["item_id"]
            self.pending_truncations.pop(item_id, None)  # audio_played_ms stays internal here
            self.push(lw.transcript_truncated(item_id, 0, self.response_for_item.get(item_id),
                                              self.pending_transcripts.get((item_id, 0))))
        elif kind == "error":
            self._error(event["error"])

    def _response_done(self, response: dict) -> None:
        rid = response["id"]
        if rid in self.retiring:
            self.retiring.discard(rid)
            return
        if self.active_response_id != rid:
            return  # not the current generation
        self.active_response_id = None
        self.audio_output_active = False
        self.awaiting = False
        tool_call, self.response_tool_call_observed = self.response_tool_call_observed, False
        stop_reason = stop_reason_of(response, tool_call)
        completed = lw.turn_completed(rid, stop_reason, response.get("usage"))
        if response["status"] == "cancelled":
            already, self.response_interrupt_emitted = self.response_interrupt_emitted, False
            if not already:
                self.response_interrupt_emitted = True
                self.pending_interrupted_cancel = rid
                self.push(lw.turn_interrupted(rid))
            self.push(completed)
        else:
            self.response_interrupt_emitted = False
            self.push(completed)

    def _error(self, error: dict) -> None:
        message = error.get("message", "")
        lowered = message.lower()
        event_id = error.get("event_id")
        if event_id in self.cancel_event_ids and "cancellation failed" in lowered and "no active response" in lowered:
            self.cancel_event_ids.discard(event_id)
            return
        if "active response in progress" in lowered:
            return
        raise Terminal(f"provider error: {message}")


class Terminal(Exception):
    """A terminal adapter failure (the channel closes; nothing is published since 0.7.0)."""
