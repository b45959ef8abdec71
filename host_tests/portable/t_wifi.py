# meerkat_rt.wifi against the fake network.WLAN (tools/meerkat_tools/fakes), which reports
# statuses as the ESP32 port's network_wlan.c does: joins, gives up with one clear error, never
# puts the key into a message, and is not fooled by the port's statuses (a transient
# AUTH_FAIL/CONNECTION_FAIL reads "wrong password"; the reason persists across connect()).
import asyncio

import simworld
from meerkat_rt import log, wifi

KEY = "correct horse battery staple"
BACKOFF = 20  # ms between attempts (1 s on a board): the tests are about the decisions


def _run(cfg, **world):
    simworld.configure(**world)
    lines = []
    old = log.sink
    log.sink = lines.append
    try:
        try:
            wlan = asyncio.run(wifi.connect(cfg, backoff_ms=BACKOFF))
            return wlan, None, lines
        except wifi.WifiError as exc:
            return None, exc, lines
    finally:
        log.sink = old


def _attempts(lines):
    return [line for line in lines if "attempt" in line]


def test_joins_and_turns_power_save_off():
    import network

    cfg = {"ssid": "home", "key": KEY, "timeout_ms": 2000, "retries": 2, "hostname": "kitchen-voice"}
    wlan, err, lines = _run(cfg, wifi_ssid="home", wifi_key=KEY, wifi_connect_ms=100)
    assert err is None and wlan.isconnected()
    assert wlan.config("pm") == wlan.PM_NONE
    assert network.hostname() == "kitchen-voice"
    assert any("joined home" in line for line in lines) and not _attempts(lines)


def test_a_wrong_key_gives_up_after_repeating_with_a_clear_error():
    # Retrying cannot fix a wrong key, whatever `retries` says; but the port reports a busy AP
    # the same way, so it takes WRONG_KEY_ATTEMPTS attempts in a row. After the first, the
    # status is the previous attempt's (it persists): those attempts run to their timeout.
    cfg = {"ssid": "home", "key": KEY + "x", "timeout_ms": 300, "retries": 0}
    wlan, err, lines = _run(cfg, wifi_ssid="home", wifi_key=KEY, wifi_connect_ms=50)
    assert wlan is None and "could not join home (wrong_password 3 times in a row" in str(err), err
    assert "attempts: 3" in str(err) and "wifi.key" in str(err)
    assert len(_attempts(lines)) == 3
    for text in lines + [str(err)]:
        assert KEY not in text


def test_a_transient_auth_fail_is_not_taken_for_a_wrong_key():
    # The AP refuses the first associations (AUTH_FAIL, as a busy AP or a PMK cache miss
    # does) for 300 ms, longer than the 100 ms between status checks; the key is right.
    cfg = {"ssid": "home", "key": KEY, "timeout_ms": 1000, "retries": 0}
    wlan, err, lines = _run(cfg, wifi_ssid="home", wifi_key=KEY, wifi_connect_ms=50, wifi_fail=[202] * 6)
    assert err is None and wlan.isconnected(), err
    tries = _attempts(lines)
    assert 1 <= len(tries) < wifi.WRONG_KEY_ATTEMPTS and "wrong_password" in tries[0], lines


def test_connection_fail_reads_wrong_password_and_is_retried():
    # CONNECTION_FAIL (205) is reported as STAT_WRONG_PASSWORD by the port.
    import network

    cfg = {"ssid": "home", "key": KEY, "timeout_ms": 1000, "retries": 0}
    wlan, err, lines = _run(cfg, wifi_ssid="home", wifi_key=KEY, wifi_connect_ms=50, wifi_fail=[205] * 6)
    assert err is None and wlan.isconnected(), err
    tries = _attempts(lines)
    assert 1 <= len(tries) < wifi.WRONG_KEY_ATTEMPTS and "wrong_password" in tries[0], lines
    assert network.STAT_WRONG_PASSWORD == 202


def test_a_stale_give_up_status_does_not_end_the_next_attempt():
    # After a failed attempt the port's status still reads that failure when connect() starts
    # the next one (the reason persists until an address or a new reason replaces it). Here
    # the AP is missing for 300 ms, then there: the second attempt must wait for the driver,
    # not stop at the old NO_AP_FOUND.
    cfg = {"ssid": "home", "key": KEY, "timeout_ms": 1000, "retries": 2}
    wlan, err, lines = _run(cfg, wifi_ssid="home", wifi_key=KEY, wifi_connect_ms=50, wifi_fail=[201] * 6)
    assert err is None and wlan.isconnected(), (err, lines)
    assert len(_attempts(lines)) == 1 and "no_ap_found" in _attempts(lines)[0]
    assert wlan.connects == 2


def test_missing_network_is_retried_with_backoff_up_to_retries():
    wlan, err, lines = _run({"ssid": "elsewhere", "key": KEY, "timeout_ms": 300, "retries": 2}, wifi_ssid="home", wifi_connect_ms=50)
    assert wlan is None and "no_ap_found" in str(err) and "attempts: 2" in str(err), err
    assert len(_attempts(lines)) == 2


def test_statuses_are_named_on_v1_24_and_v1_28():
    # Reason 203 is STAT_CONNECT_FAIL from v1.28 on and STAT_ASSOC_FAIL before it.
    import network
    from meerkat_rt.compat import unload

    assert wifi._STATUS_NAMES[203] == "connect_fail" and wifi._STATUS_NAMES[202] == "wrong_password"
    saved = network.STAT_CONNECT_FAIL
    del network.STAT_CONNECT_FAIL  # the v1.24 module
    try:
        unload("wifi")
        from meerkat_rt import wifi as wifi124

        assert wifi124._STATUS_NAMES[203] == "connect_fail"
    finally:
        network.STAT_CONNECT_FAIL = saved
        unload("wifi")
