# Fake `esp32` for host tests: idf_heap_info() as the ESP32 port returns it (a list of
# (total, free, largest free block, minimum free ever) per ESP-IDF heap region whose
# capabilities include all the bits asked for), from simworld's idf_heaps, by default a WROOM
# (no PSRAM) after Wi-Fi joined. Capability bits are ESP-IDF's MALLOC_CAP_*.
import simworld

HEAP_EXEC = 1  # MALLOC_CAP_EXEC
HEAP_DATA = 4  # MALLOC_CAP_8BIT
_INTERNAL_DATA = 2 | 4 | 8 | 2048 | 4096  # 32BIT | 8BIT | DMA | INTERNAL | DEFAULT
_IRAM = 1 | 2 | 2048  # EXEC | 32BIT | INTERNAL

WROOM = [
    [113840, 0, 0, 0, _INTERNAL_DATA],  # holds the GC heap's first area
    [79912, 35712, 35512, 35108, _INTERNAL_DATA],
    [15072, 15036, 15036, 15036, _INTERNAL_DATA],
    [16648, 4, 4, 4, _IRAM],
]


def idf_heap_info(capabilities):
    heaps = simworld.get().cfg["idf_heaps"] or WROOM
    return [tuple(h[:4]) for h in heaps if h[4] & capabilities == capabilities]
