"""Single-use open tokens with a TTL, redeemed in the exact check order of the real host.

Reference section 1.6: (2) unknown token -> invalid_open_token; (3) expired -> token removed,
open_token_expired; (4) role differs -> role_mismatch, token kept; (5) mode differs ->
turning_mode_mismatch, kept; (6) mode not in the grant's capabilities -> unsupported_turning_mode,
kept; (7) realm differs -> unauthorized_realm, removed; (8) consumed. Check (1), the protocol
version, happens earlier at parse time (invalid_frame). Expired tokens are never swept; they are
removed only when presented.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from . import wire


class OpenError(Exception):
    """A refused channel.open: `code` is the wire error code."""

    def __init__(self, code: str, message: str | None = None):
        super().__init__(message or wire.OPEN_ERROR_MESSAGES.get(code, code))
        self.code = code
        self.message = str(self)


@dataclass
class Grant:
    token: str
    role: str
    turning_mode: str
    target: dict
    capabilities: dict
    reconnect_policy: dict
    realm: str
    expires_mono: float
    expires_at: str  # RFC 3339, as sent to the client
    channel_config: dict | None = None
    minted_mono: float = field(default_factory=time.monotonic)


def token_prefix(token: str) -> str:
    """What logs may show of a token."""
    return token[:8] + "..."


class TokenStore:
    def __init__(
        self,
        ttl: float,
        mono: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        self.ttl = ttl
        self._mono = mono
        self._wall = wall
        self._pending: dict[str, Grant] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, token: str) -> bool:
        return token in self._pending

    def mint(
        self,
        role: str,
        turning_mode: str,
        target: dict,
        capabilities: dict,
        reconnect_policy: dict,
        realm: str,
        channel_config: dict | None = None,
    ) -> Grant:
        token = str(uuid.uuid4())
        grant = Grant(
            token=token,
            role=role,
            turning_mode=turning_mode,
            target=target,
            capabilities=capabilities,
            reconnect_policy=reconnect_policy,
            realm=realm,
            expires_mono=self._mono() + self.ttl,
            expires_at=wire.rfc3339(self._wall() + self.ttl),
            channel_config=channel_config,
        )
        self._pending[token] = grant
        return grant

    def redeem(self, token: str, role: str, turning_mode: str, realm: str) -> Grant:
        grant = self._pending.get(token)
        if grant is None:
            raise OpenError("invalid_open_token")
        if grant.expires_mono < self._mono():
            del self._pending[token]
            raise OpenError("open_token_expired")
        if role != grant.role:
            raise OpenError("role_mismatch")
        if turning_mode != grant.turning_mode:
            raise OpenError("turning_mode_mismatch")
        if turning_mode not in grant.capabilities.get("turning_modes", ()):
            raise OpenError("unsupported_turning_mode")
        if realm != grant.realm:
            del self._pending[token]
            raise OpenError("unauthorized_realm")
        del self._pending[token]
        return grant


@dataclass
class LiveToken:
    token: str
    channel_id: str
    expires_mono: float
    consumed: bool = False


class LiveTokenStore:
    """`/live/ws` tokens (meerkat-live.md 2.6): UUID v4, TTL from mint, single use, pinned to
    the channel they were minted for. A wrong-channel or expired presentation consumes the
    token; a rejection never closes the channel. Reasons are the strings sent to the client."""

    def __init__(self, ttl: float, mono: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self._mono = mono
        self._tokens: dict[str, LiveToken] = {}

    def mint(self, channel_id: str, fault: str | None = None) -> str:
        token = str(uuid.uuid4())
        entry = LiveToken(token, channel_id, self._mono() + self.ttl)
        if fault == "expire":
            entry.expires_mono = self._mono() - 1.0
        elif fault == "consume":
            entry.consumed = True
        self._tokens[token] = entry
        return token

    def outstanding(self, channel_id: str | None = None) -> list[LiveToken]:
        return [t for t in self._tokens.values()
                if not t.consumed and (channel_id is None or t.channel_id == channel_id)]

    def admit(self, token: str, channel_id: str, channel_open: Callable[[str], bool]) -> str | None:
        """None when admitted (the token is consumed), else the rejection reason."""
        entry = self._tokens.get(token)
        if entry is not None:
            if entry.consumed:
                return "token already consumed"
            if entry.channel_id != channel_id:
                entry.consumed = True
                return "token bound to a different channel"
            if self._mono() > entry.expires_mono:
                entry.consumed = True
                return "token expired"
            if not channel_open(channel_id):
                return "channel not bound"
            entry.consumed = True
            return None
        if not channel_open(channel_id):
            return "channel not bound"
        return "token not found"
