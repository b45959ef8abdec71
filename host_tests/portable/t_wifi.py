# meerkat_rt.wifi against the fake network.WLAN (tools/meerkat_tools/fakes): joins, gives up
# with one clear error, and never puts the key into a message.
import asyncio

import simworld
from meerkat_rt import log, wifi

KEY = "correct horse battery staple"


def _run(cfg, **world):
    simworld.configure(**world)
    lines = []
    old = log.sink
    log.sink = lines.append
    try:
        try:
            wlan = asyncio.run(wifi.connect(cfg))
            return wlan, None, lines
        except wifi.WifiError as exc:
            return None, exc, lines
    finally:
        log.sink = old


def test_joins_and_turns_power_save_off():
    import network

    cfg = {"ssid": "home", "key": KEY, "timeout_ms": 2000, "retries": 2, "hostname": "kitchen-voice"}
    wlan, err, lines = _run(cfg, wifi_ssid="home", wifi_key=KEY, wifi_connect_ms=100)
    assert err is None and wlan.isconnected()
    assert wlan.config("pm") == wlan.PM_NONE
    assert network.hostname() == "kitchen-voice"
    assert any("joined home" in line for line in lines)


def test_wrong_key_gives_up_at_once_with_a_clear_error():
    # Retrying cannot fix a wrong key, whatever `retries` says.
    wlan, err, lines = _run({"ssid": "home", "key": KEY + "x", "timeout_ms": 500, "retries": 0}, wifi_ssid="home", wifi_key=KEY)
    assert wlan is None and "could not join home (wrong_password; attempts: 1)" in str(err)
    assert len([line for line in lines if "attempt" in line]) == 1
    for text in lines + [str(err)]:
        assert KEY not in text


def test_missing_network_is_retried_with_backoff_up_to_retries():
    wlan, err, lines = _run({"ssid": "elsewhere", "key": KEY, "timeout_ms": 300, "retries": 2}, wifi_ssid="home")
    assert wlan is None and "no_ap_found" in str(err) and "attempts: 2" in str(err)
    assert len([line for line in lines if "attempt" in line]) == 2
