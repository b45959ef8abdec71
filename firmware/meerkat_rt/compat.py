# meerkat_rt.compat: the few runtime differences between MicroPython and CPython, in one place.
#
# Firmware modules take time and constant helpers from here so that the same code runs on an
# ESP32, on the MicroPython unix port and under CPython (host tests, the simulator). The CPython
# stand-ins live in _host.py, which a board never imports.
try:
    from micropython import const  # parser-inlined on MicroPython
    from time import ticks_add, ticks_diff, ticks_ms, ticks_us
    from asyncio import sleep_ms  # allocation-free on MicroPython
    from sys import print_exception

    IS_MICROPYTHON = True
except ImportError:
    from ._host import (  # type: ignore
        const,
        print_exception,
        sleep_ms,
        ticks_add,
        ticks_diff,
        ticks_ms,
        ticks_us,
    )

    IS_MICROPYTHON = False


def mem_free():
    """Free GC heap in bytes, or -1 where the runtime cannot tell (CPython)."""
    import gc

    try:
        return gc.mem_free()  # type: ignore[attr-defined]
    except AttributeError:
        return -1


def unload(name):
    """Drop a firmware module (e.g. "config", "v2.bootstrap") so that its bytecode can be
    collected; a later import loads it again. For code needed only while setting up or
    connecting: on a 112 KB heap a module's code costs more than its buffers (when it is not
    frozen; docs/architecture.md 1)."""
    import sys

    sys.modules.pop("meerkat_rt." + name, None)
    parent, _, leaf = ("meerkat_rt." + name).rpartition(".")
    pkg = sys.modules.get(parent)
    if pkg is not None and leaf in pkg.__dict__:
        delattr(pkg, leaf)
