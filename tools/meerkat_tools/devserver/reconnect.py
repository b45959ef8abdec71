"""The reconnect cycle of a primary channel (reference section 6.2).

Start: `reconnecting` with attempt 1, `next_retry_at`, `deadline_at` and the reattach reason,
then `status_changed`, then `needs_reattach` (once per cycle). When `next_retry_at` passes the
provider session is reopened: success returns the status to `ready`; a failure schedules the
next attempt (a new status); after `max_attempts` failures, or when the deadline passes first,
the cycle is exhausted: `error` status, `channel.error{reconnect_exhausted}`,
`channel.closed{reconnect_exhausted}`, dropped socket. Backoff is full jitter: uniform in
[0, min(initial * 2^(n-1), max_backoff)] ms.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING

from . import wire

if TYPE_CHECKING:
    from .channel import Channel


def clamp_policy(policy: dict) -> dict:
    out = dict(policy)
    out["max_attempts"] = max(1, out["max_attempts"])
    out["max_backoff_ms"] = max(out["max_backoff_ms"], out["initial_backoff_ms"])
    return out


def backoff_ms(policy: dict, attempt: int, rng: random.Random) -> int:
    cap = min(policy["initial_backoff_ms"] * 2 ** (attempt - 1), policy["max_backoff_ms"])
    return rng.randint(0, cap)


async def run_cycle(channel: Channel, failures: int, rng: random.Random) -> None:
    """Drive one cycle; `failures` attempts fail before one succeeds."""
    policy = clamp_policy(channel.policy)
    await channel.provider_lost()
    start = time.time()
    deadline = start + policy["max_total_ms"] / 1000 if policy["max_total_ms"] else None
    deadline_at = wire.rfc3339(deadline) if deadline is not None else None
    attempt = 1
    while True:
        next_retry = time.time() + backoff_ms(policy, attempt, rng) / 1000
        status = wire.status(
            "reconnecting",
            attempt_count=attempt,
            next_retry_at=wire.rfc3339(next_retry),
            deadline_at=deadline_at,
            reason=wire.REASON_REATTACH,
        )
        await channel.emit_status(status, needs_reattach=attempt == 1)
        wake = next_retry if deadline is None else min(next_retry, deadline)
        await asyncio.sleep(max(0.0, wake - time.time()))
        if deadline is not None and next_retry > deadline:
            await channel.exhaust("realtime reconnect budget expired before the next retry")
            return
        if failures <= 0:
            await channel.provider_restored()
            return
        failures -= 1
        last_error = f"realtime open failed: devserver injected reconnect failure (attempt {attempt})"
        if attempt >= policy["max_attempts"]:
            await channel.exhaust(last_error)
            return
        attempt += 1
