# Freeze meerkat_rt into a MicroPython firmware image (the way to run it on a board without
# PSRAM: frozen bytecode, names and constants stay in flash instead of the ~112 KB heap).
#
#   cd micropython/ports/esp32
#   make BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/this/repo/firmware/manifest.py
#
# Then copy only config.json and boards/<name>.json to the board (main.py too, or import
# meerkat_rt from the REPL). _host.py is frozen as well but never imported on a board.
include("$(PORT_DIR)/boards/manifest.py")  # noqa: F821  (manifest functions are injected)
package("meerkat_rt", opt=3)  # noqa: F821
