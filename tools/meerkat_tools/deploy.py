"""`meerkat-deploy`: put the firmware, a board file and config.json onto a board with mpremote.

    meerkat-deploy                          # config.json here, its board, the first serial port
    meerkat-deploy --mpy --reset            # precompiled for ESP32/S2/S3 (xtensawin), then reset
    meerkat-deploy --mpy --arch rv32imc     # ESP32-C3/C6
    meerkat-deploy --dry-run                # print the commands, one per line; run nothing

What lands on the device (paths relative to its root, the working directory after a reset):

    lib/meerkat_rt/*.py (or *.mpy)   the package; files there that are not part of it are removed,
                                     so a stale .py cannot shadow a new .mpy (or a deleted module)
    boot.py, main.py                 from firmware/
    boards/<board>.json              the board named by --board or the config's "board"
    config.json                      the --config file, whatever its name on the host
    <tls.ca_file>                    the CA certificate the config names, if any (DER)
    lib/aiorepl.mpy                  with --aiorepl: micropython-lib's asyncio REPL (mip install),
                                     for meerkat_rt.start(): the device runs and the REPL stays usable

build_commands() is the pure part (tested through --dry-run); main() checks the inputs and runs the
commands. Errors are one line with what to do, and never quote the config (it holds the Wi-Fi key).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from . import mpy, paths, pkgjson

# mpy-cross -march for the chips MicroPython runs on here. Bytecode is portable; the viper
# module (_fast_viper) is native code and needs the chip's architecture.
ARCHES = {
    "xtensawin": "ESP32, ESP32-S2, ESP32-S3",
    "rv32imc": "ESP32-C3, ESP32-C6",
}
CHIP_ARCH = {
    "esp32": "xtensawin",
    "esp32s2": "xtensawin",
    "esp32s3": "xtensawin",
    "esp32c3": "rv32imc",
    "esp32c6": "rv32imc",
}
DEFAULT_ARCH = "xtensawin"
DEVICE_PACKAGE = "lib/" + paths.FIRMWARE_PACKAGE.name


class DeployError(Exception):
    """A problem the user fixes; str() is the one line main() prints."""


def _arch(value: str) -> str:
    value = value.lower().replace("-", "")
    arch = CHIP_ARCH.get(value, value)
    if arch not in ARCHES:
        known = ", ".join(f"{a} ({c})" for a, c in ARCHES.items())
        raise argparse.ArgumentTypeError(f"unknown architecture {value!r}; use {known} or a chip name")
    return arch


def known_boards() -> list[str]:
    return sorted(p.stem for p in paths.BOARDS.glob("*.json"))


def default_build_dir(arch: str) -> Path:
    """Where --mpy puts the compiled package (the checkout's build/, which git ignores)."""
    return paths.REPO / "build" / f"mpy-{arch}"


def _device_path(path: str) -> str:
    """A device path relative to the root (the cwd after a reset), without ./ or a leading /."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    return "/".join(parts)


def prepare_script(dirs: list[str], keep: list[str], package_dirs: list[str] | None = None) -> str:
    """Python for `mpremote exec`: create the directories (parents first) when missing, and
    remove package files (.py/.mpy) that are not being deployed, in the package directory and
    its subpackages (package_dirs, relative to it; keep: paths relative to it). One line,
    double quotes only, so the shell-quoted command stays readable."""
    d = ",".join(f'"{x}"' for x in dirs)
    pd = ",".join(f'"{DEVICE_PACKAGE}/{x}"' if x else f'"{DEVICE_PACKAGE}"' for x in (package_dirs or [""]))
    return (
        "import os;"
        f'[os.mkdir(d) for d in ({d},) if d.rsplit("/",1)[-1] not in os.listdir(*d.rsplit("/",1)[:-1])];'
        f'[os.remove(p+"/"+f) for p in ({pd},) for f in os.listdir(p) '
        f'if f.rsplit(".",1)[-1] in ("py","mpy") and (p[{len(DEVICE_PACKAGE) + 1}:]+"/"+f).lstrip("/") not in "{" ".join(keep)}".split()]'
    )


def build_commands(
    *,
    mpremote: str,
    modules: list[Path],
    config: Path,
    board_file: Path,
    ca_file: Path | None = None,
    ca_dest: str | None = None,
    port: str = "auto",
    mpy_cross: str | None = None,
    arch: str = DEFAULT_ARCH,
    build_dir: Path | None = None,
    action: str | None = None,
    aiorepl: bool = False,
) -> list[list[str]]:
    """The commands that deploy, in order, as argv lists. Pure: reads and checks nothing.

    mpy_cross given: compile each module to build_dir/meerkat_rt/<name>.mpy first and copy those.
    action: None, "reset" (hard reset after copying) or "repl" (open the REPL).
    aiorepl: also `mip install aiorepl` (the board fetches it from micropython-lib: it needs a
    network, which mpremote's mip gives it through the host) for meerkat_rt.start()."""
    connect = [mpremote, "connect", port]
    commands: list[list[str]] = []
    rel = [m.relative_to(paths.FIRMWARE_PACKAGE) for m in modules]  # subpackages keep their place
    package = list(modules)
    if mpy_cross is not None:
        out = (build_dir or default_build_dir(arch)) / paths.FIRMWARE_PACKAGE.name
        rel = [r.with_suffix(".mpy") for r in rel]
        package = [out / r for r in rel]
        for parent in sorted({p.parent for p in package}):
            commands.append(["mkdir", "-p", str(parent)])
        for src, dst in zip(modules, package):
            commands.append([mpy_cross, f"-march={arch}", "-o", str(dst), str(src)])
    subdirs = sorted({r.parent.as_posix() for r in rel if r.parent != Path(".")})
    dirs = ["lib", DEVICE_PACKAGE, *[f"{DEVICE_PACKAGE}/{d}" for d in subdirs], "boards"]
    if ca_file is not None and ca_dest:
        parents = _device_path(ca_dest).split("/")[:-1]
        for i in range(1, len(parents) + 1):
            d = "/".join(parents[:i])
            if d not in dirs:
                dirs.append(d)
    commands.append(connect + ["exec", prepare_script(dirs, [r.as_posix() for r in rel], ["", *subdirs])])
    for sub in ["", *subdirs]:
        files = [str(p) for p, r in zip(package, rel) if r.parent.as_posix() == (sub or ".")]
        commands.append(connect + ["fs", "cp", *files, f":{DEVICE_PACKAGE}/{sub + '/' if sub else ''}"])

    files = [
        (paths.FIRMWARE / "boot.py", "boot.py"),
        (paths.FIRMWARE / "main.py", "main.py"),
        (board_file, f"boards/{board_file.name}"),
        (config, "config.json"),
    ]
    if ca_file is not None and ca_dest:
        files.append((ca_file, _device_path(ca_dest)))
    chain = list(connect)
    for i, (src, dst) in enumerate(files):
        chain += (["+"] if i else []) + ["fs", "cp", str(src), f":{dst}"]
    commands.append(chain)
    if aiorepl:
        commands.append(connect + ["mip", "install", "aiorepl"])

    if action == "reset":
        commands.append(connect + ["reset"])
    elif action == "repl":
        commands.append(connect + ["repl"])
    return commands


# -- checking the inputs --------------------------------------------------------------------


def _firmware_import():
    if str(paths.FIRMWARE) not in sys.path:
        sys.path.insert(0, str(paths.FIRMWARE))
    from meerkat_rt import log

    # The firmware's validators log (the board loader its RAM budget): warnings only, and to
    # stderr, so that stdout carries only what this tool prints (the --dry-run commands).
    log.sink = lambda line: print(line, file=sys.stderr)
    log.level = log.WARN


def load_config(path: Path) -> dict:
    """Read and validate a config file with the firmware's own validator. Error messages name
    fields, never values."""
    if not path.is_file():
        raise DeployError(
            f"config file {path} not found: copy firmware/config.example.json there and fill in "
            "Wi-Fi, server and session (or pass --config PATH)"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DeployError(f"config file {path} is not UTF-8 text") from None
    except json.JSONDecodeError as e:  # position only: the message must not quote the file
        raise DeployError(f"config file {path} is not valid JSON (line {e.lineno}, column {e.colno})") from None
    _firmware_import()
    from meerkat_rt import config as configs

    try:
        return configs.validate(raw)
    except configs.ConfigError as e:
        raise DeployError(f"{path}: {str(e).removeprefix('config.json: ')} (see firmware/config.example.json)") from None


def board_file(name: str) -> Path:
    """The board's JSON file, checked with the firmware's board validator."""
    known = known_boards()
    if name not in known:
        raise DeployError(f"unknown board {name!r}: known boards are {', '.join(known)} (files in {paths.BOARDS})")
    path = paths.BOARDS / f"{name}.json"
    _firmware_import()
    from meerkat_rt import board as boards

    try:
        boards.check(json.loads(path.read_text()), name)
    except (ValueError, boards.BoardError) as e:
        raise DeployError(f"{path}: {e}") from None
    return path


def ca_source(cfg: dict, config_path: Path, override: Path | None) -> tuple[Path | None, str | None]:
    """(host file, device path) of the CA certificate named by tls.ca_file, or (None, None)."""
    dest = cfg.get("tls", {}).get("ca_file") or None
    if override is not None and dest is None:
        raise DeployError('--ca given but the config has no tls.ca_file: set "tls": {"ca_file": "ca.der"}')
    if dest is None:
        return None, None
    if not _device_path(dest):
        raise DeployError("config tls.ca_file must name a file, e.g. ca.der")
    src = override if override is not None else config_path.parent / _device_path(dest)
    if not src.is_file():
        raise DeployError(
            f"CA file {src} not found (config tls.ca_file names it; the host copy is looked up next "
            "to the config file): put the server's CA certificate there in DER form, or pass --ca PATH"
        )
    if src.read_bytes()[:5] == b"-----":
        raise DeployError(f"CA file {src} is PEM; the device needs DER: openssl x509 -in {src} -outform der -out ca.der")
    return src, dest


def find_tool(name: str) -> str:
    try:
        return mpy.executable(name)
    except FileNotFoundError:
        raise DeployError(f"{name} not found: install it with 'pip install {name}' (pip install -e . in the checkout brings it)") from None


# -- the command line -----------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="meerkat-deploy",
        description="Copy the meerkat_rt firmware, main.py/boot.py, a board file and config.json onto a "
        "MicroPython board with mpremote.",
    )
    p.add_argument("--port", default="auto", help="serial port for mpremote connect (default auto: the first one found)")
    p.add_argument("--config", type=Path, default=Path("config.json"), help="config file to install as :config.json (default ./config.json)")
    p.add_argument("--board", help="board name, one of boards/*.json (default: the config's board)")
    p.add_argument("--ca", type=Path, help="host file of the CA certificate named by tls.ca_file (default: next to the config)")
    p.add_argument("--mpy", action="store_true", help="precompile the package with mpy-cross (MicroPython >= 1.23 on the board)")
    p.add_argument(
        "--arch",
        type=_arch,
        help="mpy-cross architecture for --mpy (implies --mpy): xtensawin for ESP32/S2/S3 (default), "
        "rv32imc for C3/C6; a chip name (esp32c3, ...) works too",
    )
    p.add_argument("--build-dir", type=Path, help="where --mpy writes the .mpy files (default build/mpy-ARCH in the checkout)")
    then = p.add_mutually_exclusive_group()
    then.add_argument("--reset", action="store_true", help="hard-reset the board afterwards (main.py starts the client)")
    then.add_argument("--repl", action="store_true", help="open the REPL afterwards (Ctrl-D soft-resets and starts main.py, Ctrl-] quits)")
    p.add_argument(
        "--aiorepl",
        action="store_true",
        help="also install micropython-lib's aiorepl (mpremote mip install aiorepl): meerkat_rt.start() then keeps a "
        "REPL beside the running device",
    )
    p.add_argument("--dry-run", action="store_true", help="print the commands (one per line, shell-quoted) and run nothing")
    p.add_argument("--write-package-json", action="store_true", help="regenerate firmware/package.json (for mip) and exit")
    return p


def plan(args: argparse.Namespace) -> list[list[str]]:
    """Check everything a deploy needs and return its commands."""
    cfg = load_config(args.config)
    board = board_file(args.board or cfg["board"])
    if args.board and args.board != cfg["board"]:
        raise DeployError(
            f'--board {args.board} but the config says board {cfg["board"]} (the device loads the '
            f'config\'s board): set "board": "{args.board}" in {args.config}, or drop --board'
        )
    ca, ca_dest = ca_source(cfg, args.config, args.ca)
    use_mpy = args.mpy or args.arch is not None
    mpremote = find_tool("mpremote")
    mpy_cross = find_tool("mpy-cross") if use_mpy else None
    return build_commands(
        mpremote=mpremote,
        modules=pkgjson.device_modules(),
        config=args.config.resolve(),
        board_file=board,
        ca_file=ca.resolve() if ca is not None else None,
        ca_dest=ca_dest,
        port=args.port,
        mpy_cross=mpy_cross,
        arch=args.arch or DEFAULT_ARCH,
        build_dir=args.build_dir.resolve() if args.build_dir else None,
        action="reset" if args.reset else "repl" if args.repl else None,
        aiorepl=args.aiorepl,
    )


def run(commands: list[list[str]]) -> None:
    for cmd in commands:
        if cmd[0] == "mkdir":  # done here, so it works where there is no mkdir program
            Path(cmd[-1]).mkdir(parents=True, exist_ok=True)
            continue
        if Path(cmd[0]).name.startswith("mpy-cross"):
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                raise DeployError(f"mpy-cross rejected {cmd[-1]}: {proc.stderr.strip()}")
            continue
        step = cmd[3] if cmd[3] in ("reset", "repl", "exec", "mip") else "copy"
        print(f"meerkat-deploy: {shlex.join(cmd[:3])} {step} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd)
        if proc.returncode and step == "mip":
            raise DeployError(
                f"mpremote mip install aiorepl failed (exit {proc.returncode}): mpremote fetches it from "
                "micropython-lib on the host, which needs the internet; the firmware is deployed, only the REPL is missing"
            )
        if proc.returncode and step != "repl":
            raise DeployError(
                f"mpremote failed (exit {proc.returncode}) at the {step} step: is the board connected and "
                f"the port free (mpremote connect list; close serial monitors)? try --port"
            )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        paths.require_checkout()
        if args.write_package_json:
            return pkgjson.main([])
        commands = plan(args)
        if args.dry_run:
            for cmd in commands:
                print(shlex.join(cmd))
            return 0
        run(commands)
    except DeployError as e:
        print(f"meerkat-deploy: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("meerkat-deploy: interrupted", file=sys.stderr)
        return 130
    if not (args.reset or args.repl):
        print("meerkat-deploy: done; reset the board (or run with --reset) to start the client", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
