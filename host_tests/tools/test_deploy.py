"""meerkat-deploy: the exact commands of --dry-run, the errors, and a real run of those commands
through mpremote against a MicroPython unix-port "board" (fakeboard.FakeBoard)."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from meerkat_tools import deploy, mpy, paths

from fakeboard import FakeBoard

EXAMPLE = paths.FIRMWARE / "config.example.json"
SECRET = "Wi-Fi-key-0xC0FFEE"
MODULES = [p for p in sorted(paths.FIRMWARE_PACKAGE.rglob("*.py")) if p.name != "_host.py" and "__pycache__" not in p.parts]
NAMES = [p.relative_to(paths.FIRMWARE_PACKAGE).as_posix() for p in MODULES]  # v2/backend.py ...
SUBDIRS = sorted({n.rsplit("/", 1)[0] for n in NAMES if "/" in n})  # the subpackages: live, v2
DIRS = ["lib", "lib/meerkat_rt", *[f"lib/meerkat_rt/{d}" for d in SUBDIRS], "boards"]


def package_copies(connect: list[str], files: list[Path], names: list[str]) -> list[list[str]]:
    """One `fs cp` per package directory: the top level, then each subpackage."""
    out = []
    for sub in ["", *SUBDIRS]:
        group = [str(f) for f, n in zip(files, names) if (n.rsplit("/", 1)[0] if "/" in n else "") == sub]
        out.append(connect + ["fs", "cp", *group, ":lib/meerkat_rt/" + (sub + "/" if sub else "")])
    return out


def write_config(tmp_path: Path, **changes) -> Path:
    cfg = json.loads(EXAMPLE.read_text())
    cfg["wifi"]["key"] = SECRET
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def dry_run(capsys, *argv: str) -> tuple[int, list[list[str]], str]:
    code = deploy.main(["--dry-run", *argv])
    out, err = capsys.readouterr()
    return code, [shlex.split(line) for line in out.splitlines()], err


def files_chain(mp: str, port: str, config: Path, board: str, extra: list[tuple[Path, str]] = ()) -> list[str]:
    cmd = [mp, "connect", port]
    files = [
        (paths.FIRMWARE / "boot.py", "boot.py"),
        (paths.FIRMWARE / "main.py", "main.py"),
        (paths.BOARDS / f"{board}.json", f"boards/{board}.json"),
        (config, "config.json"),
        *extra,
    ]
    for i, (src, dst) in enumerate(files):
        cmd += (["+"] if i else []) + ["fs", "cp", str(src), ":" + dst]
    return cmd


# -- --dry-run: the exact commands -----------------------------------------------------------


def test_dry_run_copies_package_app_board_and_config(tmp_path, capsys):
    config = write_config(tmp_path, board="esp32_devkit")
    code, cmds, err = dry_run(capsys, "--config", str(config), "--port", "/dev/ttyUSB0", "--reset")
    assert code == 0, err
    mp = mpy.executable("mpremote")
    connect = [mp, "connect", "/dev/ttyUSB0"]
    assert cmds == [
        connect + ["exec", deploy.prepare_script(DIRS, NAMES, ["", *SUBDIRS])],
        *package_copies(connect, MODULES, NAMES),
        files_chain(mp, "/dev/ttyUSB0", config, "esp32_devkit"),
        connect + ["reset"],
    ]
    assert "_host" not in " ".join(" ".join(c) for c in cmds)
    assert "meerkat_rt/_fast_viper.py" in " ".join(cmds[1])  # the viper module is shipped
    assert "meerkat_rt/v2/backend.py" in " ".join(cmds[2 + SUBDIRS.index("v2")])


def test_dry_run_mpy_compiles_for_the_chip(tmp_path, capsys):
    config = write_config(tmp_path)
    build = tmp_path / "build"
    code, cmds, err = dry_run(capsys, "--config", str(config), "--mpy", "--arch", "esp32c3", "--build-dir", str(build), "--repl")
    assert code == 0, err
    cross, mp = mpy.executable("mpy-cross"), mpy.executable("mpremote")
    out = build / "meerkat_rt"
    mpy_names = [n[:-3] + ".mpy" for n in NAMES]
    compiled = [out / n for n in mpy_names]
    connect = [mp, "connect", "auto"]
    assert cmds == [
        *[["mkdir", "-p", str(d)] for d in sorted({c.parent for c in compiled})],
        *[[cross, "-march=rv32imc", "-o", str(o), str(s)] for s, o in zip(MODULES, compiled)],
        connect + ["exec", deploy.prepare_script(DIRS, mpy_names, ["", *SUBDIRS])],
        *package_copies(connect, compiled, mpy_names),
        files_chain(mp, "auto", config, "esp32s3_devkitc"),
        connect + ["repl"],
    ]


def test_dry_run_default_arch_is_xtensawin(tmp_path, capsys):
    config = write_config(tmp_path)
    code, cmds, _ = dry_run(capsys, "--config", str(config), "--mpy")
    assert code == 0
    crosses = [c for c in cmds if Path(c[0]).name.startswith("mpy-cross")]
    assert len(crosses) == len(MODULES) and all(c[1] == "-march=xtensawin" for c in crosses)
    assert crosses[0][3].startswith(str(paths.REPO / "build" / "mpy-xtensawin"))


def test_dry_run_ships_the_ca_file_named_by_the_config(tmp_path, capsys):
    config = write_config(tmp_path, tls={"ca_file": "/certs/ca.der"})
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.der").write_bytes(b"\x30\x82\x01\x0a")
    code, cmds, err = dry_run(capsys, "--config", str(config))
    assert code == 0, err
    mp = mpy.executable("mpremote")
    assert cmds[0][4] == deploy.prepare_script([*DIRS, "certs"], NAMES, ["", *SUBDIRS])
    assert cmds[-1] == files_chain(mp, "auto", config, "esp32s3_devkitc", [(tmp_path / "certs" / "ca.der", "certs/ca.der")])
    assert len(cmds) == 2 + len(SUBDIRS) + 1  # prepare, the package copies, the files: neither --reset nor --repl


def test_dry_run_ca_from_elsewhere(tmp_path, capsys):
    config = write_config(tmp_path, tls={"ca_file": "ca.der"})
    ca = tmp_path / "pki" / "server-ca.der"
    ca.parent.mkdir()
    ca.write_bytes(b"\x30\x82")
    code, cmds, err = dry_run(capsys, "--config", str(config), "--ca", str(ca))
    assert code == 0, err
    assert cmds[-1][-4:] == ["fs", "cp", str(ca), ":ca.der"]


# -- errors: one line, what to do, non-zero, never the config's contents -----------------------


def error_of(capsys, *argv: str) -> str:
    code = deploy.main(["--dry-run", *argv])
    out, err = capsys.readouterr()
    assert code != 0 and out == ""
    assert SECRET not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("meerkat-deploy: error: "), err
    return lines[0]


def test_missing_config(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    msg = error_of(capsys)
    assert "config.json not found" in msg and "config.example.json" in msg


def test_invalid_config_names_the_field_not_the_value(tmp_path, capsys):
    config = write_config(tmp_path, log_level="loud")
    msg = error_of(capsys, "--config", str(config))
    assert "log_level" in msg and "loud" not in msg
    config = write_config(tmp_path, wifi={"ssid": "home", "key": SECRET, "pasword": SECRET})
    assert "unknown field config.wifi.pasword" in error_of(capsys, "--config", str(config))
    config = write_config(tmp_path, server={"rpc": "192.168.1.10"})
    assert "server.rpc must be host:port" in error_of(capsys, "--config", str(config))


def test_config_that_is_not_json(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text('{"wifi": {"ssid": "home", "key": "%s",}}' % SECRET)
    assert "not valid JSON (line 1" in error_of(capsys, "--config", str(config))


def test_unknown_board_lists_the_known_ones(tmp_path, capsys):
    config = write_config(tmp_path, board="esp32_nope")
    msg = error_of(capsys, "--config", str(config))
    assert "unknown board 'esp32_nope'" in msg
    for name in ("atom_echo", "esp32_devkit", "esp32s3_devkitc", "sim"):
        assert name in msg
    assert "unknown board 'nope'" in error_of(capsys, "--config", str(write_config(tmp_path)), "--board", "nope")


def test_board_option_must_match_the_config(tmp_path, capsys):
    msg = error_of(capsys, "--config", str(write_config(tmp_path)), "--board", "esp32_devkit")
    assert '"board": "esp32_devkit"' in msg


def test_missing_or_pem_ca_file(tmp_path, capsys):
    config = write_config(tmp_path, tls={"ca_file": "ca.der"})
    msg = error_of(capsys, "--config", str(config))
    assert f"CA file {tmp_path / 'ca.der'} not found" in msg and "--ca" in msg
    (tmp_path / "ca.der").write_text("-----BEGIN CERTIFICATE-----\n")
    assert "is PEM" in error_of(capsys, "--config", str(config))


def test_missing_tools(tmp_path, capsys, monkeypatch):
    config = write_config(tmp_path)
    real = mpy.executable

    def without(name):
        def executable(tool):
            if tool == name:
                raise FileNotFoundError(tool)
            return real(tool)

        return executable

    monkeypatch.setattr(mpy, "executable", without("mpremote"))
    assert "mpremote not found" in error_of(capsys, "--config", str(config))
    monkeypatch.setattr(mpy, "executable", without("mpy-cross"))
    assert deploy.main(["--dry-run", "--config", str(config)]) == 0  # not needed without --mpy
    capsys.readouterr()
    assert "mpy-cross not found" in error_of(capsys, "--config", str(config), "--mpy")


def test_unknown_arch_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        deploy.main(["--dry-run", "--arch", "armv7m"])
    assert exc.value.code == 2
    assert "xtensawin" in capsys.readouterr().err


# -- the commands work: mpremote against a MicroPython "board" ---------------------------------


def device_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def run_on_device(root: Path, code: str) -> str:
    proc = mpy.run("-c", [code], search_path=[root / "lib"], cwd=root, heap=None, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip()


# What main.py does first: the config and the board as the device finds them.
CHECK = (
    "import meerkat_rt.config as c, meerkat_rt.board as b, meerkat_rt.fast as f, meerkat_rt.log as log\n"
    "log.level = log.WARN\n"  # the board loader's info line (its RAM budget) is not the answer
    "cfg = c.load('config.json')\n"
    "print(b.load(cfg['board'])['name'], f.IMPLEMENTATION)"
)


def test_deploy_runs_on_a_board(tmp_path, capsys):
    root = tmp_path / "device"
    root.mkdir()
    config = write_config(tmp_path, tls={"ca_file": "ca.der"})
    (tmp_path / "ca.der").write_bytes(b"\x30\x82\x01\x0a")
    (root / "lib" / "meerkat_rt").mkdir(parents=True)
    (root / "lib" / "meerkat_rt" / "retired.py").write_text("raise ImportError\n")  # a removed module
    with FakeBoard(root) as board:
        # The runner, as a user runs it.
        assert deploy.main(["--config", str(config), "--port", board.port]) == 0, capsys.readouterr().err
        expected = {f"lib/meerkat_rt/{n}" for n in NAMES} | {
            "boot.py", "main.py", "config.json", "boards/esp32s3_devkitc.json", "ca.der"}
        assert device_files(root) == expected
        assert (root / "config.json").read_bytes() == config.read_bytes()
        assert (root / "lib/meerkat_rt/ws.py").read_bytes() == (paths.FIRMWARE_PACKAGE / "ws.py").read_bytes()
        assert run_on_device(root, CHECK) == "esp32s3_devkitc viper"

        # The --dry-run lines, run by a shell exactly as printed: .mpy replaces every .py.
        code, cmds, err = dry_run(capsys, "--config", str(config), "--port", board.port, "--mpy", "--build-dir", str(tmp_path / "b"))
        assert code == 0, err
        for cmd in cmds:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, f"{shlex.join(cmd)[:200]}:\n{proc.stdout}{proc.stderr}"
        assert device_files(root) == {p.replace(".py", ".mpy") if p.startswith("lib/") else p for p in expected}
        # Bytecode .mpy is portable; the viper module built for xtensawin is refused on x64 and
        # fast.py falls back to the pure-Python twins, as on a board without the emitter.
        assert run_on_device(root, CHECK) == "esp32s3_devkitc python"


def test_mip_install_then_the_files_by_hand(tmp_path):
    """The README's mip route: the package from package.json, then main.py, the board file and
    config.json copied by hand (on a board mip finds /lib itself; the unix port needs --target)."""
    root = tmp_path / "device"
    root.mkdir()
    mp = mpy.executable("mpremote")
    with FakeBoard(root) as board:
        for cmd in (
            ["mip", "install", "--target", "lib", str(paths.FIRMWARE / "package.json")],
            ["mkdir", ":boards"],
            ["cp", str(paths.BOARDS / "esp32_devkit.json"), ":boards/", "+", "cp", str(paths.FIRMWARE / "main.py"),
             ":main.py", "+", "cp", str(write_config(tmp_path, board="esp32_devkit")), ":config.json"],
        ):
            proc = subprocess.run([mp, "connect", board.port, *cmd], capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, proc.stdout + proc.stderr
    assert device_files(root) == {f"lib/meerkat_rt/{n}" for n in NAMES} | {"main.py", "config.json", "boards/esp32_devkit.json"}
    assert run_on_device(root, CHECK) == "esp32_devkit viper"
