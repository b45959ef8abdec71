"""The fake realtime model: a stand-in for the OpenAI Realtime session Meerkat's adapter talks to.

It takes OpenAI-like client commands (`input_audio_buffer.append`, `conversation.item.create`,
`response.create`, `response.cancel`, `conversation.item.truncate`, ...) as method calls and
emits OpenAI-like server events (`input_audio_buffer.speech_started`, `response.output_audio.delta`,
`response.done`, `conversation.item.truncated`, `error`, ...) as dicts, in time order, through a
`deliver` callback. Both surfaces share it: `v2_adapter.py` and `live_adapter.py` play Meerkat's
part and project these events onto their wire. Nothing here knows about either wire.

Timing is what makes the real server awkward, so it is modelled explicitly on a timeline:

- a response's events are scheduled when it starts: `response.created`, then after
  `reply_latency_ms` its transcript deltas and audio deltas paced at `reply_speed` x real time
  (chunk sizes from the chunk profile), then `response.done`;
- `response.cancel` (and server VAD speech over an audio response, OpenAI's
  `interrupt_response`) takes effect after a cancel latency drawn from `cancel_latency_ms`:
  the response keeps streaming until then (the stale deltas a client still receives), then
  `response.done` with status `cancelled`; a cancel with nothing active is answered with
  OpenAI's "no active response" error, tagged with the cancel's event id;
- a `response.create` while a response is active waits until it is done (the end result of
  OpenAI's "active response in progress" refusal and Meerkat's re-request);
- input transcription completes `transcription_latency_ms` after the commit (often after the
  reply started), its deltas spread before;
- truncation is answered after `truncate_latency_ms`: `conversation.item.truncated`, or an
  `invalid_request_error` when the item is unknown or the cut lies beyond its generated audio.

Server VAD (`provider_managed`) runs an energy VAD on the appended audio: speech start,
end-of-speech after trailing silence, commit, and an automatic response. Without turn detection
(`explicit_commit`) audio is staged until `input_audio_buffer.commit`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import heapq
import itertools
import json
import logging
import random
from dataclasses import dataclass
from typing import Callable

from . import wire
from .agent import IdSource, ReplyItem, ReplyPlan, ScriptedAgent, heard_text
from .audio import chunk_plan, text_deltas
from .options import ServerOptions, parse_range_ms
from .vad import EnergyVad

log = logging.getLogger("meerkat_devserver.provider")

MIN_COMMIT_MS = 100  # OpenAI refuses to commit less audio than this
NO_ACTIVE_RESPONSE = "Cancellation failed: no active response found"
Action = Callable[[], None]


class Timeline:
    """Actions scheduled at loop times, run in due order (ties in scheduling order), each
    tagged so a cancelled response's unsent events can be discarded."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str | None, Action]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    @staticmethod
    def now() -> float:
        return asyncio.get_running_loop().time()

    def at(self, due: float, action: Action, tag: str | None = None) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), tag, action))
        self._wake.set()

    def discard(self, tag: str, after: float) -> int:
        """Drop the actions of `tag` due strictly after `after`; returns how many."""
        kept = [entry for entry in self._heap if not (entry[2] == tag and entry[0] > after)]
        dropped = len(self._heap) - len(kept)
        heapq.heapify(kept)
        self._heap = kept
        return dropped

    def pending(self, tag: str) -> bool:
        return any(entry[2] == tag for entry in self._heap)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def stop(self) -> None:
        self._heap.clear()
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            if not self._heap:
                self._wake.clear()
                await self._wake.wait()
                continue
            due = self._heap[0][0]
            delay = due - self.now()
            if delay > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                continue
            _, _, _, action = heapq.heappop(self._heap)
            try:
                action()
            except Exception:
                log.exception("provider action failed")
            # One event per loop turn: the consumer gets to run between events, as it would
            # between the frames of a real provider socket.
            await asyncio.sleep(0)


@dataclass
class Response:
    id: str
    plan: ReplyPlan
    modality: str  # "audio" or "text"
    item_id: str
    item: ReplyItem | None = None  # the assistant audio item (audio responses)
    call_id: str | None = None  # tool responses
    done_due: float = 0.0
    cancel_at: float | None = None
    finished: bool = False
    output_item: dict | None = None


