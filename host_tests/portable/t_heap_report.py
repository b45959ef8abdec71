# meerkat_rt.compat.mem_free / idf_heap against the ESP32 port's gc and esp32 modules (fake
# esp32 from tools/meerkat_tools/fakes; a gc modelled on py/modgc.c here): with the split heap
# the port's gc.mem_free() is the free GC heap *plus* the largest free IDF block, so the
# heap low-water mark (link.heap_low) must take that block off again.
import esp32
import simworld
from meerkat_rt import compat

GC_FREE = 41000  # what the GC heap really has free


class PortGC:
    """The ESP32 port's gc.mem_free(): info.free + gc_get_max_new_split(), the largest free
    block of the MALLOC_CAP_DEFAULT heaps."""

    def mem_free(self):
        return GC_FREE + max(h[2] for h in esp32.idf_heap_info(4096))


def _with_port(fn):
    saved = compat._gc, compat._esp32
    compat._gc, compat._esp32 = PortGC(), esp32
    try:
        return fn()
    finally:
        compat._gc, compat._esp32 = saved


def test_mem_free_is_the_gc_heap_on_the_esp32():
    simworld.configure()  # the fake esp32's WROOM heaps: largest free block 35512
    assert PortGC().mem_free() == GC_FREE + 35512  # what the port's gc.mem_free() says
    assert _with_port(compat.mem_free) == GC_FREE


def test_mem_free_with_psram_is_not_megabytes():
    psram = 2 | 4 | 1024 | 4096  # 32BIT | 8BIT | SPIRAM | DEFAULT
    simworld.configure(idf_heaps=[[4192304, 4000000, 3997696, 3990000, psram], [79912, 35712, 35512, 35108, 6158]])
    assert _with_port(compat.mem_free) == GC_FREE
    free, largest, low = _with_port(compat.idf_heap)  # internal RAM only: where DMA and Wi-Fi live
    assert (free, largest, low) == (35712, 35512, 35108)


def test_idf_heap_sums_the_internal_data_regions():
    simworld.configure()
    assert _with_port(compat.idf_heap) == (35712 + 15036, 35512, 35108 + 15036)


def test_off_the_esp32_port_mem_free_is_gc_mem_free_and_there_is_no_idf_heap():
    assert compat._esp32 is None and compat.idf_heap() is None  # the unix port, CPython
    import gc

    if hasattr(gc, "mem_free"):
        gc.collect()
        assert abs(compat.mem_free() - gc.mem_free()) < 4096  # type: ignore[attr-defined]
    else:
        assert compat.mem_free() == -1
