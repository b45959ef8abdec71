"""The scripted agent: what the fake model says, and the records of what it generated.

The agent decides the content of each reply (the reply audio and its transcript, or a tool call
first), what the model "heard" (a deterministic transcript of the user's turn), and mints the
provider's ids. It knows nothing about either wire surface: `provider.py` turns its decisions
into OpenAI-like events, and the surface adapters project those.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field

from . import wire
from .audio import ReplyAudio
from .options import ServerOptions

_ALNUM = string.ascii_letters + string.digits


@dataclass
class ReplyItem:
    """One assistant audio item, as the fake model generated it."""

    item_id: str
    response_id: str
    channel: int | str  # v2: connection number; live: channel_id
    text: str
    total_bytes: int
    sent_bytes: int = 0  # audio generated so far (what OpenAI would truncate against)
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
    """Provider ids for the server's lifetime. "openai" style looks like OpenAI's
    (`item_` + 21 letters and digits, drawn from a seeded generator), so clients meet ids of
    the real length; "short" style (`item_1`, `resp_1`, ...) reads better in a debugger."""

    def __init__(self, style: str = "openai", seed: int = 1):
        self.style = style
        self._rng = random.Random(seed * 104729 + 17)
        self._counts: dict[str, int] = {}

    def _next(self, prefix: str, length: int) -> str:
        n = self._counts.get(prefix, 0) + 1
        self._counts[prefix] = n
        if self.style == "short":
            return f"{prefix}_{n}"
        return prefix + "_" + "".join(self._rng.choice(_ALNUM) for _ in range(length))

    def item(self) -> str:
        return self._next("item", 21)

    def response(self) -> str:
        return self._next("resp", 21)

    def call(self) -> str:
        return self._next("call", 16)

    def event(self) -> str:
        return self._next("event", 21)

    def synthetic_text_item(self) -> str:
        """Meerkat's own id for a typed user item (`mk_text_` + 24 hex-ish characters)."""
        n = self._counts.get("mk_text", 0) + 1
        self._counts["mk_text"] = n
        if self.style == "short":
            return f"mk_text_{n}"
        return "mk_text_" + "".join(self._rng.choice("0123456789abcdef") for _ in range(24))


@dataclass(frozen=True)
class ReplyPlan:
    """What the next response is: spoken audio with its transcript, or a tool call."""

    kind: str  # "audio" or "tool"
    text: str = ""
    pcm: bytes = b""
    tool_name: str = ""
    arguments: str = "{}"


class ScriptedAgent:
    """The fake model's behaviour, shared by every channel of a server: reply N is the reply
    audio, unless the tool script says this reply calls the tool first."""

    def __init__(self, options: ServerOptions, reply: ReplyAudio):
        self.options = options
        self.reply = reply
        self.replies = 0  # user turns answered so far (server-wide)

    def plan(self, user_text: str | None, continuation: bool) -> ReplyPlan:
        """The response to a user turn (`continuation`: the response after a tool result)."""
        if not continuation:
            self.replies += 1
            if self._calls_tool(user_text):
                return ReplyPlan(
                    "tool", tool_name=self.options.tool_name, arguments=self.options.tool_arguments
                )
        return ReplyPlan("audio", text=self.reply.text, pcm=self.reply.pcm)

    def _calls_tool(self, user_text: str | None) -> bool:
        opts = self.options
        if opts.tool_call_every > 0 and self.replies % opts.tool_call_every == 0:
            return True
        trigger = opts.tool_trigger
        return bool(trigger) and user_text is not None and trigger.lower() in user_text.lower()


def heard_text(ms: int) -> str:
    """The transcript the fake model makes of an audio turn."""
    return f"heard {ms / 1000:.1f} s of audio"
