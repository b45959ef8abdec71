# meerkat_rt: realtime voice client for ESP32 (MicroPython) speaking the Meerkat realtime
# channel protocol v2. `import meerkat_rt` is cheap: the application modules load on first use.
__version__ = "0.1.0"


def run(config_path="config.json"):
    """Start the device from a config file and run until Ctrl-C or a fatal error."""
    raise NotImplementedError("the application layer lands with the channel state machine")
