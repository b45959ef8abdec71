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


def again():
    # The exceptions that mean "not now" on a CPython non-blocking (ssl) socket.
    import ssl

    return (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class HostStream:
    # CPython only: a non-blocking socket (plain or ssl) with MicroPython's stream semantics:
    # write -> count or None, readinto/read -> data, 0/b"" at end of stream, None for "not now".
    def __init__(self, s):
        self.s = s
        self.again = again()

    def write(self, buf, off=0, n=-1):
        try:
            return self.s.send(memoryview(buf)[off : off + n] if n >= 0 else buf[off:])
        except self.again:
            return None

    def readinto(self, buf):
        try:
            return self.s.recv_into(buf)
        except self.again:
            return None

    def read(self, n):
        try:
            return self.s.recv(n)
        except self.again:
            return None

    def close(self):
        self.s.close()
