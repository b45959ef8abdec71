# Fake `ntptime` (micropython-lib's, frozen in the ESP32 firmware) for host tests and the
# simulator: the same API (host, timeout, time(), settime()), answered from the host's clock
# without a packet on the network. As the real one: getaddrinfo() of an unknown host raises
# OSError(-202) (lwIP's EAI_FAIL, as the ESP32 port reports it), a lost answer raises
# OSError(ETIMEDOUT) after `timeout`, and settime() writes the RTC through machine.RTC.
# simworld: ntp_hosts (the servers that answer; None: any), ntp_fail (the first n queries
# time out); world.ntp_queries counts the queries.
import errno

import simworld

host = "pool.ntp.org"
timeout = 1


def time():
    """Seconds since the epoch from the NTP server `host`."""
    w = simworld.get()
    w.ntp_queries += 1
    hosts = w.cfg["ntp_hosts"]
    if hosts is not None and host not in hosts:
        raise OSError(-202)
    if w.ntp_fail > 0:
        w.ntp_fail -= 1
        simworld.sleep_us(timeout * 1000000)  # the socket timeout the real one waits
        raise OSError(errno.ETIMEDOUT)
    import time as _time

    return int(_time.time())  # this runtime's epoch (1970 on the unix port and CPython)


def settime():
    """Set the RTC to the NTP time (UTC), as the real settime() does."""
    import time as _time

    import machine

    tm = _time.gmtime(time())
    machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6] + 1, tm[3], tm[4], tm[5], 0))
