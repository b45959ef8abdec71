"""Installing aiorepl for the live REPL, when asked: meerkat-deploy --aiorepl adds one `mpremote
mip install aiorepl` after the copies (and before a reset or the REPL); firmware/package-repl.json
is firmware/package.json with aiorepl as a mip dependency, kept in step by pkgjson."""

from __future__ import annotations

import json
import shlex

from meerkat_tools import deploy, paths, pkgjson

EXAMPLE = paths.FIRMWARE / "config.example.json"


def _config(tmp_path):
    cfg = json.loads(EXAMPLE.read_text())
    cfg["tls"] = {"ca_file": "", "insecure": False}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def _dry_run(capsys, *argv):
    assert deploy.main(["--dry-run", *argv]) == 0
    return [shlex.split(line) for line in capsys.readouterr().out.splitlines()]


def test_aiorepl_is_installed_only_when_asked(tmp_path, capsys):
    cfg = _config(tmp_path)
    plain = _dry_run(capsys, "--config", str(cfg), "--port", "u0", "--reset")
    asked = _dry_run(capsys, "--config", str(cfg), "--port", "u0", "--reset", "--aiorepl")
    mip = [c for c in asked if c[3:] == ["mip", "install", "aiorepl"]]
    assert len(mip) == 1 and mip[0][1:3] == ["connect", "u0"]
    assert not any("mip" in c for c in plain)
    # the same deploy otherwise, the install after every copy and before the reset
    assert [c for c in asked if c not in mip] == plain
    assert asked.index(mip[0]) == len(asked) - 2 and asked[-1][3:] == ["reset"]


def test_package_repl_json_is_the_package_plus_aiorepl():
    repl = json.loads(pkgjson.REPL_JSON.read_text())
    assert pkgjson.REPL_JSON.read_text() == pkgjson.render_repl(), "run python -m meerkat_tools.pkgjson"
    assert repl["deps"] == [["aiorepl", "latest"]]
    assert repl["urls"] == json.loads(pkgjson.render())["urls"]
    assert repl["version"] == __import__("meerkat_rt").__version__
