"""firmware/package.json for `mpremote mip install` / `mip.install`, generated from the firmware
directory so a new module cannot be forgotten (host_tests/tools/test_package_json.py fails when
the file is out of date).

    python -m meerkat_tools.pkgjson            # rewrite firmware/package.json
    python -m meerkat_tools.pkgjson --check    # exit 1 if it is out of date

The package installs into the device's lib directory as lib/meerkat_rt/. It holds the library
only: main.py, config.json and the board file go to the device's root (meerkat-deploy copies them,
or see the README for the mpremote commands).

firmware/package-repl.json is the same package with micropython-lib's aiorepl as a dependency,
for the live REPL (meerkat_rt.start()): `mpremote mip install github:OWNER/REPO/firmware/package-repl.json`.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from . import paths

PACKAGE_JSON = paths.FIRMWARE / "package.json"
REPL_JSON = paths.FIRMWARE / "package-repl.json"  # the package + aiorepl (the live REPL)
REPL_DEPS = (("aiorepl", "latest"),)
# CPython-only modules that never go onto a board.
HOST_ONLY = frozenset({"_host.py"})


def device_modules() -> list[Path]:
    """The firmware package's source files a device needs (subpackages included: v2/, live/),
    sorted by path."""
    return sorted(p for p in paths.FIRMWARE_PACKAGE.rglob("*.py") if p.name not in HOST_ONLY and "__pycache__" not in p.parts)


def version() -> str:
    """meerkat_rt.__version__, read from the source (importing would be fine too, but the text
    is the truth for a checkout that other people are editing)."""
    text = (paths.FIRMWARE_PACKAGE / "__init__.py").read_text()
    match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.M)
    if not match:
        raise SystemExit("meerkat_rt/__init__.py has no __version__ = '...' line")
    return match.group(1)


def render(deps: tuple[tuple[str, str], ...] = ()) -> str:
    """The package.json text: one [dest, source] pair per line, so diffs stay readable; deps:
    micropython-lib packages mip installs with it (package-repl.json: aiorepl)."""
    pkg = paths.FIRMWARE_PACKAGE.name
    rel = [p.relative_to(paths.FIRMWARE_PACKAGE).as_posix() for p in device_modules()]
    rows = [f'    ["{pkg}/{r}", "{pkg}/{r}"]' for r in rel]
    dep_rows = ""
    if deps:
        dep_rows = '  "deps": [' + ", ".join(f'["{n}", "{v}"]' for n, v in deps) + "],\n"
    return '{\n  "urls": [\n' + ",\n".join(rows) + f'\n  ],\n{dep_rows}  "version": "{version()}"\n}}\n'


def render_repl() -> str:
    return render(REPL_DEPS)


def write(path: Path | None = None) -> bool:
    """Write package.json; returns True when its content changed."""
    path = path or PACKAGE_JSON
    text = render()
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meerkat_tools.pkgjson", description="Write firmware/package.json (for mip) from the firmware directory.")
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when out of date")
    args = parser.parse_args(argv)
    paths.require_checkout()
    if args.check:
        if not PACKAGE_JSON.exists() or PACKAGE_JSON.read_text() != render():
            print(f"{PACKAGE_JSON} is out of date: run python -m meerkat_tools.pkgjson", file=sys.stderr)
            return 1
        if not REPL_JSON.exists() or REPL_JSON.read_text() != render_repl():
            print(f"{REPL_JSON} is out of date: run python -m meerkat_tools.pkgjson", file=sys.stderr)
            return 1
        return 0
    changed = write(PACKAGE_JSON)
    if not REPL_JSON.exists() or REPL_JSON.read_text() != render_repl():
        REPL_JSON.write_text(render_repl())
        changed = True
    print(f"{PACKAGE_JSON}: {'written' if changed else 'up to date'} ({len(device_modules())} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
