"""Fixtures: a development server per test, in a background thread, on ephemeral ports."""

from __future__ import annotations

import contextlib

import pytest

from meerkat_tools.devserver import DevServer, Faults, ServerOptions

# Fast defaults for tests: no reply or transcription latency, unpaced reply audio. Tests that
# need a reply still streaming when they act use `paced=True`. The v2 suites run on a v2-only
# server; the live suites pass surface="live" (or use the `live` fixture).
FAST = dict(surface="v2", reply_latency_ms=0, reply_speed=0.0, transcription_latency_ms=0)
PACED = dict(surface="v2", reply_latency_ms=0, reply_speed=2.0, reply_head_start_ms=200, transcription_latency_ms=0)


@pytest.fixture
def make_server():
    """make_server(paced=False, faults=Faults(...), **ServerOptions fields) -> a running server."""
    stack = contextlib.ExitStack()

    def make(paced: bool = False, faults: Faults | None = None, **overrides):
        opts = dict(PACED if paced else FAST)
        opts.update(overrides)
        options = ServerOptions(faults=faults or Faults(), **opts)
        return stack.enter_context(DevServer.running(options))

    with stack:
        yield make


@pytest.fixture
def srv(make_server):
    return make_server()


@pytest.fixture
def live(make_server):
    """A live-surface server with fast replies."""
    return make_server(surface="live")
