# meerkat_rt.channel: the realtime channel state machine.
#
# One Channel runs one conversation for as long as the device is up: bootstrap a fresh open
# token, connect, send channel.open as the very first frame, check the capabilities, then pump
# audio both ways until the channel closes; reconnect with backoff and full jitter when the
# network or a retryable server condition ends it; stop with a clear error when retrying cannot
# help. Protocol rules it keeps (../shared/reference/meerkat-realtime-v2.md sections 4-9):
#   - no WebSocket ping before channel.opened; a fresh open_info for every attempt;
#   - half duplex: the microphone is held from turn_committed until the reply has finished
#     playing or was interrupted, because any input after reply output began cancels the reply;
#   - barge-in: stop playback at once, channel.interrupt (unless the server interrupted), and
#     channel.barge_in_truncate once per item, only for an item whose id the server gave, never
#     for an item that finished playing, with audio_played_ms = what the user really heard;
#   - channel.error is not terminal; channel.closed or a dropped socket is.
import gc

from . import log, protocol
from .compat import const, mem_free, sleep_ms, ticks_diff, ticks_ms, ticks_us, unload
from .downlink import Downlink
from .ws import WebSocket, WebSocketError

# Channel states, as the app sees them.
IDLE = "idle"
CONNECTING = "connecting"
OPEN = "open"
RECONNECTING = "reconnecting"
CLOSED = "closed"
ERROR = "error"

# Close reasons and error codes after which a new channel (new token) may succeed.
_RETRYABLE = (
    "invalid_open_token",
    "open_token_expired",
    "target_busy",
    "invalid_target",
    "runtime_not_ready",
    "runtime_internal",
    "channel_not_bound",
    "provider_session_closed",
    "provider_session_failed",
    "provider_session_unavailable",
    "reconnect_exhausted",
    "status_failed",
    "close_failed",
    "invalid_request",
    "binding_released",
    "content_filtered",  # one filtered reply: the next conversation may well be fine
    "stuck_reconnecting",  # ours: the server kept answering channel_reconnecting (below)
)

_TICK_MS = const(5)  # pump sleep when idle: well under one 20 ms frame
# A reply that goes quiet this long (no event, nothing left to play) without turn_completed is
# given up: the mic must never stay held because an end-of-turn event was lost. Tool calls
# (15 s by default) refresh it with their own events.
_REPLY_IDLE_MS = const(30000)
_CTRL_QUEUE = const(8)
# Only a channel that stayed open this long resets the reconnect budget: a server that opens
# and fails at once must not get an endless stream of new provider sessions.
_STABLE_MS = const(10000)
# This many channel_reconnecting answers in a row with no status change: the server's provider
# session is gone for good while its status still reads ready (reference 5.10, 11.7). Reopen.
_STUCK_ERRORS = const(25)


class ChannelError(Exception):
    """A condition retrying cannot fix (configuration, capabilities, authentication)."""


class _Retry(Exception):
    """A failed attempt that a later one may fix (server unreachable, refused token, ...)."""


class _Closing(Exception):
    """close() was called while connecting."""


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


