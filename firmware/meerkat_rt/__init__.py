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


def start(config_path="config.json", board=None, repl=True):
    """Start the device in the background with a REPL beside it (micropython-lib aiorepl, prompt
    "--> "), in which status(), say("text"), talk(), stop(), interrupt() and close() act on the
    running device. Returns when it stops. Without aiorepl it says so and runs like run()."""
    from . import app

    return app.start(config_path, board, repl)


def say(text):
    """A text turn on the device started by start()."""
    from . import app

    app.say(text)


def talk():
    """Push-to-talk down (explicit_commit) on the device started by start()."""
    from . import app

    app.talk()


def stop():
    """Push-to-talk up: send what was said and commit the turn."""
    from . import app

    app.stop()


def interrupt():
    """Stop the reply now (barge-in, truncate with the played cursor)."""
    from . import app

    app.interrupt()


def close():
    """Close the channel of the device started by start(); start() returns."""
    from . import app

    app.close()
