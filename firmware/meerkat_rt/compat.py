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


import gc as _gc

# The ESP32 port's esp32 module (idf_heap_info), None elsewhere. Its gc.mem_free() is not the
# GC heap's free space: it adds the largest free block of the IDF heap, what the GC heap could
# still grow by (py/modgc.c with MICROPY_GC_SPLIT_HEAP_AUTO; ports/esp32/gccollect.c), which
# overstates it by tens of KB on a WROOM and by megabytes with PSRAM. Replaceable in tests.
_esp32 = None
if IS_MICROPYTHON:
    from sys import platform as _platform

    if _platform == "esp32":  # not the fake esp32 module the simulator may have on its path
        import esp32 as _esp32

_CAP_DEFAULT = const(4096)  # MALLOC_CAP_DEFAULT: what gc_get_max_new_split() measures
_CAP_INTERNAL = const(2052)  # MALLOC_CAP_INTERNAL | MALLOC_CAP_8BIT: internal data RAM


def mem_free():
    """Free GC heap in bytes, or -1 where the runtime cannot tell (CPython). On the ESP32
    the largest free IDF block that gc.mem_free() adds is taken off again."""
    try:
        free = _gc.mem_free()  # type: ignore[attr-defined]
    except AttributeError:
        return -1
    if _esp32 is not None:
        largest = 0
        for h in _esp32.idf_heap_info(_CAP_DEFAULT):
            if h[2] > largest:
                largest = h[2]
        free -= largest
    return free if free > 0 else 0


def idf_heap():
    """(free, largest free block, lowest free ever) of the ESP32's internal data RAM, where
    Wi-Fi, lwIP, TLS buffers and I2S DMA live; None off the ESP32 port."""
    if _esp32 is None:
        return None
    free = largest = low = 0
    for h in _esp32.idf_heap_info(_CAP_INTERNAL):
        free += h[1]
        low += h[3]  # per region: a lower bound of the true low-water mark
        if h[2] > largest:
            largest = h[2]
    return free, largest, low


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
