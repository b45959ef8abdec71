# meerkat_rt.clock and its place in app.Device.run, on the simulated board: the fake RTC reads
# 2000-01-01 after power-up as an ESP32's does (certificate dates cannot be checked against
# it), the fake ntptime answers like micropython-lib's. The clock is set after Wi-Fi and
# before the channel connects, only when certificates are verified, with bounded retries and
# one clear error.
import asyncio

import simworld
from meerkat_rt import clock, log

MP_HEAP = "320K"  # three whole Devices in turn (buffers, the package as 64-bit .mpy files)


def _ensure(host="ntp.lan", **world):
    simworld.configure(clock="virtual", **world)
    lines = []
    old = log.sink
    log.sink = lines.append
    try:
        try:
            return asyncio.run(clock.ensure(host, pause_ms=1)), None, lines
        except clock.ClockError as exc:
            return None, exc, lines
    finally:
        log.sink = old


def test_a_cold_rtc_is_set_from_ntp():
    simworld.configure(clock="virtual")
    assert clock.year() == 2000  # what mbedtls would check certificates against
    done, err, lines = _ensure()
    assert done is True and err is None and clock.year() >= clock.MIN_YEAR
    assert simworld.get().ntp_queries == 1 and any(line.startswith("I clock: set from ntp.lan") for line in lines)


def test_a_running_clock_is_left_alone():
    done, err, lines = _ensure(rtc="set")  # a soft reset keeps the RTC
    assert done is False and err is None and simworld.get().ntp_queries == 0 and not lines


def test_a_lost_answer_is_retried():
    done, err, lines = _ensure(ntp_fail=2)
    assert done is True and simworld.get().ntp_queries == 3
    assert len([line for line in lines if line.startswith("W clock: NTP ntp.lan, attempt")]) == 2


def test_retries_are_bounded_and_the_error_says_why():
    done, err, lines = _ensure(ntp_fail=10)
    assert done is None and simworld.get().ntp_queries == 3 and clock.year() == 2000
    text = str(err)
    assert "ntp.lan" in text and "attempts: 3" in text and "tls.ntp_host" in text and "certificate" in text, text
    done, err, lines = _ensure("pool.ntp.org", ntp_hosts=["ntp.lan"])  # not reachable from here
    assert err is not None and "-202" in str(err), err
    done, err, lines = _ensure("")  # never set the clock: say what that costs
    assert err is not None and "ntp_host is empty" in str(err) and simworld.get().ntp_queries == 0


class _Channel:
    """Stands in for the Link: records the clock when the channel would connect."""

    year = None

    async def run(self):
        self.year = clock.year()
        return "closed"


def _device(tls):
    from meerkat_rt import app
    from meerkat_rt import board as boards

    for prefix in ("boards/", "../boards/", "../../boards/"):
        try:
            b = boards.load(prefix + "sim.json")
            break
        except boards.BoardError:
            pass
    cfg = {"server": {"rpc": "127.0.0.1:9"}, "target": {"type": "session_target", "session_id": "s"},
           "wifi": {"ssid": "home", "key": "k", "timeout_ms": 2000}}
    dev = app.Device(cfg, board=b, on_event=None)
    dev.cfg["tls"].update(tls)  # after the constructor: no CA file is read, run() decides
    dev.channel = _Channel()
    return dev


def test_the_device_sets_the_clock_after_wifi_before_a_verified_channel():
    simworld.configure(wifi_connect_ms=20, ntp_hosts=["ntp.lan"])
    dev = _device({"ca_file": "ca.der", "ntp_host": "ntp.lan"})
    assert asyncio.run(dev.run()) == "closed"
    assert dev.channel.year >= clock.MIN_YEAR and simworld.get().ntp_queries == 1


def test_no_ntp_for_a_device_that_does_not_verify_certificates():
    for tls in ({}, {"ca_file": "ca.der", "insecure": True}):
        simworld.configure(wifi_connect_ms=20)
        dev = _device(tls)
        assert asyncio.run(dev.run()) == "closed"
        assert dev.channel.year == 2000 and simworld.get().ntp_queries == 0, tls


def test_the_device_stops_with_the_clock_error_before_connecting():
    simworld.configure(wifi_connect_ms=20, ntp_fail=10, clock="wall")
    dev = _device({"ca_file": "ca.der", "ntp_host": "ntp.lan"})
    dev.cfg["tls"]["ntp_host"] = ""  # no time server: fails at once, without retries to wait for
    try:
        asyncio.run(dev.run())
    except OSError as exc:  # clock.ClockError (of the clock module run() imported afresh)
        assert type(exc).__name__ == "ClockError" and "ntp_host is empty" in str(exc), exc
    else:
        raise AssertionError("a verified channel connected with the clock at 2000")
    assert dev.channel.year is None


def test_config_names_the_ntp_host():
    from meerkat_rt import config

    base = {"server": {"rpc": "127.0.0.1:9"}, "target": {"type": "session_target", "session_id": "s"}}
    assert config.validate(dict(base))["tls"]["ntp_host"] == "pool.ntp.org"
    cfg = dict(base)
    cfg["tls"] = {"ca_file": "ca.der", "ntp_host": "ntp.lan"}
    assert config.validate(cfg)["tls"] == {"ca_file": "ca.der", "ntp_host": "ntp.lan", "insecure": False}
    for bad in ("udp://pool.ntp.org", "ntp.lan:123", "two words"):
        cfg["tls"] = {"ntp_host": bad}
        try:
            config.validate(cfg)
        except config.ConfigError as exc:
            assert "config.tls.ntp_host must be a host name" in str(exc), exc
        else:
            raise AssertionError("ntp_host %r accepted" % bad)
