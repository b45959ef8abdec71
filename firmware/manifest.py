# Freeze meerkat_rt into a MicroPython firmware image: the way to run it on a board without
# PSRAM (bytecode, names and constants stay in flash instead of the ~110 KB heap). One manifest
# for both ports it is built for:
#
#   ESP32 (ESP-IDF; `meerkat-image --esp32 ESP32_GENERIC --dry-run` prints the full lines):
#     make -C micropython/ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/abs/path/firmware/manifest.py
#   unix port test images (32-bit like the ESP32, for the host tests): `meerkat-image frozen32`
#
# Then copy only config.json and boards/<name>.json to the board (main.py too, or import
# meerkat_rt from the REPL). The whole package tree is frozen, subpackages included;
# _host.py is frozen as well but never imported on a board.
#
# Keep what the port freezes by default (asyncio, ssl, ntptime, ...): the ESP32 port has it in
# $(PORT_DIR)/boards/manifest.py, the unix port in its variant's manifest. The manifest tool
# gives a manifest no way to ask which port it is building for, so try the ESP32 file and fall
# back to the unix one only when that file does not exist: any other error in it still stops
# the build.
try:
    include("$(PORT_DIR)/boards/manifest.py")  # noqa: F821  (manifest functions are injected)
except Exception as exc:
    # makemanifest wraps the open() failure: the original error is the exception's context.
    missing = exc.__context__
    if not isinstance(missing, FileNotFoundError) or not str(missing.filename).endswith("boards/manifest.py"):
        raise
    include("$(PORT_DIR)/variants/standard/manifest.py")  # noqa: F821
package("meerkat_rt", opt=3)  # noqa: F821
