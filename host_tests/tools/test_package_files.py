"""firmware/package.json (mip) is up to date with the firmware directory, and
firmware/config.example.json is valid and names every field of the config schema."""

from __future__ import annotations

import json

from meerkat_rt import config

from meerkat_tools import paths, pkgjson

PACKAGE_JSON = paths.FIRMWARE / "package.json"
EXAMPLE = paths.FIRMWARE / "config.example.json"


def test_package_json_is_up_to_date():
    assert PACKAGE_JSON.read_text() == pkgjson.render(), (
        "firmware/package.json is out of date with firmware/meerkat_rt: run "
        "python -m meerkat_tools.pkgjson (or meerkat-deploy --write-package-json) and commit it"
    )
    assert pkgjson.main(["--check"]) == 0


def test_package_json_lists_every_device_file_and_nothing_else():
    pkg = json.loads(PACKAGE_JSON.read_text())
    assert set(pkg) == {"urls", "version"}
    assert "meerkat_rt/v2/backend.py" in [d for d, _ in pkg["urls"]]  # subpackages too
    on_disk = {p.relative_to(paths.FIRMWARE_PACKAGE).as_posix() for p in paths.FIRMWARE_PACKAGE.rglob("*.py")} - {"_host.py"}
    dests = [dest for dest, _ in pkg["urls"]]
    assert sorted(dests) == sorted(f"meerkat_rt/{n}" for n in on_disk)
    for dest, source in pkg["urls"]:
        assert dest == source  # installed under lib/ with the package's own layout
        assert (PACKAGE_JSON.parent / source).is_file()
    assert "meerkat_rt/_host.py" not in dests
    assert pkg["version"] == __import__("meerkat_rt").__version__


def test_check_detects_a_stale_package_json(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "package.json"
    stale.write_text(pkgjson.render().replace('    ["meerkat_rt/ws.py", "meerkat_rt/ws.py"]', "").replace(",\n\n", "\n"))
    monkeypatch.setattr(pkgjson, "PACKAGE_JSON", stale)
    assert pkgjson.main(["--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    assert pkgjson.main([]) == 0
    assert stale.read_text() == pkgjson.render()


# Fields the example leaves out on purpose, each with the reason. Anything else in the schema
# must appear in the example, so it cannot fall behind config.py.
NOT_IN_EXAMPLE = {
    "config.server.rest": "the alternative to server.rpc: exactly one of the two may be set",
    "config.audio.ring_ms": "defaults to the board's (2000 ms with PSRAM, 280 without): a value "
    "here would override every board's",
    "config.audio.playback_ms": "likewise the board's (2000 / 300 ms)",
    "config.audio.speaker_mode": "likewise the board's (irq on the ESP32-S3 with octal PSRAM, where "
    "drain hangs)",
}
SECTION_SHAPE = {"server_reconnect_policy": "policy"}


def schema_fields() -> set[str]:
    fields = set()

    def walk(shape: str, where: str):
        for field in config._SHAPES[shape].split():
            key = field.split(":")[0]
            fields.add(f"{where}.{key}")
            if field.split(":")[1].startswith("o"):
                sub = SECTION_SHAPE.get(key, key)
                if sub in config._SHAPES:
                    walk(sub, f"{where}.{key}")

    walk("config", "config")
    return fields


def example_fields(obj, where="config") -> set[str]:
    out = set()
    for key, value in obj.items():
        out.add(f"{where}.{key}")
        if isinstance(value, dict):
            out |= example_fields(value, f"{where}.{key}")
    return out


def test_config_example_validates():
    raw = json.loads(EXAMPLE.read_text())
    cfg = config.validate(raw)
    assert cfg["board"] in {p.stem for p in paths.BOARDS.glob("*.json")}
    assert config.load(str(EXAMPLE)) == cfg


def test_config_example_names_every_schema_field():
    example = example_fields(json.loads(EXAMPLE.read_text()))
    schema = schema_fields()
    assert {"config.wifi.key", "config.audio.vad_sensitivity", "config.server_reconnect_policy.max_total_ms"} <= schema
    missing = schema - example - set(NOT_IN_EXAMPLE)
    assert not missing, f"add these to firmware/config.example.json: {sorted(missing)}"
    assert set(NOT_IN_EXAMPLE) <= schema, "NOT_IN_EXAMPLE names a field the schema no longer has"
    assert not (set(NOT_IN_EXAMPLE) & example)
    # Every default the firmware applies is shown with its value (the example documents them).
    raw = json.loads(EXAMPLE.read_text())
    for key, value in config.DEFAULTS.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                assert raw[key][sub] == v, f"{key}.{sub}"
        else:
            assert raw[key] == value, key
    for key, value in config.WIFI_DEFAULTS.items():
        assert raw["wifi"][key] == value, f"wifi.{key}"
