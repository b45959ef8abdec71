# meerkat_rt.config: defaults, and an error that names the field for every kind of mistake.
import json

from meerkat_rt import config

SECRET = "hunter2-wifi-key"
MINIMAL = {
    "server": {"rpc": "192.168.1.10:9001"},
    "target": {"type": "session_target", "session_id": "019e"},
}


def _with(**changes):
    cfg = json.loads(json.dumps(MINIMAL))
    for key in changes:
        cfg[key] = changes[key]
    return cfg


def _error(cfg):
    try:
        config.validate(cfg)
    except config.ConfigError as exc:
        text = str(exc)
        assert SECRET not in text, text
        return text
    raise AssertionError("accepted %r" % (cfg,))


def test_minimal_config_gets_defaults():
    cfg = config.validate(_with())
    assert cfg["role"] == "primary" and cfg["turning_mode"] == "provider_managed"
    assert cfg["audio"]["frame_ms"] == 40 and cfg["audio"]["margin_ms"] == 100
    assert cfg["reconnect"]["initial_backoff_ms"] == 500
    assert cfg["keepalive"]["interval_ms"] == 15000 and cfg["tls"]["insecure"] is False
    assert "wifi" not in cfg


def test_partial_sections_merge_with_defaults():
    cfg = config.validate(_with(audio={"frame_ms": 20}, wifi={"ssid": "home", "key": SECRET}))
    assert cfg["audio"]["frame_ms"] == 20 and cfg["audio"]["preroll_ms"] == 300
    assert cfg["wifi"]["timeout_ms"] == 20000 and cfg["wifi"]["key"] == SECRET
    assert config.DEFAULTS["audio"]["frame_ms"] == 40  # defaults are not modified


def test_errors_name_the_field():
    cases = [
        (_with(server={}), "config.server"),
        (_with(server={"rpc": "h:1", "rest": "http://h"}), "config.server"),
        (_with(server={"rpc": "nohost"}), "config.server.rpc"),
        (_with(server={"rest": "https://h"}), "config.server.rest"),
        (_with(server={"rpc": 9001}), "config.server.rpc"),
        (_with(target={"type": "team"}), "config.target"),
        (_with(target={"type": "session_target"}), "config.target.session_id"),
        (_with(role="god"), "config.role"),
        (_with(turning_mode="continuous"), "config.turning_mode"),
        (_with(audio={"frame_ms": 30}), "config.audio.frame_ms"),
        (_with(audio={"frame_ms": -40}), "config.audio.frame_ms"),
        (_with(audio={"frame_msec": 40}), "config.audio.frame_msec"),
        (_with(audio={"vad_sensitivity": 11}), "config.audio.vad_sensitivity"),
        (_with(audio={"vad_sensitivity": 0}), "config.audio.vad_sensitivity"),
        (_with(audio={"preroll_ms": -1}), "config.audio.preroll_ms"),
        (_with(audio={"margin_ms": 5000}), "config.audio.margin_ms"),
        (_with(wifi={"ssid": "home", "key": 12345}), "config.wifi.key"),
        (_with(wifi={"key": SECRET}), "config.wifi.ssid"),
        (_with(tls={"insecure": "yes"}), "config.tls.insecure"),
        (_with(keepalive={"interval_ms": 1.5}), "config.keepalive.interval_ms"),
        (_with(log_level="loud"), "config.log_level"),
        (_with(sesion_id="x"), "config.sesion_id"),
        (_with(server_reconnect_policy={"max_attempts": 3}), "config.server_reconnect_policy"),
    ]
    for cfg, field in cases:
        text = _error(cfg)
        assert field in text, (field, text)
    del_target = _with()
    del del_target["target"]
    assert "target" in _error(del_target)


def test_wifi_key_never_in_errors():
    _error(_with(wifi={"ssid": "home", "key": SECRET, "retries": "three"}))


def test_load_reads_a_file_and_reports_bad_json(tmp="_t_config.json"):
    import os

    with open(tmp, "w") as f:
        f.write(json.dumps(_with(board="sim")))
    try:
        assert config.load(tmp)["board"] == "sim"
        with open(tmp, "w") as f:
            f.write('{"server": ' + SECRET)
        try:
            config.load(tmp)
        except config.ConfigError as exc:
            assert "not valid JSON" in str(exc) and SECRET not in str(exc)
        else:
            raise AssertionError("bad JSON accepted")
    finally:
        os.remove(tmp)
    try:
        config.load("/nonexistent/config.json")
    except config.ConfigError as exc:
        assert "cannot read" in str(exc)
    else:
        raise AssertionError("missing file accepted")
