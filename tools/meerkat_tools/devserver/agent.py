"""The scripted voice agent behind a primary channel (the stand-in for the OpenAI session).

Turns: in `provider_managed` an energy VAD on the received PCM gives `turn_started` at speech
onset and commits after trailing silence; text input is a whole turn at once; in
`explicit_commit` input is staged until `channel.commit_turn`. A committed turn gets
deterministic input transcripts ("heard 1.8 s of audio") and a reply: `output_text_delta`
pieces spread over `output_audio_chunk` events streamed faster than real time, then
`turn_completed`.

Preemption (reference 5.3): the response is Preemptible once output has started; then any input
cancels it (`interrupted`, no `turn_completed`) before the input is processed as the start of
the next turn. Input that arrives before output starts is staged for the next turn.

Truncation (reference 9.2): a known item and `audio_played_ms` <= the audio already generated
for it gives `assistant_transcript_truncated`; anything else is the fatal `invalid_request`
OpenAI would send, which the channel turns into error + closed + dropped socket.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from . import wire
from .audio import ReplyAudio, chunk_plan, text_deltas
from .options import ServerOptions
from .vad import EnergyVad
from .ws import ConnectionLost

log = logging.getLogger("meerkat_devserver.agent")

IDLE, RESPONDING, PREEMPTIBLE = "idle", "responding", "preemptible"
MIN_COMMIT_MS = 100


class AgentError(Exception):
    """A recoverable error: `channel.error` and the channel carries on."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class AgentFatal(AgentError):
    """A provider event-stream error: the channel ends (error, closed{code}, dropped socket)."""


@dataclass
class ReplyItem:
    """One assistant audio item, as the server generated it."""

    item_id: str
    response_id: str
    channel: int
    text: str
    total_bytes: int
    sent_bytes: int = 0  # audio generated (counted before each chunk is written)
    text_sent: str = ""
    state: str = "streaming"  # streaming, completed, interrupted, abandoned
    truncated_ms: int | None = None
    chunks: int = 0
    chunk_ms: list[int] = field(default_factory=list)

    @property
    def total_ms(self) -> int:
        return self.total_bytes // wire.BYTES_PER_MS

    @property
    def sent_ms(self) -> int:
        return self.sent_bytes // wire.BYTES_PER_MS

    def snapshot(self) -> dict:
        return {
            "item_id": self.item_id,
            "response_id": self.response_id,
            "channel": self.channel,
            "text": self.text,
            "text_sent": self.text_sent,
            "total_ms": self.total_ms,
            "sent_ms": self.sent_ms,
            "sent_bytes": self.sent_bytes,
            "chunks": self.chunks,
            "chunk_ms": list(self.chunk_ms),
            "state": self.state,
            "truncated_ms": self.truncated_ms,
        }


class IdSource:
    """item_<n> / resp_<n>, unique for the server's lifetime."""

    def __init__(self) -> None:
        self._n = itertools.count(1)

    def next(self) -> tuple[int, str, str]:
        n = next(self._n)
        return n, f"item_{n}", f"resp_{n}"


def overshoot(generated_ms: int, requested_ms: int) -> AgentFatal:
    return AgentFatal(
        "invalid_request",
        f"{wire.EVENT_PUMP_PREFIX}Audio content of {generated_ms}ms is already shorter than "
        f"{requested_ms}ms",
    )


