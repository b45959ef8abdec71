"""Host-side tools for the meerkat_rt ESP32 SDK: development server, board simulator, probe,
deploy and benchmarks. Runs on CPython; drives the firmware on the MicroPython unix port."""

__version__ = "0.1.0"
