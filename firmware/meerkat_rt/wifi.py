# meerkat_rt.wifi: join the configured network as a station, bounded in time and attempts.
#
# After wlan.connect() the ESP32 would retry forever on its own; we bound each attempt, report
# the driver's status by name, back off between attempts, and after `retries` attempts (0: never)
# give up with one clear error. Power save is off by default: modem sleep adds tens of ms of
# latency per packet, which breaks up streamed audio.
#
# The ESP32 port's status() is not a per-attempt answer (network_wlan.c):
#   - it reports the last disconnect reason, which persists across connect(): right after
#     connect() it still shows the previous attempt's failure. A give-up status ends an
#     attempt early only once STAT_CONNECTING was seen after this connect(); before that it is
#     stale, and the attempt waits (for an address or its timeout) as the driver retries;
#   - AUTH_FAIL *and* CONNECTION_FAIL both read STAT_WRONG_PASSWORD, so a busy AP looks like a
#     wrong key: "wrong password" is final only after WRONG_KEY_ATTEMPTS attempts in a row
#     ended with it;
#   - reason 203 is STAT_CONNECT_FAIL from v1.28 on, STAT_ASSOC_FAIL before: both names map.
import network

from . import log
from .compat import idf_heap, sleep_ms, ticks_diff, ticks_ms

WRONG_KEY_ATTEMPTS = 3


class WifiError(OSError):
    pass


_STATUS_NAMES = {}
for _name in ("STAT_IDLE", "STAT_CONNECTING", "STAT_WRONG_PASSWORD", "STAT_NO_AP_FOUND", "STAT_ASSOC_FAIL",
              "STAT_CONNECT_FAIL", "STAT_BEACON_TIMEOUT", "STAT_HANDSHAKE_TIMEOUT", "STAT_GOT_IP"):
    if hasattr(network, _name):
        _n = _name[5:].lower()
        _STATUS_NAMES[getattr(network, _name)] = "connect_fail" if _n == "assoc_fail" else _n
_GIVE_UP = ("wrong_password", "no_ap_found", "connect_fail")  # end an attempt at once (if fresh)


def _status(wlan):
    st = wlan.status()
    return _STATUS_NAMES.get(st, str(st))


async def connect(cfg, wlan=None, backoff_ms=1000):
    """Join cfg["ssid"] with cfg["key"]; returns the WLAN object. Raises WifiError. Attempts
    are backoff_ms, 2 * backoff_ms ... (at most 30 s) apart."""
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
    attempt = wrong = 0
    while not wlan.isconnected():
        attempt += 1
        wlan.connect(ssid, cfg.get("key", ""))
        t0 = ticks_ms()
        fresh = False  # STAT_CONNECTING seen since this connect(): later statuses are its own
        status = ""
        while not wlan.isconnected():
            status = why = _status(wlan)
            if status == "connecting":
                fresh = True
            elif fresh and status in _GIVE_UP:
                break
            if ticks_diff(ticks_ms(), t0) > timeout:
                why = "timeout after %d ms, status %s" % (timeout, status)
                break
            await sleep_ms(100)
        if wlan.isconnected():
            break
        wrong = wrong + 1 if status == "wrong_password" else 0
        log.warn("wifi", "joining %s, attempt %d failed (%s)", ssid, attempt, why)
        wlan.disconnect()
        if wrong >= WRONG_KEY_ATTEMPTS:
            raise WifiError("Wi-Fi: could not join %s (wrong_password %d times in a row: check config.json wifi.key; attempts: %d)" % (ssid, wrong, attempt))
        if retries and attempt >= retries:
            raise WifiError("Wi-Fi: could not join %s (%s; attempts: %d)" % (ssid, why, attempt))
        await sleep_ms(min(30000, backoff_ms << min(attempt - 1, 5)))  # 1, 2, 4 ... 30 s
    idf = idf_heap()
    if idf is None:
        log.info("wifi", "joined %s as %s", ssid, wlan.ifconfig()[0])
    else:  # what Wi-Fi left of the internal RAM that TLS and I2S re-inits draw on
        log.info("wifi", "joined %s as %s; internal RAM free %d, largest block %d", ssid, wlan.ifconfig()[0], idf[0], idf[1])
    return wlan
