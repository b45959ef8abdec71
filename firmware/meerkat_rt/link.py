# meerkat_rt.link: the link loop and the app's channel API, the same on both server surfaces.
#
# One Link runs one conversation for as long as the device is up: a backend (protocol v2 or the
# live surface, only the configured one imported) bootstraps a fresh single-use token, connects
# and opens the channel; the link then pumps audio both ways until the channel ends, and
# reconnects with backoff and full jitter when the network or a retryable server condition ends
# it; it stops with a clear error when retrying cannot help. The turn and barge-in rules live in
# turns.Turns; what goes on the wire lives in the backend.
#
# The backend interface (v2/backend.py, live/backend.py):
#   surface, strict_order, ring_codec              what it is
#   await connect()       bootstrap, connect, open; raises Retry, ChannelError or Closing
#   send_control() -> bool, audio_ready() -> bool, send_audio(ring, slot), poll() -> bool
#   ended() -> bool       the channel is over (socket gone, or the server closed it)
#   finish()              after ended(): returns for a clean close we asked for, else raises
#                         Retry or ChannelError
#   room(n), check_text(text), send_text(text), interrupt(), truncate(item, index, ms) -> bool,
#   commit()              the requests of the app and of the ledger
#   await close(timeout_ms), await abandon(), await drop(), lost(), stats(dict)
import gc

from . import log
from .compat import const, mem_free, sleep_ms, ticks_diff, ticks_ms, unload
from .turns import Turns
from .ws import WebSocket, WebSocketError

# Channel states, as the app sees them.
IDLE = "idle"
CONNECTING = "connecting"
OPEN = "open"
RECONNECTING = "reconnecting"
CLOSED = "closed"
ERROR = "error"

_TICK_MS = const(5)  # pump sleep when idle: well under one 20 ms frame
# Only a channel that stayed open this long resets the reconnect budget: a server that opens
# and fails at once must not get an endless stream of new provider sessions.
_STABLE_MS = const(10000)
_EVENT_KINDS = const(24)  # distinct server event names counted; the rest go to "other"


class ChannelError(Exception):
    """A condition retrying cannot fix (configuration, capabilities, authentication)."""


class Retry(Exception):
    """A failed attempt that a later one may fix (server unreachable, refused token, ...)."""


class Closing(Exception):
    """close() was called while connecting."""


class SurfaceChanged(Exception):
    """server.surface "auto": the server speaks the other surface; connect again with it."""


def backoff_ms(attempt, initial_ms, max_ms, rand):
    """Full jitter (AWS style): uniform in [0, min(max, initial * 2**(attempt-1))]."""
    ceiling = initial_ms
    while attempt > 1 and ceiling < max_ms:
        ceiling <<= 1
        attempt -= 1
    return rand(min(ceiling, max_ms) + 1)


def _randint(n):
    import random

    return random.getrandbits(16) * n >> 16


