# meerkat_rt.wifi: join the configured network as a station, bounded in time and attempts.
#
# After wlan.connect() the ESP32 would retry forever on its own; we bound each attempt, report
# the driver's status by name, back off between attempts, and after `retries` attempts (0: never)
# give up with one clear error; a wrong key gives up at once. Power save is off by default: modem
# sleep adds tens of ms of latency per packet, which breaks up streamed audio.
import network

from . import log
from .compat import sleep_ms, ticks_diff, ticks_ms


class WifiError(OSError):
    pass


_STATUS_NAMES = {}
for _name in ("STAT_IDLE", "STAT_CONNECTING", "STAT_WRONG_PASSWORD", "STAT_NO_AP_FOUND", "STAT_CONNECT_FAIL", "STAT_GOT_IP"):
    if hasattr(network, _name):
        _STATUS_NAMES[getattr(network, _name)] = _name[5:].lower()
_GIVE_UP = ("wrong_password", "no_ap_found", "connect_fail")  # end an attempt at once


def _status(wlan):
    st = wlan.status()
    return _STATUS_NAMES.get(st, str(st))


async def connect(cfg, wlan=None):
    """Join cfg["ssid"] with cfg["key"]; returns the WLAN object. Raises WifiError."""
    if wlan is None:
        sta = getattr(network.WLAN, "IF_STA", None)  # MicroPython 1.25+; STA_IF before
        wlan = network.WLAN(sta if sta is not None else network.STA_IF)
    if cfg.get("hostname"):
        try:
            network.hostname(cfg["hostname"])  # type: ignore  # MicroPython 1.20+: DHCP name
        except (AttributeError, ValueError, OSError):
            log.warn("wifi", "cannot set the hostname on this port")
    wlan.active(True)
    if not cfg.get("power_save", False):
        try:
            wlan.config(pm=wlan.PM_NONE)
        except (AttributeError, ValueError, OSError):
            log.warn("wifi", "cannot turn Wi-Fi power save off on this port")
    ssid = cfg["ssid"]
    retries = cfg.get("retries", 0)
    timeout = cfg.get("timeout_ms", 20000)
    why = ""
    attempt = 0
    while not wlan.isconnected():
        attempt += 1
        wlan.connect(ssid, cfg.get("key", ""))
        t0 = ticks_ms()
        while not wlan.isconnected():
            why = _status(wlan)
            if why in _GIVE_UP:
                break
            if ticks_diff(ticks_ms(), t0) > timeout:
                why = "timeout after %d ms, status %s" % (timeout, why)
                break
            await sleep_ms(100)
        if wlan.isconnected():
            break
        log.warn("wifi", "joining %s, attempt %d failed (%s)", ssid, attempt, why)
        wlan.disconnect()
        if why == "wrong_password" or (retries and attempt >= retries):
            raise WifiError("Wi-Fi: could not join %s (%s; attempts: %d)" % (ssid, why, attempt))
        await sleep_ms(min(30000, 1000 << min(attempt - 1, 5)))  # 1, 2, 4 ... 30 s
    log.info("wifi", "joined %s as %s", ssid, wlan.ifconfig()[0])
    return wlan
