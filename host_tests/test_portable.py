"""The portable test modules (host_tests/portable/t_*.py) on both runtimes.

Each test_* function runs once under CPython (test_cpython) and once on the MicroPython unix port
at the module's heap size, 110K unless the module sets MP_HEAP (test_micropython). The unix-port
run executes a whole module in one interpreter through portable/mprun.py and reports per test."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from meerkat_tools import mpy

PORTABLE = Path(__file__).resolve().parent / "portable"
MODULES = sorted(p.stem for p in PORTABLE.glob("t_*.py"))


def _cases():
    cases = []
    for name in MODULES:
        module = importlib.import_module(name)
        for test in sorted(n for n in dir(module) if n.startswith("test_")):
            cases.append(pytest.param(name, test, id=f"{name}::{test}"))
    return cases


CASES = _cases()


@pytest.mark.parametrize("module,test", CASES)
def test_cpython(module, test):
    getattr(importlib.import_module(module), test)()


@pytest.fixture(scope="session")
def portable_build(tmp_path_factory) -> Path:
    """The portable test modules as .mpy (their case tables are large)."""
    return mpy.compile_modules(sorted(PORTABLE.glob("t_*.py")), tmp_path_factory.mktemp("portable-mpy"))


@pytest.fixture(scope="session")
def unix_port_results(mpy_build, portable_build):
    """module name -> {test name -> result dict}, each module run once, lazily."""
    cache: dict[str, dict[str, dict]] = {}

    def results(module: str) -> dict[str, dict]:
        if module not in cache:
            heap = getattr(importlib.import_module(module), "MP_HEAP", mpy.DEFAULT_HEAP)
            proc = mpy.run(
                PORTABLE / "mprun.py",
                [module],
                search_path=[portable_build, PORTABLE, mpy.paths.FAKES, mpy_build],
                heap=heap,
                timeout=300,
            )
            parsed = {}
            for line in proc.stdout.splitlines():
                if line.startswith("{"):
                    row = json.loads(line)
                    if "test" in row:
                        parsed[row["test"]] = row
            if not parsed:
                pytest.fail(
                    f"{module} produced no results on the unix port (exit {proc.returncode}):\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
                )
            cache[module] = parsed
        return cache[module]

    return results


@pytest.mark.parametrize("module,test", CASES)
def test_micropython(module, test, unix_port_results):
    row = unix_port_results(module).get(test)
    assert row is not None, f"{test} did not run on the unix port (crash or MemoryError before it?)"
    assert row["ok"], f"failed on MicroPython:\n{row.get('error')}"
