# meerkat_rt: realtime voice client for ESP32 (MicroPython) speaking the Meerkat realtime
# channel protocol v2. `import meerkat_rt` is cheap: the application loads on first use.
__version__ = "0.1.0"


def run(config_path="config.json", board=None):
    """Start the device from a config file; blocks until Ctrl-C, close or a fatal error."""
    from . import app

    return app.run(config_path, board)


def status():
    """Print the counters of the device started by run()."""
    from . import app

    return app.status()
