# meerkat_rt._host: CPython stand-ins for the MicroPython-only APIs the firmware uses.
#
# Imported by compat only when the micropython module is missing (host tests, the simulator's
# cpython runtime). Never imported on a board; excluded from the firmware's MicroPython type
# check because it is written against CPython's standard library.
import asyncio
import time

_TICKS_PERIOD = 1 << 30
_TICKS_MASK = _TICKS_PERIOD - 1
_TICKS_HALF = _TICKS_PERIOD >> 1


def const(x):
    return x


def ticks_ms():
    return int(time.monotonic() * 1000) & _TICKS_MASK


def ticks_us():
    return int(time.monotonic() * 1000000) & _TICKS_MASK


def ticks_add(t, delta):
    return (t + delta) & _TICKS_MASK


def ticks_diff(a, b):
    return ((a - b + _TICKS_HALF) & _TICKS_MASK) - _TICKS_HALF


def sleep_ms(ms):
    return asyncio.sleep(ms / 1000)


def print_exception(exc, file=None):
    import traceback

    traceback.print_exception(type(exc), exc, exc.__traceback__, file=file)