class VoiceAgent:
    def __init__(
        self,
        channel: int,
        mode: str,
        options: ServerOptions,
        reply: ReplyAudio,
        ids: IdSource,
        registry: dict[str, ReplyItem],
        emit: Callable[[dict], Awaitable[None]],
    ):
        self.channel = channel
        self.mode = mode
        self.options = options
        self.reply = reply
        self.ids = ids
        self.registry = registry
        self.emit = emit
        self.phase = IDLE
        self.pending_input = False  # input submitted and no turn completed since
        self.vad = EnergyVad(
            threshold_dbfs=options.vad_threshold_dbfs,
            onset_ms=options.vad_onset_ms,
            silence_ms=options.vad_silence_ms,
        )
        self._known: dict[str, ReplyItem] = {}  # items this provider session can truncate
        self._staged_bytes = 0  # explicit_commit: audio staged since the last commit
        self._staged_text: list[str] = []
        self._task: asyncio.Task | None = None
        self._item: ReplyItem | None = None

    # -- input ----------------------------------------------------------------------------

    async def preempt_if_needed(self) -> None:
        """Any input while output is under way cancels the response first (section 5.3)."""
        if self.phase == PREEMPTIBLE:
            await self._cancel_reply(announce=True)

    async def input_audio(self, pcm: bytes) -> None:
        self.pending_input = True
        if self.mode == "explicit_commit":
            self._staged_bytes += len(pcm)
            return
        for event in self.vad.feed(pcm):
            if event.kind == "start":
                # Speech over a response that has not started output yet cancels it, as
                # OpenAI's server VAD does (interrupt_response); reference 7.4.
                await self._cancel_reply(announce=True)
                await self.emit({"type": "turn_started"})
            else:
                speech_ms = (event.sample - self.vad.speech_start) * 1000 // wire.SAMPLE_RATE_HZ
                await self._commit(heard_text(speech_ms))

    async def input_text(self, text: str) -> None:
        self.pending_input = True
        if self.mode == "explicit_commit":
            self._staged_text.append(text)
            return
        await self._cancel_reply(announce=True)
        await self.emit({"type": "turn_started"})
        await self.emit({"type": "input_transcript_partial", "text": text})
        await self.emit({"type": "input_transcript_final", "text": text})
        await self.emit({"type": "turn_committed"})
        self._start_reply(None)

    async def commit(self) -> None:
        """channel.commit_turn in explicit_commit mode (the channel checked the mode)."""
        staged_ms = self._staged_bytes / wire.BYTES_PER_MS
        if not self._staged_bytes and not self._staged_text:
            raise AgentError("invalid_request", wire.MSG_NO_STAGED_INPUT)
        if self._staged_bytes and staged_ms < MIN_COMMIT_MS:
            # OpenAI rejects the commit on its event stream, which ends the channel.
            raise AgentFatal(
                "invalid_request",
                f"{wire.EVENT_PUMP_PREFIX}Error committing input audio buffer: buffer too small. "
                f"Expected at least 100ms of audio, but buffer only has {staged_ms:.2f}ms of audio.",
            )
        parts = list(self._staged_text)
        if self._staged_bytes:
            parts.append(heard_text(int(staged_ms)))
        self._staged_bytes = 0
        self._staged_text = []
        await self._commit(" ".join(parts))

    async def interrupt(self) -> None:
        """channel.interrupt: cancel an active response; a silent no-op when idle."""
        await self._cancel_reply(announce=True)

    async def truncate(self, item_id: str, content_index: int, audio_played_ms: int) -> None:
        item = self._known.get(item_id)
        if item is None or content_index != 0:
            raise overshoot(0, audio_played_ms)
        available = item.sent_ms
        if item.truncated_ms is not None:
            available = min(available, item.truncated_ms)
        if audio_played_ms > available:
            raise overshoot(available, audio_played_ms)
        item.truncated_ms = audio_played_ms
        cut = len(item.text) * audio_played_ms // max(1, item.total_ms)
        await self.emit(
            {
                "type": "assistant_transcript_truncated",
                "item_id": item_id,
                "audio_played_ms": audio_played_ms,
                "truncated_text": item.text[:cut],
            }
        )

    # -- provider session lifecycle -------------------------------------------------------

    async def reset(self) -> None:
        """The provider session was lost: the response dies silently, staged input and item
        ids of the old session are gone (a new OpenAI session knows none of them)."""
        await self._cancel_reply(announce=False, state="abandoned")
        self.vad.reset()
        self._staged_bytes = 0
        self._staged_text = []
        self._known.clear()
        self.pending_input = False

    async def close(self) -> None:
        await self._cancel_reply(announce=False, state="abandoned")

    # -- the response ---------------------------------------------------------------------

    async def _commit(self, transcript: str) -> None:
        await self._cancel_reply(announce=True)
        await self.emit({"type": "turn_committed"})
        self._start_reply(transcript)

    def _start_reply(self, transcript: str | None) -> None:
        self.phase = RESPONDING
        self._task = asyncio.create_task(self._respond(transcript))

    async def _cancel_reply(self, announce: bool, state: str = "interrupted") -> None:
        task, self._task = self._task, None
        if task is None or task.done():
            self.phase = IDLE
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        if self._item is not None and self._item.state == "streaming":
            self._item.state = state
        self._item = None
        self.phase = IDLE
        if announce:
            await self.emit({"type": "interrupted"})

    async def _respond(self, transcript: str | None) -> None:
        try:
            if transcript is not None:
                for piece in text_deltas(transcript):
                    await self.emit({"type": "input_transcript_partial", "text": piece})
                await self.emit({"type": "input_transcript_final", "text": transcript})
            if self.options.reply_latency_ms > 0:
                await asyncio.sleep(self.options.reply_latency_ms / 1000)
            await self._stream_reply()
            await self.emit({"type": "turn_completed"})
            self.pending_input = False
            self.phase = IDLE
            self._task = None
        except ConnectionLost:
            self.phase = IDLE
        except Exception:
            log.exception("reply failed")
            raise

    async def _stream_reply(self) -> None:
        n, item_id, response_id = self.ids.next()
        pcm, text = self.reply.pcm, self.reply.text
        item = ReplyItem(item_id, response_id, self.channel, text, len(pcm))
        self.registry[item_id] = item
        self._known[item_id] = item
        self._item = item
        opts = self.options
        plan = chunk_plan(len(pcm), opts.chunk_min_ms, opts.chunk_max_ms, opts.seed * 7919 + n)
        deltas = text_deltas(text)
        next_delta = 0
        total_ms = max(1, item.total_ms)
        started = time.monotonic()
        self.phase = PREEMPTIBLE  # output starts with the first frame below
        for offset, length in plan:
            if opts.reply_speed > 0:
                # Faster than real time but paced: send while the audio sent stays below
                # elapsed * speed + head start.
                due = (item.sent_ms - opts.reply_head_start_ms) / opts.reply_speed / 1000
                wait = due - (time.monotonic() - started)
                if wait > 0:
                    await asyncio.sleep(wait)
            end_ms = (offset + length) // wire.BYTES_PER_MS
            while next_delta < len(deltas) and next_delta * total_ms <= end_ms * len(deltas):
                await self._text_delta(item, deltas[next_delta])
                next_delta += 1
            item.sent_bytes += length
            item.chunks += 1
            item.chunk_ms.append(length // wire.BYTES_PER_MS)
            await self.emit(self._audio_event(item, pcm[offset : offset + length]))
        while next_delta < len(deltas):
            await self._text_delta(item, deltas[next_delta])
            next_delta += 1
        item.state = "completed"
        self._item = None

    async def _text_delta(self, item: ReplyItem, delta: str) -> None:
        item.text_sent += delta
        await self.emit({"type": "output_text_delta", "delta": delta})

    def _audio_event(self, item: ReplyItem, pcm: bytes) -> dict:
        event: dict = {"type": "output_audio_chunk"}
        if self.options.item_ids:
            event["item_id"] = item.item_id
            event["response_id"] = item.response_id
            event["content_index"] = 0
        chunk = wire.audio_format()
        chunk["data"] = base64.b64encode(pcm).decode("ascii")
        event["chunk"] = chunk
        return event


def heard_text(ms: int) -> str:
    return f"heard {ms / 1000:.1f} s of audio"
