"""Fixtures of the transport tests: the peers (servers in a background thread of this process)
and `client`, which runs a client scenario (sc_*.py) on CPython in-process or on the MicroPython
unix port as a subprocess, and returns its result dict."""

from __future__ import annotations

import asyncio
import importlib
import itertools
import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from meerkat_tools import mpy  # noqa: E402
from wspeers import Peers  # noqa: E402

_ids = itertools.count()


@pytest.fixture(scope="session")
def peers(tmp_path_factory):
    p = Peers(tmp_path_factory.mktemp("certs"))
    yield p
    p.stop()


@pytest.fixture(scope="session")
def scenario_build(tmp_path_factory) -> Path:
    """The scenario modules as .mpy: compiling them from source would not fit in 110K."""
    return mpy.compile_modules(sorted(HERE.glob("sc_*.py")), tmp_path_factory.mktemp("transport-mpy"))


class Client:
    def __init__(self, runtime: str, mpy_build: Path | None, scenario_build: Path | None):
        self.runtime = runtime
        self._mpy = mpy_build
        self._scen = scenario_build
        self.last_output = ""

    def cid(self, name: str) -> str:
        """A connection id unique in the session, for the server's records."""
        return f"{self.runtime}-{name}-{next(_ids)}"

    def run(self, module: str, scenario: str, heap: str = mpy.DEFAULT_HEAP, timeout: float = 60, **args) -> dict:
        if self.runtime == "cpython":
            from meerkat_rt import log

            sink = log.sink
            try:
                result = asyncio.run(getattr(importlib.import_module(module), scenario)(args))
            finally:
                log.sink = sink
            return json.loads(json.dumps(result))  # the same JSON round trip as the unix port
        # Arguments go through a file: the unix port aborts on an argv entry of >= 256 chars.
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(args, f)
        try:
            proc = mpy.run(
                HERE / "wscli.py",
                [module, scenario, "@" + f.name],
                search_path=[self._scen, HERE, mpy.paths.FAKES, self._mpy],
                heap=heap,
                timeout=timeout,
            )
        finally:
            os.unlink(f.name)
        self.last_output = proc.stdout + proc.stderr
        for line in proc.stdout.splitlines():
            if line.startswith("RESULT "):
                result = json.loads(line[7:])
                assert "exception" not in result, f"{result['exception']}\n{self.last_output[-3000:]}"
                return result
        raise AssertionError(f"no result (exit {proc.returncode}):\n{self.last_output[-3000:]}")


@pytest.fixture(params=["cpython", "micropython"])
def client(request) -> Client:
    if request.param == "cpython":
        return Client("cpython", None, None)
    return Client("micropython", request.getfixturevalue("mpy_build"), request.getfixturevalue("scenario_build"))


@pytest.fixture
def mp_client(mpy_build, scenario_build) -> Client:
    return Client("micropython", mpy_build, scenario_build)
