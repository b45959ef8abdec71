# meerkat_rt.clock: a wall clock that certificate checks can trust, set once from NTP.
#
# mbedtls checks a server certificate's validity dates against the ESP32's system time
# (gettimeofday), which reads 2000-01-01 after every power-up: without a set clock every
# wss:// verification fails ("validity starts in the future"). So when the device verifies
# certificates (config tls.ca_file, not insecure), app.Device.run calls ensure() after Wi-Fi
# joins and before the channel connects. The clock is read through machine.RTC, the same time
# mbedtls reads (the simulator's fake RTC starts at 2000-01-01 as a board does); a clock that
# already reads a plausible year is left alone (a soft reset keeps the RTC running), so NTP is
# asked at most once per power-up. Devices that speak ws:// or skip verification never get
# here: for them the date does not matter.
#
# ntptime (micropython-lib; frozen in the ESP32 firmware) blocks: a DNS lookup and up to
# `timeout` seconds for one UDP answer. That is why this runs before the channel, whose pump
# keeps the microphone and speaker going, and not when the first wss:// URL arrives.
from . import log
from .compat import sleep_ms

MIN_YEAR = 2025  # an RTC reading an earlier year has not been set
_ATTEMPTS = 3


class ClockError(OSError):
    pass


def year():
    """The year the system clock reads (the RTC on a board; the host clock without one)."""
    try:
        from machine import RTC
    except ImportError:  # CPython or the unix port without the simulator's fakes
        import time

        return time.gmtime()[0]
    return RTC().datetime()[0]


async def ensure(host, attempts=_ATTEMPTS, timeout_s=1, pause_ms=1000):
    """Set the clock from the NTP server `host` unless it is already set. True if it was set
    now, False if it was already. Raises ClockError after `attempts` failed queries, with
    pauses of pause_ms, 2 * pause_ms ... between them."""
    if year() >= MIN_YEAR:
        return False
    if not host:
        raise ClockError("clock: the RTC reads %d and config.json tls.ntp_host is empty: wss:// certificate checks need the date" % year())
    try:
        import ntptime
    except ImportError:
        raise ClockError("clock: no ntptime module (freeze micropython-lib's ntptime): wss:// certificate checks need the date")
    ntptime.host = host
    ntptime.timeout = timeout_s
    why = ""
    for attempt in range(1, attempts + 1):
        try:
            ntptime.settime()
            why = "the answer was not a plausible time"
        except Exception as exc:  # OSError (DNS, timeout), ValueError (a short answer), ...
            why = "%s: %s" % (type(exc).__name__, exc)
        if year() >= MIN_YEAR:
            log.info("clock", "set from %s (attempt %d)", host, attempt)
            return True
        log.warn("clock", "NTP %s, attempt %d failed (%s)", host, attempt, why)
        if attempt < attempts:
            await sleep_ms(pause_ms * attempt)
    raise ClockError("clock: cannot set the time from NTP server %s (%s; attempts: %d): wss:// certificate checks need the date (config.json tls.ntp_host)" % (host, why, attempts))