class Channel:
    def __init__(self, cfg, player, capture=None, ring=None, on_event=None, tls_context=None, rand=_randint, ws=None):
        # ws: a WebSocket-like object for tests; by default one is made here.
        self.cfg = cfg
        self.player = player
        self.capture = capture
        self.ring = ring
        self.on_event = on_event
        self.tls = tls_context
        self.rand = rand
        self.primary = cfg["role"] == "primary"
        self.explicit = cfg["turning_mode"] == "explicit_commit"
        self.template = protocol.AudioInputTemplate()
        frame_b64 = (cfg["audio"]["frame_ms"] * 48 + 2) // 3 * 4
        self.down = Downlink(player, self)
        if ws is None:
            ws = WebSocket(cfg["max_message"], tx_size=self.template.frame_len(frame_b64) + 16, sink=self.down)
        self.ws = ws
        self.state = IDLE
        self.close_reason = None
        self.error = None
        self.capabilities = None
        self._ctrl = []  # control frames waiting for the send buffer (bounded)
        self._stop = False
        self._closing = False  # close() called: no more input, channel.close on its way
        self._fatal = None  # a non-retryable condition found while parsing (raised by the loop)
        self._streaming = False
        self._opened = False
        self._server_paused = False  # channel.status reconnecting: hold input until ready
        self._audio_off = False  # audio_format_mismatch: the server refuses our audio
        self._stuck = 0  # channel_reconnecting answers in a row
        # turn state
        self._reply = False  # an assistant turn is in progress (mic held)
        self._reply_done = False  # turn_completed (or nothing more will come)
        self._t_reply = 0  # ticks of the reply's latest sign of life
        self._tools = 0  # tool calls requested and not finished (they may take long)
        self._drop_audio = False  # after an interruption, until the next turn_committed
        self._item = None  # id of the newest assistant item with audio
        self._index = 0  # its content_index
        self._finished_ids = []  # items whose audio is complete (a newer item started)
        # Items of the current provider session. Only these may be truncated: after a new
        # channel or a provider reconnect the server no longer knows older ids, and a truncate
        # naming one would close the channel (reference 9.2).
        self._session_items = []
        self._truncated = []  # items already truncated (at most once per item)
        self._stopped = []  # interrupted items: their late audio is dropped
        self._talking = not self.explicit  # push-to-talk state (always on in provider_managed)
        if self.explicit and ring is not None:
            ring.hold()  # push-to-talk: nothing leaves the microphone until start_talking()
        self._staged_ms = 0  # audio sent since start_talking (explicit_commit)
        self._commit_seq = -1  # send frames up to this capture seq, then commit
        # counters
        self.reconnects = 0
        self.barge_ins = 0
        self.truncates = []  # the last few (item_id, audio_played_ms) sent
        self.truncate_count = 0
        self.events = {}  # server event type -> count
        self.audio_frames_sent = 0
        self.audio_received_ms = 0  # assistant audio taken by the player
        self.late_chunks = 0
        self.late_events = 0
        self.heap_low = mem_free()
        self._t_heap = ticks_ms()

    ########################################################################
    # App API

    def send_text(self, text):
        self._require_primary()
        frame = protocol.text_input_frame(text).encode()
        if len(frame) + 14 > len(self.ws.tx):  # header + payload in the one send buffer
            raise ValueError("text of %d bytes is too long for this channel (at most about %d)" % (len(text), len(self.ws.tx) - 80))
        self._room(2)
        if self._reply:
            self._barge_in("text")
        self._queue(frame)
        if self.explicit:
            self._queue(protocol.COMMIT_TURN_FRAME)
            self._start_reply()

    def start_talking(self):
        """Push-to-talk down (explicit_commit): interrupts a reply, opens the microphone."""
        self._require_primary()
        self._room(2)
        if self._reply:
            self._barge_in("talk")
        if self.ring is not None:
            self.ring.release(0)
        self._talking = True
        self._staged_ms = 0
        self._commit_seq = -1

    def stop_talking(self):
        """Push-to-talk up: send what was captured so far, then commit the turn."""
        self._require_primary()
        if not self._talking:
            return
        self._talking = False
        ring = self.ring
        # Frames captured up to now still go out; _send_audio commits after the last of them
        # (and the mic is held from there).
        self._commit_seq = ring.captured - 1 if ring is not None else -1
        if self._commit_seq < 0 or ring is None or ring.peek() < 0:
            self._commit()

    def interrupt(self):
        self._require_primary()
        self._room(2)
        if self._reply:
            self._barge_in("api")
        else:
            self._queue(protocol.INTERRUPT_FRAME)  # a no-op for the server when idle

    async def close(self, timeout_ms=2000):
        """Send channel.close, wait (bounded) for channel.closed, stop the run loop."""
        self._closing = True  # no more input from here; connecting stops before channel.open
        if self.state == OPEN and self.ws.open:
            self._ctrl.append(protocol.CLOSE_FRAME)
            t0 = ticks_ms()
            while self.ws.open and self.close_reason is None and ticks_diff(ticks_ms(), t0) < timeout_ms:
                if not self._streaming:  # run() is not pumping (it ended, or never ran)
                    self._pump_once()
                await sleep_ms(_TICK_MS)
        self._stop = True
        await self.ws.close()
        if self.state != ERROR:
            self._set_state(CLOSED)

    def stats(self):
        s = {
            "state": self.state,
            "reconnects": self.reconnects,
            "barge_ins": self.barge_ins,
            "truncates": list(self.truncates),
            "truncate_count": self.truncate_count,
            "events": dict(self.events),
            "audio_frames_sent": self.audio_frames_sent,
            "audio_received_ms": self.audio_received_ms,
            "late_chunks": self.late_chunks,
            "late_events": self.late_events,
            "downlink_dropped": self.down.dropped,
            "unknown": self.down.unknown,
            "bytes_sent": self.ws.bytes_out,
            "bytes_received": self.ws.bytes_in,
            "heap_low": self.heap_low,
        }
        ring = self.ring
        if ring is not None:
            s["frames_captured"] = ring.captured
            s["frames_sent"] = ring.sent
            s["frames_dropped"] = ring.dropped
            s["frames_discarded"] = ring.discarded
            s["frames_pending"] = ring.pending
        s["underruns"] = self.player.underruns
        if self.close_reason:
            s["close_reason"] = self.close_reason
        if self.error:
            s["error"] = self.error
        return s

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
        while not self._stop:
            self._set_state(CONNECTING if attempt == 0 and not self.reconnects else RECONNECTING)
            t_open = None
            try:
                await self._connect_and_open()
                t_open = ticks_ms()
                await self._stream()
            except ChannelError as exc:
                self._fail(str(exc))
                await self._abandon()
                break
            except _Closing:
                pass
            except (_Retry, WebSocketError, OSError) as exc:
                log.warn("chan", "%s", exc)
            if not self._stop and self.state == OPEN:
                self._set_state(RECONNECTING)  # at once: no barge-in goes to a dead link
            await self.ws.close()
            self._link_lost()
            if self._stop or self._closing or self.state in (CLOSED, ERROR):
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
            self._emit("reconnect", {"attempt": attempt, "delay_ms": delay})
            log.info("chan", "reconnect attempt %d in %d ms", attempt, delay)
            t0 = ticks_ms()
            while not self._stop and ticks_diff(ticks_ms(), t0) < delay:
                await sleep_ms(_TICK_MS)
        if self.state not in (ERROR, CLOSED):
            self._set_state(CLOSED)
        return self.state

    async def _abandon(self):
        # Stopping for good: release the server's side too (an open channel keeps a provider
        # session bound, and the next device would get target_busy).
        if self._opened and self.ws.open and self.ws.can_send():
            self.ws.send_text_nowait(protocol.CLOSE_FRAME)
            self.ws.flush()
        await self.ws.close()

    async def _connect_and_open(self):
        cfg = self.cfg
        settings = dict(cfg["server"])
        settings["target"] = cfg["target"]
        settings["role"] = cfg["role"]
        settings["turning_mode"] = cfg["turning_mode"]
        if "channel_config" in cfg:
            settings["channel_config"] = cfg["channel_config"]
        if "server_reconnect_policy" in cfg:  # the server's own provider reconnect cycle
            settings["reconnect_policy"] = cfg["server_reconnect_policy"]
        info = await self._bootstrap(settings)
        if info["ws_url"].startswith("wss://") and self.tls is None:
            self.tls = self._default_tls()
        if self._closing:
            raise _Closing()  # close() came while bootstrapping: spend no token on it
        await self.ws.connect(info["ws_url"], tls=self.tls, timeout_ms=cfg["server"]["timeout_ms"])
        if self._closing:
            raise _Closing()
        self._opened = False
        self._fatal = None
        self.close_reason = None
        self.ws.send_text_nowait(protocol.open_frame(info["open_token"], cfg["role"], cfg["turning_mode"]))
        info = None  # the token is single use; do not keep it around
        t0 = ticks_ms()
        timeout = cfg["server"]["open_timeout_ms"]
        while not self._opened:
            if self._fatal is not None:
                raise ChannelError(self._fatal)
            if not self.ws.open or self.close_reason is not None:
                code = self.close_reason or "socket closed before channel.opened"
                if code in _RETRYABLE or code.startswith("socket"):
                    raise _Retry("channel.open refused: %s" % code)
                raise ChannelError("channel.open refused: %s" % code)
            if ticks_diff(ticks_ms(), t0) > timeout:
                raise _Retry("no channel.opened within %d ms" % timeout)
            self.ws.poll()
            await sleep_ms(_TICK_MS)
        if self._fatal is not None:
            raise ChannelError(self._fatal)
        self._audio_off = False  # a new channel: its format was checked in channel.opened
        ka = cfg["keepalive"]
        if ka["interval_ms"]:
            self.ws.keepalive(ka["interval_ms"], ka["timeout_ms"])  # only now: never before opened
        self._set_state(OPEN)

    def _default_tls(self):
        # A wss:// server but no tls section: verify against the platform's trust store where
        # there is one (CPython); a board has none, which is a configuration error, not
        # something a reconnect could fix.
        from . import tls

        try:
            return tls.context()
        except ValueError as exc:
            raise ChannelError("the server's ws_url is wss://: %s (config.json tls.ca_file, DER)" % exc)
        finally:
            unload("tls")

    async def _bootstrap(self, settings):
        # Loaded for each (re)connect and dropped again: about 6 KB of heap back while streaming.
        from . import bootstrap

        try:
            return await bootstrap.fetch_open_info(settings)
        except bootstrap.BootstrapError as exc:
            if exc.retryable:
                raise _Retry(str(exc))
            raise ChannelError(str(exc))
        finally:
            unload("bootstrap")

    async def _stream(self):
        self._streaming = True  # from here this loop pumps everything
        try:
            while not self._stop:
                busy = self._pump_once()
                if not self.ws.open or self.close_reason is not None:
                    break
                await sleep_ms(0 if busy else _TICK_MS)
        finally:
            self._streaming = False
        reason = self.close_reason
        if reason is not None and reason not in _RETRYABLE:
            if reason == "client_closed" or self._stop:
                self._set_state(CLOSED)
                return
            raise ChannelError("the server closed the channel: %s" % reason)

    ########################################################################
    # The pump: everything that can be done now, without waiting.

    def _pump_once(self):
        busy = self._pump_local()
        busy |= self._send_control()
        busy |= self._send_audio()
        # The downlink holds (the ws stops reading: TCP backpressure) while the player cannot
        # take another staging buffer of decoded audio; see Downlink.hold.
        busy |= bool(self.ws.poll())
        return busy

    def _pump_local(self):
        busy = False
        cap = self.capture
        if cap is not None:
            busy = bool(cap.poll(ticks_ms()))
            ev = cap.take_vad_event() if busy else 0
            if ev > 0 and self._reply and self.state == OPEN and self.primary and self._talking:
                self._barge_in("vad")
        busy |= bool(self.player.poll())
        self._check_reply_end()
        now = ticks_ms()
        if ticks_diff(now, self._t_heap) >= 2000:
            # The heap low-water of live data: collect first, or garbage would count as used.
            # A collection every 2 s also keeps each one short (a few ms at 112 KB).
            self._t_heap = now
            gc.collect()
            free = mem_free()
            if 0 <= free < self.heap_low:
                self.heap_low = free
        return busy

    def _room(self, n):
        # App calls queue control frames; they wait while the channel is not open. Refuse a call
        # that would overflow the queue rather than drop a frame later.
        if len(self._ctrl) + n > _CTRL_QUEUE:
            raise ChannelError("the channel is %s: too many requests waiting; try again when it is open" % self.state)
        if self._closing:
            raise ChannelError("the channel is closing")

    def _queue(self, frame):
        self._ctrl.append(frame)

    def _send_control(self):
        # Queued control frames go out together, in one pass, each written at once: a
        # barge-in's interrupt and truncate reach the server back to back, not after the reply
        # audio the server had streamed ahead has been read and dropped. While the server's
        # provider reconnects they wait (it would discard them), except channel.close.
        ws = self.ws
        sent = False
        while self._ctrl and self.state == OPEN and ws.can_send():
            if self._server_paused and self._ctrl[0] is not protocol.CLOSE_FRAME:
                break
            ws.send_text_nowait(self._ctrl.pop(0))
            ws.flush()
            sent = True
        return sent

    def _send_audio(self):
        ring = self.ring
        if ring is None or self.state != OPEN or self._server_paused or self._audio_off or self._closing:
            return False
        if self._ctrl or not self.ws.can_send():
            return False
        i = ring.peek()
        if i < 0:
            if self._commit_seq >= 0:
                self._commit()
            return False
        if self._commit_seq >= 0 and ring.seq(i) > self._commit_seq:
            self._commit()
            return False
        ws = self.ws
        t = self.template
        n = ring.slot_len
        ws.begin_text(t.frame_len(n))
        ws.put(t.prefix, 0, len(t.prefix))
        ws.put(ring.slot_buffer, ring.slot_offset(i), n)
        ws.put(t.suffix, 0, len(t.suffix))
        ws.end_frame()
        ring.mark_sent()
        self.audio_frames_sent += 1
        if self.explicit:
            self._staged_ms += self.cfg["audio"]["frame_ms"]
        return True

    def _commit(self):
        self._commit_seq = -1
        if self._staged_ms < 100:
            if self.ring is not None:
                self.ring.hold()  # the button is up: the microphone closes either way
            self._emit("error", {"code": "turn_too_short", "message": "%d ms of audio; at least 100 ms needed" % self._staged_ms})
            log.warn("chan", "turn not committed: %d ms of audio, the server needs 100 ms", self._staged_ms)
            return
        self._queue(protocol.COMMIT_TURN_FRAME)
        self._start_reply()

    ########################################################################
    # Turns and barge-in.

    def _start_reply(self):
        self._reply = True
        self._reply_done = False
        self._t_reply = ticks_ms()
        self._drop_audio = False
        if self.ring is not None:
            self.ring.hold()

    def _check_reply_end(self):
        # The reply is over when the server said so and the speaker has played everything.
        if not self._reply or not self.player.idle():
            return
        if not self._reply_done and not self._tools and ticks_diff(ticks_ms(), self._t_reply) > _REPLY_IDLE_MS:
            log.warn("chan", "the reply went quiet without turn_completed: listening again")
            self._reply_done = True
        if self._reply_done:
            self._reply = False
            self._listen(0)
            self._emit("reply_done", self._item)

    def _listen(self, preroll_ms):
        if self.ring is not None and self._talking:
            self.ring.release(preroll_ms)

    def _barge_in(self, why):
        player = self.player
        item = player.current_item()
        if item is None:
            item = self._item
        heard = -1
        if (
            item is not None
            and item in self._session_items
            and item not in self._truncated
            and not (item in self._finished_ids and player.finished(item))
        ):
            heard = player.heard_ms(item)  # before the stop: it flushes what was queued
        player.stop_now()
        if why != "server":
            self._queue(protocol.INTERRUPT_FRAME)
        if heard >= 0:
            self._queue(protocol.barge_in_truncate_frame(item, self._index, heard))
            _remember(self._truncated, item)
            _remember(self.truncates, (item, heard), 4)
            self.truncate_count += 1
        if item is not None:
            _remember(self._stopped, item)
        self._reply = False
        self._drop_audio = True
        self.barge_ins += 1
        ev = {"reason": why, "item_id": item, "audio_played_ms": heard, "t_us": ticks_us()}
        cap = self.capture
        if why == "vad" and cap is not None and cap.vad is not None:
            # What the detector saw: for tuning vad_sensitivity and the echo coupling.
            ev["mic_level"] = cap.level
            ev["threshold"] = cap.vad.threshold
            ev["speaker_level"] = cap.vad.speaker
        self._emit("barge_in", ev)
        log.info("chan", "barge-in (%s): item %s heard %d ms", why, item, heard)
        self._listen(self.cfg["audio"]["preroll_ms"])

    def _link_lost(self):
        # The socket is gone: whatever the server was doing for us is lost with it. Audio
        # already in the player keeps playing; mic frames stay in the ring for the next channel
        # if it is still the user's turn (the ring drops the oldest when full, counted).
        self._opened = False
        self._server_paused = False
        self._stuck = 0
        self._session_items = []
        self._ctrl = []
        self.player.abort_chunk()  # a chunk cut by the drop: its tentative audio is void
        if self._reply:
            self._reply_done = True
        if self._commit_seq >= 0:
            # Push-to-talk was committing: part of the turn went to the dead channel, and the
            # new one has none of it. Say so; the user speaks again.
            self._commit_seq = -1
            self._emit("error", {"code": "turn_lost", "message": "the link dropped before the turn was committed"})
        if self.explicit and not self._talking and self.ring is not None:
            self.ring.hold()

    ########################################################################
    # Server frames (called by the downlink).

    def on_frame(self, frame):
        ftype = frame["type"]
        if ftype == "channel.event":
            self._on_event(frame["event"])
        elif ftype == "channel.status":
            self._on_status(frame["status"])
        elif ftype == "channel.error":
            self._on_error(frame)
        elif ftype == "channel.opened":
            self._on_opened(frame)
        elif ftype == "channel.closed":
            self.close_reason = frame.get("reason", "closed")
            log.info("chan", "channel closed by the server: %s", self.close_reason)

    def _on_opened(self, frame):
        caps = frame["capabilities"]
        self.capabilities = caps
        if self.primary and self.ring is not None:
            fmt = caps.get("audio_input_format")
            if not protocol.format_matches(fmt):
                # Raised by the open loop, not here: this runs inside the WebSocket's parser.
                self._fatal = "the server's audio input format is %s; this device sends audio/pcm @ 24000 Hz / 1 ch" % protocol.describe_format(fmt)
        self._opened = True
        self._on_status(frame["status"])

    def _on_status(self, status):
        self._stuck = 0
        self._server_paused = status["state"] == "reconnecting"
        if self._server_paused:
            self._session_items = []  # a new provider session is coming: old ids die with it
            self._reply_done = True  # and the reply in progress, if any, dies with the old one
        self._emit("status", status)

    def _on_error(self, frame):
        code = frame["code"]
        if code == "audio_format_mismatch":
            # Every chunk would be dropped: stop sending audio and say why, once.
            if not self._audio_off:
                self._audio_off = True
                self.error = "the server rejects our audio format: " + frame["message"]
                log.error("chan", "%s", self.error)
        elif not self._opened:
            self.close_reason = code  # a refused channel.open; channel.closed follows
        elif code == "channel_reconnecting":
            self._stuck += 1
            if self._stuck >= _STUCK_ERRORS and self.close_reason is None:
                log.warn("chan", "the server keeps answering channel_reconnecting: opening a new channel")
                self.close_reason = "stuck_reconnecting"
                return
        log.warn("chan", "server error %s: %s", code, frame["message"])
        self._emit("error", {"code": code, "message": frame["message"]})

    def _on_event(self, event):
        etype = event["type"]
        self.events[etype] = self.events.get(etype, 0) + 1
        self._t_reply = ticks_ms()
        self._stuck = 0
        if self._drop_audio and etype in ("output_text_delta", "turn_completed"):
            # Still the interrupted reply: the server ran ahead of the speaker (text streams
            # faster than audio) or finished it before our interrupt arrived. Not for the app.
            self.late_events += 1
            return
        if etype == "turn_committed":
            if self.primary and not self.explicit and self._talking:
                self._start_reply()
            self._drop_audio = False
        elif etype == "turn_completed":
            self._reply_done = True
            self._tools = 0
            if self._item is not None:
                _remember(self._finished_ids, self._item)
        elif etype == "interrupted":
            if self._reply and self.primary:
                self._barge_in("server")
            self._drop_audio = True
            self._tools = 0
        elif etype == "tool_call_requested":
            self._tools += 1
            if self._item is not None:
                _remember(self._finished_ids, self._item)  # its response ended in a tool call
        elif etype in ("tool_call_completed", "tool_call_failed", "tool_call_timed_out"):
            self._tools = max(0, self._tools - 1)
        self._emit(etype, event)

    def on_audio(self, item_id, content_index):
        if self._drop_audio or (item_id is not None and item_id in self._stopped):
            self.late_chunks += 1
            return False
        if self.primary and not self._reply:
            self._start_reply()  # reply audio is about to play: the mic must be held now
        self._t_reply = ticks_ms()
        if item_id != self._item:
            if self._item is not None:
                _remember(self._finished_ids, self._item)
            self._item = item_id
            if item_id is not None:
                _remember(self._session_items, item_id)
            self._index = content_index
        return True

    def audio_done(self, item_id, ms):
        # ms: what the player took of the chunk (0: dropped, a stopped item; -1: cut short).
        if ms > 0:
            self.audio_received_ms += ms

    ########################################################################

    def _require_primary(self):
        if not self.primary:
            raise ChannelError("observer channels are read-only")

    def _set_state(self, state):
        if state != self.state:
            self.state = state
            self._emit("state", state)

    def _fail(self, message):
        self.error = message
        log.error("chan", "%s", message)
        self._set_state(ERROR)

    def _emit(self, name, data):
        if self.on_event is not None:
            try:
                self.on_event(name, data)
            except Exception as exc:  # an app callback must not take the channel down
                log.error("chan", "event handler failed on %s: %r", name, exc)


def _remember(lst, item, keep=8):
    # A tiny bounded "set" of recent item ids.
    if item not in lst:
        while len(lst) >= keep:
            lst.pop(0)
        lst.append(item)
