# meerkat_rt.app: the device. Wires config, board, audio and channel together.
#
#   dev = Device("config.json", on_event=print_event)
#   asyncio.run(dev.run())          # Wi-Fi, then the channel until close() or a fatal error
#
# Allocation order matters on a 112 KB heap: the big buffers (playback ring, uplink ring, the
# WebSocket's buffers) are made first, in the constructor, before Wi-Fi and TLS fragment the
# heap; modules only needed to set up (config, board) are dropped afterwards.
from . import log
from .compat import idf_heap, print_exception, unload

_LEVELS = {"debug": log.DEBUG, "info": log.INFO, "warn": log.WARN, "error": log.ERROR}


def print_event(name, data):
    """The default event handler: the conversation as readable log lines."""
    if name == "input_transcript_final":
        log.info("user", "%s", data["text"])
    elif name == "output_text_delta":
        log.debug("reply", "%s", data["delta"])
    elif name == "barge_in":
        log.info("app", "barge-in (%s), heard %s ms of %s", data["reason"], data["audio_played_ms"], data["item_id"])
    elif name == "state":
        log.info("app", "channel %s", data)
    elif name == "reconnect":
        log.info("app", "reconnecting (attempt %d) in %d ms", data["attempt"], data["delay_ms"])


class Device:
    def __init__(self, cfg="config.json", board=None, on_event=print_event):
        import gc

        from . import board as boards
        from . import config as configs

        if type(cfg) is str:
            cfg = configs.load(cfg)
        else:
            cfg = configs.validate(cfg)
        self.cfg = cfg
        log.level = _LEVELS[cfg["log_level"]]
        b = board if type(board) is dict else boards.load(board or cfg["board"])
        self.board = b
        audio = cfg["audio"]
        mic = b["mic"] if cfg["role"] == "primary" else None
        if cfg["role"] == "primary" and mic is None:
            log.warn("app", "board %s has no usable microphone: text input only", b["name"])
        # The big buffers first, while the heap is still in one piece (at 110 KB a 15 KB
        # allocation fails on a fragmented heap with twice that free); the code comes after.
        # Audio chunks of any size stream through the playback ring, so it is sized for
        # latency, not for the server's chunk size.
        gc.collect()
        if not cfg["max_message"]:
            # A non-audio message is held whole in one block and decoded with the help of a
            # decode room of its size (leanjson.DecodeRoom): 2 x 4 KB on a 110 KB heap.
            cfg["max_message"] = 32768 if b["psram"] else 4096
        pbuf = bytearray(max(9600, audio.get("playback_ms", b["playback_ms"]) * 48) & ~1)
        frame_ms = audio["frame_ms"]
        slots = max(2, audio.get("ring_ms", b["ring_ms"]) // frame_ms)
        rbuf = bytearray(slots * frame_ms * 64) if mic is not None else None  # base64: 4/3 x 48
        frame_buf = bytearray(cfg["max_message"])  # the downlink's non-audio messages
        from .leanjson import DecodeRoom, room_size
        from .link import tx_size

        decode_room = DecodeRoom(room_size(cfg["max_message"]))  # so that its longest string can be made
        from .ws import WebSocket

        ws = WebSocket(None, cfg["max_message"], tx_size=tx_size(cfg))
        spk = b["speaker"]
        from .playback import Player

        self.player = Player(
            boards.make_speaker(b),
            capacity=pbuf,
            ibuf=spk["ibuf"],
            mode=audio.get("speaker_mode", spk["mode"]),
            block_ms=spk["block_ms"],
            gain_db=spk["gain_db"],
            margin_ms=audio["margin_ms"],
            reinit=boards.speaker_kwargs(b) if spk["flush"] else None,
        )
        self.ring = self.capture = None
        if mic is not None:
            from .capture import Capture
            from .ring import FrameRing
            from .vad import VAD

            self.ring = FrameRing(slots, frame_ms * 48, rbuf)
            self.capture = Capture(
                boards.make_mic(b),
                self.ring,
                VAD(sensitivity=audio["vad_sensitivity"], coupling_db=b["echo_coupling_db"]),
                bits=mic["bits"],
                shift=mic["shift"],
                highpass=mic["highpass"],
                speaker=self.player,  # its history by wall time: the echo of each block
            )
        tls = self._tls(cfg["tls"])
        boards = configs = None
        for name in ("config", "board", "tls"):
            unload(name)  # set-up code: let its bytecode be collected
        gc.collect()
        from .link import Link

        self.channel = Link(cfg, self.player, self.capture, self.ring, ws, frame_buf, on_event, tls, decode_room=decode_room)
        self.trace = None
        if cfg["trace_ms"]:  # the timeline trace: every app event passes it, run() samples
            from .trace import Tracer

            self.trace = Tracer(cfg["trace_ms"], self.player, self.capture, self.ring)
            self.trace.on_event = on_event
            self.channel.on_event = self.trace.event

    def _tls(self, cfg):
        if not cfg.get("ca_file") and not cfg["insecure"]:
            return None  # ws:// servers need none; a wss:// URL without a CA fails clearly
        from . import tls

        return tls.context(ca_file=cfg.get("ca_file"), insecure=cfg["insecure"])

    async def run(self):
        """Join Wi-Fi (when configured) and run the channel; returns its final state."""
        import asyncio

        if "wifi" in self.cfg:
            from . import wifi

            await wifi.connect(self.cfg["wifi"])
            unload("wifi")
        tls = self.cfg["tls"]
        if tls.get("ca_file") and not tls["insecure"]:  # certificate checks need the date
            from . import clock

            await clock.ensure(tls["ntp_host"])
            unload("clock")
        speaker = tracer = None
        if self.player.mode == "drain":
            speaker = asyncio.create_task(self.player.run())
        if self.trace is not None:
            tracer = asyncio.create_task(self.trace.run())
        try:
            return await self.channel.run()
        finally:
            if speaker is not None:
                speaker.cancel()
            if tracer is not None:
                tracer.cancel()

    # The app API: see the README.
    def send_text(self, text):
        self.channel.send_text(text)

    def start_talking(self):
        self.channel.start_talking()

    def stop_talking(self):
        self.channel.stop_talking()

    def interrupt(self):
        self.channel.interrupt()

    async def close(self):
        await self.channel.close()

    @property
    def state(self):
        return self.channel.state

    def stats(self):
        s = self.channel.stats()
        if self.capture is not None:
            s["vad_threshold"] = self.capture.vad.threshold if self.capture.vad else 0
        s["playback_chunks"] = self.player.chunks
        s["playback_dropped"] = self.player.dropped
        p = self.player  # the ESP32 port's speaker faults (playback.py): counted, played through
        s["playback_irq_lost"], s["playback_reinit_failures"], s["playback_lost_bytes"] = p.irq_lost, p.reinit_failures, p.lost_bytes
        idf = idf_heap()  # the ESP32's internal RAM, beside heap_low (the GC heap's)
        if idf is not None:
            s["idf_free"], s["idf_low"] = idf[0], idf[2]
        return s


_device = None


def run(config_path="config.json", board=None):
    """Blocking entry point for main.py and the REPL. Ctrl-C stops it."""
    import asyncio

    global _device
    try:
        _device = Device(config_path, board)
        state = asyncio.run(_device.run())
        log.info("app", "stopped: %s", state)
    except KeyboardInterrupt:
        log.info("app", "stopped by Ctrl-C")
    except Exception as exc:  # report, then return to the REPL instead of a reboot loop
        if _expected(exc):
            log.error("app", "%s", exc)
        else:
            log.error("app", "crashed: %r", exc)
            print_exception(exc)
    return _device


def _expected(exc):
    # Errors with a message written for the user (config, board, Wi-Fi, a fatal channel error):
    # print the message alone. Anything else is a bug: print the traceback too.
    from .link import ChannelError

    return isinstance(exc, (ChannelError, ValueError, OSError))


def status():
    """Print the counters of the device started by run() or start() (while it runs, from
    start()'s REPL, or after it stopped)."""
    if _device is None:
        print("meerkat_rt: not started; call meerkat_rt.start() or meerkat_rt.run()")
        return None
    s = _device.stats()
    for key in sorted(s):
        print("%-18s %s" % (key, s[key]))
    return s


########################################################################
# The live REPL: start() runs the device in the background and a REPL beside it (micropython-lib
# aiorepl, an asyncio task reading the console), in which the helpers below act on the running
# device. Installed on the board with `mpremote mip install aiorepl` (or meerkat-deploy
# --aiorepl); without it start() says so and runs the device like run().

REPL_HELPERS = ("status", "say", "talk", "stop", "interrupt", "close")


def start(config_path="config.json", board=None, repl=True):
    """Run the device with a REPL beside it (prompt "--> "): status(), say("text"), talk(),
    stop(), interrupt() and close() act on it. Returns when the device stops (close() or a
    fatal error); the normal REPL then comes back, with status() still showing its counters."""
    import asyncio

    global _device
    aiorepl = None
    if repl:
        try:
            import aiorepl  # type: ignore  # micropython-lib, installed separately
        except ImportError:
            print("meerkat_rt.start: aiorepl is not installed (mpremote mip install aiorepl, or "
                  "meerkat-deploy --aiorepl): running without a REPL; Ctrl-C stops the device")
    try:
        _device = Device(config_path, board)
        state = asyncio.run(_main(_device, aiorepl))
        log.info("app", "stopped: %s", state)
    except KeyboardInterrupt:
        log.info("app", "stopped by Ctrl-C")
    except Exception as exc:
        if _expected(exc):
            log.error("app", "%s", exc)
        else:
            log.error("app", "crashed: %r", exc)
            print_exception(exc)
    finally:
        _restore_ctrl_c()
    return _device


async def _main(dev, aiorepl):
    import asyncio

    prompt = None
    if aiorepl is not None:
        import __main__  # type: ignore

        g: dict = __main__.__dict__  # type: ignore  # the REPL's own namespace, plus the helpers
        for name in REPL_HELPERS:
            g[name] = globals()[name]
        g["status"] = _repl_status
        g["dev"] = dev
        prompt = asyncio.create_task(aiorepl.task(g))
    try:
        return await dev.run()
    finally:
        if prompt is not None:
            prompt.cancel()  # its finally re-enables Ctrl-C; let it run before returning
            try:
                await prompt
            except BaseException:  # CancelledError, or whatever the REPL task died of
                pass


def _repl_status():
    # status() at the "-->" prompt: the table only (the REPL would print the dict after it).
    status()


def _restore_ctrl_c():
    # aiorepl turns Ctrl-C off while it reads the console; a device that stopped under it must
    # not leave the normal REPL without it.
    try:
        import micropython

        micropython.kbd_intr(3)  # type: ignore
    except (ImportError, AttributeError):
        pass


def _running():
    if _device is None:
        raise RuntimeError("meerkat_rt: not started; call meerkat_rt.start()")
    return _device


def say(text):
    """A text turn (it interrupts a reply that is playing)."""
    _running().send_text(text)


def talk():
    """Push-to-talk down: the microphone opens (interrupting a reply)."""
    _running().start_talking()


def stop():
    """Push-to-talk up: what was said is sent and the turn committed."""
    _running().stop_talking()


def interrupt():
    """Stop the reply now (a barge-in with the played cursor), or a no-op interrupt."""
    _running().interrupt()


def close():
    """Close the channel politely; start() returns when it is closed."""
    import asyncio

    asyncio.create_task(_running().close())