class FakeProvider:
    def __init__(
        self,
        key: int | str,
        turning_mode: str,
        options: ServerOptions,
        agent: ScriptedAgent,
        ids: IdSource,
        registry: dict[str, ReplyItem],
        rng: random.Random,
        deliver: Callable[[dict], None],
    ):
        self.key = key
        self.server_vad = turning_mode == "provider_managed"
        self.options = options
        self.agent = agent
        self.ids = ids
        self.registry = registry
        self.rng = rng
        self.deliver = deliver
        self.timeline = Timeline()
        self.vad = EnergyVad(
            threshold_dbfs=options.vad_threshold_dbfs,
            onset_ms=options.vad_onset_ms,
            silence_ms=options.vad_silence_ms,
        )
        self.bands = options.chunk_bands()
        self.cancel_latency = parse_range_ms(options.cancel_latency_ms)
        self.truncate_latency = parse_range_ms(options.truncate_latency_ms)
        self.conversation: list[str] = []  # item ids in order (previous_item_id)
        self.assistant: dict[str, ReplyItem] = {}  # audio items this session can truncate
        self.active: Response | None = None
        self._deferred: str | None = None  # the modality of a response.create waiting
        self._continuation = False  # a function output was added: the next response continues
        self._last_user_text: str | None = None
        self._staged_bytes = 0  # explicit_commit: audio appended since the last commit
        self._speech_item: str | None = None  # the user item server VAD is capturing
        self._responses = 0
        self.closed = False

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self.timeline.start()

    def close(self) -> None:
        """The session ends: nothing more is emitted; streaming items are abandoned."""
        self.closed = True
        self.timeline.stop()
        if self.active is not None and self.active.item is not None:
            if self.active.item.state == "streaming":
                self.active.item.state = "abandoned"
        self.active = None

    # -- emitting ---------------------------------------------------------------------------

    def _emit(self, event: dict) -> None:
        if self.closed:
            return
        event["event_id"] = self.ids.event()
        self.deliver(event)

    def _soon(self, event: dict, delay: float = 0.0, tag: str | None = None) -> None:
        self.timeline.at(self.timeline.now() + delay, lambda: self._emit(event), tag)

    def _error(self, message: str, code: str | None = "invalid_value", event_id: str | None = None,
               delay: float = 0.0) -> None:
        self._soon(
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "code": code,
                    "message": message,
                    "param": None,
                    "event_id": event_id,
                },
            },
            delay,
        )

    def _draw(self, span: tuple[int, int]) -> float:
        return self.rng.randint(*span) / 1000

    def _previous(self) -> str | None:
        return self.conversation[-1] if self.conversation else None

    def _add_item(self, item: dict) -> None:
        """conversation.item.added then .done for an item the provider now holds."""
        previous = self._previous()
        self.conversation.append(item["id"])
        self._soon({"type": "conversation.item.added", "previous_item_id": previous, "item": item})
        self._soon({"type": "conversation.item.done", "previous_item_id": previous, "item": item})

    # -- input ------------------------------------------------------------------------------

    def append_audio(self, audio: bytes | str) -> bytes | None:
        """input_audio_buffer.append; `audio` is PCM16 or its base64 (as Meerkat forwards it).
        Undecodable base64 is refused on the event stream, as OpenAI does."""
        if isinstance(audio, str):
            try:
                pcm = base64.b64decode(audio, validate=True)
            except (binascii.Error, ValueError):
                self._error("Invalid 'audio'. Expected base64-encoded audio data.", "invalid_value")
                return None
        else:
            pcm = audio
        if not self.server_vad:
            self._staged_bytes += len(pcm)
            return pcm
        for event in self.vad.feed(pcm):
            if event.kind == "start":
                self._speech_item = self.ids.item()
                self._soon({"type": "input_audio_buffer.speech_started",
                            "audio_start_ms": event.sample * 1000 // wire.SAMPLE_RATE_HZ,
                            "item_id": self._speech_item})
                if self.active is not None and self.active.modality == "audio":
                    self.cancel()  # interrupt_response: the model stops talking over the user
            else:
                item_id = self._speech_item or self.ids.item()
                self._speech_item = None
                speech_ms = (event.sample - self.vad.speech_start) * 1000 // wire.SAMPLE_RATE_HZ
                self._soon({"type": "input_audio_buffer.speech_stopped",
                            "audio_end_ms": event.sample * 1000 // wire.SAMPLE_RATE_HZ,
                            "item_id": item_id})
                self._commit_buffer(item_id, heard_text(speech_ms))
                self.create_response()  # create_response: true
        return pcm

    def commit_audio(self) -> None:
        """input_audio_buffer.commit (no turn detection)."""
        staged_ms = self._staged_bytes / wire.BYTES_PER_MS
        if staged_ms < MIN_COMMIT_MS:
            self._error(
                "Error committing input audio buffer: buffer too small. Expected at least 100ms "
                f"of audio, but buffer only has {staged_ms:.2f}ms of audio.",
                "input_audio_buffer_commit_empty",
            )
            return
        self._staged_bytes = 0
        self._commit_buffer(self.ids.item(), heard_text(int(staged_ms)))

    def _commit_buffer(self, item_id: str, transcript: str) -> None:
        previous = self._previous()
        self._soon({"type": "input_audio_buffer.committed", "previous_item_id": previous,
                    "item_id": item_id})
        self._add_item({"id": item_id, "type": "message", "role": "user", "status": "completed",
                        "content": [{"type": "input_audio", "transcript": None}]})
        self._last_user_text = transcript
        # Asynchronous transcription: deltas, then the completed transcript.
        span = self.options.transcription_latency_ms / 1000
        pieces = text_deltas(transcript)
        for i, piece in enumerate(pieces):
            self._soon({"type": "conversation.item.input_audio_transcription.delta",
                        "item_id": item_id, "content_index": 0, "delta": piece},
                       span * (i + 1) / (len(pieces) + 1))
        self._soon({"type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item_id, "content_index": 0, "transcript": transcript}, span)

    def create_text_item(self, item_id: str, text: str) -> None:
        """conversation.item.create of a user text message."""
        self._add_item({"id": item_id, "type": "message", "role": "user", "status": "completed",
                        "content": [{"type": "input_text", "text": text}]})
        self._last_user_text = text

    def submit_function_output(self, call_id: str, output: str) -> None:
        """conversation.item.create of a function_call_output: the next response continues."""
        self._add_item({"id": self.ids.item(), "type": "function_call_output", "call_id": call_id,
                        "output": output})
        self._continuation = True

    # -- responses --------------------------------------------------------------------------

    def create_response(self, modality: str = "audio") -> None:
        """response.create; waits for an active response to finish first."""
        if self.active is not None:
            self._deferred = modality
            return
        self._start_response(modality)

    def _start_response(self, modality: str) -> None:
        continuation, self._continuation = self._continuation, False
        plan = self.agent.plan(self._last_user_text, continuation)
        if modality == "text" and plan.kind == "audio":
            plan = ReplyPlan("text", text=plan.text)
        self._responses += 1
        resp = Response(self.ids.response(), plan, modality, self.ids.item())
        self.active = resp
        now = self.timeline.now()
        tag = resp.id
        self.timeline.at(now, lambda: self._emit({"type": "response.created", "response": {
            "object": "realtime.response", "id": resp.id, "status": "in_progress", "output": []}}), tag)
        out = now + self.options.reply_latency_ms / 1000
        if plan.kind == "tool":
            end = self._schedule_tool(resp, out)
        elif plan.kind == "text":
            end = self._schedule_text(resp, out)
        else:
            end = self._schedule_audio(resp, out)
        resp.done_due = end
        self.timeline.at(end, lambda: self._finish(resp, "completed"), tag)

    def _open_output_item(self, resp: Response, item: dict, at: float, audio: ReplyItem | None = None) -> None:
        """The response's output item appears (the audio item becomes truncatable from here)."""

        def added() -> None:
            resp.output_item = item
            if audio is not None:
                self.registry[audio.item_id] = audio
                self.assistant[audio.item_id] = audio
            previous = self._previous()
            self.conversation.append(item["id"])
            self._emit({"type": "response.output_item.added", "response_id": resp.id,
                        "output_index": 0, "item": dict(item)})
            self._emit({"type": "conversation.item.added", "previous_item_id": previous,
                        "item": dict(item)})

        self.timeline.at(at, added, resp.id)

    def _schedule_audio(self, resp: Response, out: float) -> float:
        opts = self.options
        pcm, text = resp.plan.pcm, resp.plan.text
        item = ReplyItem(resp.item_id, resp.id, self.key, text, len(pcm))
        resp.item = item
        self._open_output_item(resp, {"id": item.item_id, "object": "realtime.item", "type": "message",
                                      "role": "assistant", "status": "in_progress", "content": []}, out, item)
        plan = chunk_plan(len(pcm), self.bands, opts.seed * 7919 + self._responses)
        deltas = text_deltas(text)
        total_ms = max(1, item.total_ms)
        next_delta = 0
        generated_ms = 0
        due = out
        for offset, length in plan:
            if opts.reply_speed > 0:
                due = out + max(0.0, (generated_ms - opts.reply_head_start_ms) / opts.reply_speed / 1000)
            end_ms = (offset + length) // wire.BYTES_PER_MS
            while next_delta < len(deltas) and next_delta * total_ms <= end_ms * len(deltas):
                self.timeline.at(due, self._transcript_delta(resp, deltas[next_delta]), resp.id)
                next_delta += 1
            self.timeline.at(due, self._audio_delta(resp, pcm[offset : offset + length]), resp.id)
            generated_ms += length // wire.BYTES_PER_MS
        while next_delta < len(deltas):
            self.timeline.at(due, self._transcript_delta(resp, deltas[next_delta]), resp.id)
            next_delta += 1
        ids = {"response_id": resp.id, "item_id": item.item_id, "output_index": 0, "content_index": 0}

        def finish_audio() -> None:
            self._emit({"type": "response.output_audio.done", **ids})
            self._emit({"type": "response.output_audio_transcript.done", **ids, "transcript": text})

        self.timeline.at(due, finish_audio, resp.id)
        return due

    def _transcript_delta(self, resp: Response, delta: str) -> Action:
        def act() -> None:
            assert resp.item is not None
            resp.item.text_sent += delta
            self._emit({"type": "response.output_audio_transcript.delta", "response_id": resp.id,
                        "item_id": resp.item_id, "output_index": 0, "content_index": 0, "delta": delta})
        return act

    def _audio_delta(self, resp: Response, pcm: bytes) -> Action:
        def act() -> None:
            item = resp.item
            assert item is not None
            item.sent_bytes += len(pcm)
            item.chunks += 1
            item.chunk_ms.append(len(pcm) // wire.BYTES_PER_MS)
            self._emit({"type": "response.output_audio.delta", "response_id": resp.id,
                        "item_id": resp.item_id, "output_index": 0, "content_index": 0,
                        "delta": base64.b64encode(pcm).decode("ascii")})
        return act

    def _schedule_text(self, resp: Response, out: float) -> float:
        self._open_output_item(resp, {"id": resp.item_id, "object": "realtime.item", "type": "message",
                                      "role": "assistant", "status": "in_progress", "content": []}, out)
        ids = {"response_id": resp.id, "item_id": resp.item_id, "output_index": 0, "content_index": 0}
        for delta in text_deltas(resp.plan.text):
            self._soon_at(out, {"type": "response.output_text.delta", **ids, "delta": delta}, resp.id)
        self._soon_at(out, {"type": "response.output_text.done", **ids, "text": resp.plan.text}, resp.id)
        return out

    def _schedule_tool(self, resp: Response, out: float) -> float:
        call_id = self.ids.call()
        resp.call_id = call_id
        plan = resp.plan
        item = {"id": resp.item_id, "object": "realtime.item", "type": "function_call",
                "status": "in_progress", "call_id": call_id, "name": plan.tool_name, "arguments": ""}
        self._open_output_item(resp, item, out)
        self._soon_at(out, {"type": "response.function_call_arguments.delta", "response_id": resp.id,
                            "item_id": resp.item_id, "output_index": 0, "call_id": call_id,
                            "delta": plan.arguments}, resp.id)
        self._soon_at(out, {"type": "response.function_call_arguments.done", "response_id": resp.id,
                            "item_id": resp.item_id, "output_index": 0, "call_id": call_id,
                            "name": plan.tool_name, "arguments": plan.arguments}, resp.id)
        return out

    def _soon_at(self, due: float, event: dict, tag: str) -> None:
        self.timeline.at(due, lambda: self._emit(event), tag)

    def _finish(self, resp: Response, status: str) -> None:
        """The response ends: its output item is done, then response.done."""
        if resp.finished or self.closed:
            return
        resp.finished = True
        item = resp.item
        if item is not None and item.item_id in self.assistant and item.state == "streaming":
            item.state = "completed" if status == "completed" else "interrupted"
        output = []
        if resp.output_item is not None:
            done_item = dict(resp.output_item, status="completed" if status == "completed" else "incomplete")
            if done_item["type"] == "function_call":
                done_item["arguments"] = resp.plan.arguments
            output.append(done_item)
            previous = None
            if resp.item_id in self.conversation:
                index = self.conversation.index(resp.item_id)
                previous = self.conversation[index - 1] if index > 0 else None
            self._emit({"type": "response.output_item.done", "response_id": resp.id, "output_index": 0,
                        "item": done_item})
            self._emit({"type": "conversation.item.done", "previous_item_id": previous, "item": done_item})
        self._emit({"type": "response.done", "response": {
            "object": "realtime.response", "id": resp.id, "status": status,
            "status_details": {"type": status, "reason": "client_cancelled"} if status == "cancelled" else None,
            "output": output, "usage": self._usage(resp)}})
        if self.active is resp:
            self.active = None
        if self._deferred is not None and not self.closed:
            modality, self._deferred = self._deferred, None
            self._start_response(modality)

    def _usage(self, resp: Response) -> dict:
        """Plausible token counts: audio output at about 20 tokens per second."""
        audio_ms = resp.item.sent_ms if resp.item is not None else 0
        text_tokens = len((resp.item.text_sent if resp.item is not None else resp.plan.text).split())
        output_tokens = audio_ms // 50 + text_tokens + (12 if resp.plan.kind == "tool" else 0)
        input_tokens = 380 + 40 * self._responses
        cached = 256 if self._responses > 1 else 0
        return {
            "total_tokens": input_tokens + output_tokens,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "input_token_details": {"text_tokens": input_tokens - 64, "audio_tokens": 64, "cached_tokens": cached},
            "output_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_ms // 50},
        }

    def cancel(self, event_id: str | None = None, response_id: str | None = None) -> None:
        """response.cancel. Takes effect after the cancel latency; the response streams on
        until then. With nothing (left) to cancel, OpenAI answers an error tagged with the
        cancel's event id (only a client cancel carries one)."""
        resp = self.active
        latency = self._draw(self.cancel_latency)
        now = self.timeline.now()
        effective = now + latency
        if (
            resp is None
            or resp.finished
            or resp.cancel_at is not None
            or (response_id is not None and response_id != resp.id)
            or resp.done_due <= effective  # it finishes before the cancel reaches it
        ):
            if event_id is not None:
                self._error(NO_ACTIVE_RESPONSE, "response_cancel_not_active", event_id, latency)
            return
        resp.cancel_at = effective
        dropped = self.timeline.discard(resp.id, effective)
        self.timeline.at(effective, lambda: self._finish(resp, "cancelled"), resp.id)
        log.debug("provider %s: cancel %s in %.0f ms (%d events dropped)", self.key, resp.id,
                  latency * 1000, dropped)

    def truncate(self, item_id: str, content_index: int, audio_end_ms: int) -> None:
        """conversation.item.truncate, answered after the truncate latency."""
        delay = self._draw(self.truncate_latency)

        def act() -> None:
            item = self.assistant.get(item_id)
            available = 0
            if item is not None and content_index == 0:
                available = item.sent_ms
                if item.truncated_ms is not None:
                    available = min(available, item.truncated_ms)
            if item is None or content_index != 0 or audio_end_ms > available:
                # The real message for an unknown item is not known; the overshoot text with
                # 0 ms stands in for it (README: differences).
                self._emit({"type": "error", "error": {
                    "type": "invalid_request_error", "code": "invalid_value",
                    "message": f"Audio content of {available}ms is already shorter than {audio_end_ms}ms",
                    "param": None, "event_id": None}})
                return
            item.truncated_ms = audio_end_ms
            self._emit({"type": "conversation.item.truncated", "item_id": item_id,
                        "content_index": content_index, "audio_end_ms": audio_end_ms})

        self.timeline.at(self.timeline.now() + delay, act)


def parse_arguments(arguments: str) -> object:
    """Function-call arguments as Meerkat parses them: JSON, else the raw string."""
    try:
        return json.loads(arguments)
    except (json.JSONDecodeError, TypeError):
        return arguments