class Link:
    def __init__(self, cfg, player, capture=None, ring=None, ws=None, frame_buf=None, on_event=None, tls_context=None, rand=_randint, backend=None, decode_room=None):
        # ws, frame_buf and decode_room: the WebSocket, the downlink's frame buffer (max_message bytes)
        # and its decode room (leanjson.DecodeRoom), allocated by the app before the code loads
        # (docs/architecture.md 1); made here when not given (tests). backend: a ready backend
        # object (tests), else the configured one.
        self.cfg = cfg
        self.player = player
        self.capture = capture
        self.ring = ring
        self.on_event = on_event
        self.tls = tls_context
        self.rand = rand
        self.primary = cfg["role"] == "primary"
        self.explicit = cfg["turning_mode"] == "explicit_commit"
        if frame_buf is None:
            frame_buf = bytearray(cfg["max_message"])
        self.frame_buf = frame_buf
        if decode_room is None:
            from .leanjson import DecodeRoom, room_size

            decode_room = DecodeRoom(room_size(cfg["max_message"]))
        self.decode_room = decode_room
        if ws is None:
            ws = WebSocket(None, cfg["max_message"], tx_size=tx_size(cfg))
        self.ws = ws
        self.state = IDLE
        self.open = False
        self.error = None
        self._stop = False
        self.closing = False  # close() called: no more input, the close on its way
        self._streaming = False
        self.reconnects = 0
        self.events = {}  # server event name -> count (bounded: "other" beyond)
        self.audio_frames_sent = 0
        self.heap_low = mem_free()
        self._t_heap = ticks_ms()
        surface = cfg["server"]["surface"]
        self.turns = Turns(cfg, player, capture, ring, self, surface != "live")
        self.backend = backend if backend is not None else self._make_backend("v2" if surface == "v2" else "live")

    def _make_backend(self, surface):
        if surface == "v2":
            from .v2.backend import Backend
        else:
            from .live.backend import Backend
        b = Backend(self, auto=self.cfg["server"]["surface"] == "auto")
        self.turns.strict_order = b.strict_order
        if surface == "v2" and not self.turns.half_duplex:
            # surface auto found protocol v2 (config refuses full duplex with v2 set outright)
            log.warn("link", "protocol v2 cancels a reply on any input: audio.duplex full runs as half")
            self.turns.half_duplex = True
        if self.ring is not None:
            self.ring.set_codec(b.ring_codec)
        return b

    ########################################################################
    # App API

    def send_text(self, text):
        self._require_primary()
        self.backend.check_text(text)
        self._room(2)
        self.turns.user_text()
        self.backend.send_text(text)
        if self.explicit:
            self.backend.commit()
            self.turns.text_committed()

    def start_talking(self):
        """Push-to-talk down (explicit_commit): interrupts a reply, opens the microphone."""
        self._require_primary()
        self._room(2)
        self.turns.start_talking()

    def stop_talking(self):
        """Push-to-talk up: send what was captured so far, then commit the turn."""
        self._require_primary()
        self.turns.stop_talking()

    def interrupt(self):
        self._require_primary()
        self._room(2)
        self.turns.interrupt()

    async def close(self, timeout_ms=2000):
        """Close the channel politely (bounded by timeout_ms) and stop the run loop."""
        self.closing = True  # no more input from here; connecting stops before the open
        if self.state == OPEN:
            await self.backend.close(timeout_ms)
        self._stop = True
        await self.backend.drop()
        if self.state != ERROR:
            self._set_state(CLOSED)

    def stats(self):
        t = self.turns
        s = {
            "state": self.state,
            "surface": self.backend.surface,
            "reconnects": self.reconnects,
            "barge_ins": t.barge_ins,
            "truncates": list(t.truncates),
            "truncate_count": t.truncate_count,
            "events": dict(self.events),
            "audio_frames_sent": self.audio_frames_sent,
            "audio_received_ms": t.audio_received // 48,
            "late_chunks": t.late_chunks,
            "late_events": t.late_events,
            "bytes_sent": self.ws.bytes_out,
            "bytes_received": self.ws.bytes_in,
            "heap_low": self.heap_low,
        }
        self.backend.stats(s)
        ring = self.ring
        if ring is not None:
            s["frames_captured"] = ring.captured
            s["frames_sent"] = ring.sent
            s["frames_dropped"] = ring.dropped
            s["frames_discarded"] = ring.discarded
            s["frames_pending"] = ring.pending
        s["underruns"] = self.player.underruns
        if self.error:
            s["error"] = self.error
        return s

    ########################################################################
    # For the backends and the ledger

    def emit(self, name, data):
        if self.on_event is not None:
            try:
                self.on_event(name, data)
            except Exception as exc:  # an app callback must not take the channel down
                log.error("link", "event handler failed on %s: %r", name, exc)

    def count(self, name):
        ev = self.events
        if name not in ev and len(ev) >= _EVENT_KINDS:
            name = "other"  # a server inventing event names must not grow the heap
        ev[name] = ev.get(name, 0) + 1

    def default_tls(self):
        # A wss:// server but no tls section: verify against the platform's trust store where
        # there is one (CPython); a board has none, which is a configuration error, not
        # something a reconnect could fix.
        if self.tls is not None:
            return self.tls
        from . import tls

        try:
            self.tls = tls.context()
            return self.tls
        except ValueError as exc:
            raise ChannelError("the server's WebSocket is wss://: %s (config.json tls.ca_file, DER)" % exc)
        finally:
            unload("tls")

    ########################################################################
    # Run loop: connect, stream, reconnect.

    async def run(self):
        """Run until close() or a non-retryable error. Returns the final state."""
        import asyncio

        # While connecting or waiting to reconnect, the microphone and the speaker carry on
        # (the I2S DMA would overflow otherwise and audio would be lost uncounted).
        local = asyncio.create_task(self._local_pump())
        try:
            return await self._run()
        finally:
            local.cancel()

    async def _local_pump(self):
        while True:
            if not self._streaming:
                self._pump_local()
            await sleep_ms(_TICK_MS)

    async def _run(self):
        rc = self.cfg["reconnect"]
        attempt = 0
        t_first_failure = None
        switched = 0  # surface changes since the last open
        while not self._stop:
            self._set_state(CONNECTING if attempt == 0 and not self.reconnects else RECONNECTING)
            t_open = None
            try:
                await self.backend.connect()
                t_open = ticks_ms()
                switched = 0
                self._set_state(OPEN)
                await self._stream()
            except ChannelError as exc:
                self._fail(str(exc))
                await self.backend.abandon()
                break
            except SurfaceChanged as exc:
                switched += 1
                if switched > 1:
                    # Both answered "no such method": without this the device would flip
                    # between the surfaces at full speed, forever. Retrying cannot fix it.
                    self._fail("the server has neither live/open nor realtime/open_info: Meerkat 0.6.5 and later"
                               " need their live WebSocket listener on, 0.6.0-0.6.4 their realtime one")
                    await self.backend.abandon()
                    break
                log.info("link", "%s", exc)
                await self.backend.drop()
                other = "v2" if self.backend.surface == "live" else "live"
                self.ws.set_sink(None)  # the old surface's code goes first: nothing may hold it
                del self.backend  # (nothing may hold the old code while the new loads)
                for name in ("backend", "protocol", ""):
                    unload(("live" if other == "v2" else "v2") + ("." + name if name else ""))
                gc.collect()
                self.backend = self._make_backend(other)
                continue
            except Closing:
                pass
            except (Retry, OSError, WebSocketError) as exc:
                if getattr(exc, "fatal", False):  # ws: the server's certificate failed verification
                    self._fail(str(exc))  # the same CA, host name and clock next time: no retries
                    await self.backend.abandon()
                    break
                log.warn("link", "%s", exc)
            if not self._stop and self.state == OPEN:
                self._set_state(RECONNECTING)  # at once: no barge-in goes to a dead link
            await self.backend.drop()
            self.turns.link_lost()
            self.backend.lost()
            if self._stop or self.closing or self.state in (CLOSED, ERROR):
                break
            if t_open is not None and ticks_diff(ticks_ms(), t_open) >= _STABLE_MS:
                attempt = 0  # it worked for a while: a fresh reconnect budget
                t_first_failure = None
            attempt += 1
            if t_first_failure is None:
                t_first_failure = ticks_ms()
            if (rc["max_attempts"] and attempt > rc["max_attempts"]) or (
                rc["max_total_ms"] and ticks_diff(ticks_ms(), t_first_failure) > rc["max_total_ms"]
            ):
                self._fail("gave up after %d reconnect attempts" % (attempt - 1))
                break
            delay = backoff_ms(attempt, rc["initial_backoff_ms"], rc["max_backoff_ms"], self.rand)
            self.reconnects += 1
            self.emit("reconnect", {"attempt": attempt, "delay_ms": delay})
            log.info("link", "reconnect attempt %d in %d ms", attempt, delay)
            t0 = ticks_ms()
            while not self._stop and ticks_diff(ticks_ms(), t0) < delay:
                await sleep_ms(_TICK_MS)
        if self.state not in (ERROR, CLOSED):
            self._set_state(CLOSED)
        return self.state

    async def _stream(self):
        self._streaming = True  # from here this loop pumps everything
        b = self.backend
        try:
            while not self._stop:
                busy = self._pump_once()
                if b.ended():
                    break
                await sleep_ms(0 if busy else _TICK_MS)
        finally:
            self._streaming = False
        if self._stop:
            return
        b.finish()  # raises unless the end was a close we asked for
        self._set_state(CLOSED)

    ########################################################################
    # The pump: everything that can be done now, without waiting.

    def pump_once(self):
        """One pass of the pump, for callers that run it themselves (close(), tests)."""
        return self._pump_once()

    def _pump_once(self):
        b = self.backend
        busy = self._pump_local()
        busy |= b.send_control()
        busy |= self._send_audio()
        busy |= b.poll()
        return busy

    def _pump_local(self):
        busy = False
        cap = self.capture
        if cap is not None:
            busy = bool(cap.poll(ticks_ms()))
            if busy and cap.take_vad_event() > 0:
                self.turns.vad_onset()
        busy |= bool(self.player.poll())
        self.turns.check()
        now = ticks_ms()
        if ticks_diff(now, self._t_heap) >= 2000:
            # The heap low-water of live data: collect first, or garbage would count as used.
            # A collection every 2 s also keeps each one short (a few ms at 112 KB).
            self._t_heap = now
            gc.collect()
            self.decode_room.arm()  # (given up for a big message: back once its strings are gone)
            free = mem_free()
            if 0 <= free < self.heap_low:
                self.heap_low = free
        return busy

    def _send_audio(self):
        ring = self.ring
        b = self.backend
        if ring is None or self.closing or not self.open or not b.audio_ready():
            return False
        turns = self.turns
        i = ring.peek()
        if i < 0:
            if turns.commit_seq >= 0:
                turns.commit()
            return False
        seq = ring.seq(i)
        if turns.commit_seq >= 0 and seq > turns.commit_seq:
            turns.commit()
            return False
        b.send_audio(ring, i)
        ring.mark_sent()
        self.audio_frames_sent += 1
        turns.sent_audio(seq)
        return True

    ########################################################################

    def _room(self, n):
        # App calls queue requests; they wait while the channel is not open. Refuse a call that
        # would overflow the queue rather than drop a request later.
        if self.closing:
            raise ChannelError("the channel is closing")
        if not self.backend.room(n):
            raise ChannelError("the channel is %s: too many requests waiting; try again when it is open" % self.state)

    def _require_primary(self):
        if not self.primary:
            raise ChannelError("observer channels are read-only")

    def _set_state(self, state):
        if state != self.state:
            self.state = state
            self.open = state == OPEN
            self.emit("state", state)

    def _fail(self, message):
        self.error = message
        log.error("link", "%s", message)
        self._set_state(ERROR)


def tx_size(cfg):
    """Send buffer for the largest audio frame of either surface (v2: base64 in a JSON
    envelope of about 110 bytes) plus the WebSocket header; text input must fit it too."""
    return cfg["audio"]["frame_ms"] * 64 + 256

