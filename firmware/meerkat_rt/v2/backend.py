# meerkat_rt.v2.backend: the protocol v2 surface (Meerkat 0.6.0 to 0.6.4) for the link loop.
#
# One WebSocket carries everything, as JSON text frames: channel.open first (never a ping
# before channel.opened), audio input as base64 inside channel.input frames built from a
# preformatted template around the ring's slots, control frames (interrupt, barge_in_truncate,
# commit_turn, close) queued and sent between audio frames, and the server's frames through the
# streaming downlink. Rules it keeps (as Meerkat v0.6.2 enforces them):
#   - a fresh open_info (single-use token, 60 s) for every connection attempt;
#   - channel.error is not terminal; channel.closed or a dropped socket is; a close the device
#     did not ask for (even one saying client_closed) is the server ending the channel: retried,
#     unless its reason says retrying cannot help;
#   - while the server's provider session reconnects (channel.status reconnecting) input and
#     control would be discarded: they wait; a server stuck answering channel_reconnecting with
#     no status change gets a new channel;
#   - audio_format_mismatch: the uplink pauses and tries again later, with backoff;
#   - no item ids on a real v0.6.2 server (so barge-in is channel.interrupt only); the item_id
#     extension of our development server is used when present.
from .. import log
from ..compat import const, sleep_ms, ticks_diff, ticks_ms, unload
from ..downlink import Downlink
from ..link import ChannelError, Closing, Retry, SurfaceChanged
from ..ring import B64
from ..shapes import text
from . import protocol

_CTRL_QUEUE = const(8)
# This many channel_reconnecting answers in a row with no status change: the server's provider
# session is gone for good while its status still reads ready. Reopen.
_STUCK_ERRORS = const(25)
_MUTE_MS = const(5000)  # audio_format_mismatch: first pause of the uplink (doubling to 60 s)
# Close reasons and refusal codes after which a new channel cannot succeed: the device's
# configuration or the server's setup is wrong. Every other reason (a newer server may add
# some) is retried with backoff.
_FATAL = (
    "authentication_failed",
    "model_not_found",
    "unauthorized_realm",
    "role_mismatch",
    "turning_mode_mismatch",
    "unsupported_turning_mode",
    "unsupported_protocol_version",
    "invalid_frame",
    "expected_channel_open",
)


class Backend:
    surface = "v2"
    strict_order = True  # one ordered stream: output before a cancel's confirmation is stale
    ring_codec = B64

    def __init__(self, link, auto=False):
        self.link = link
        self.auto = auto
        cfg = link.cfg
        self.cfg = cfg
        self.ws = link.ws
        self.turns = link.turns
        self.template = protocol.AudioInputTemplate()
        self.down = Downlink(link.player, protocol, self.on_frame, link.turns, link.frame_buf, link.decode_room)
        self.ws.set_sink(self.down)
        self.capabilities = None
        self.close_reason = None  # channel.closed's reason, or the code that refused the open
        self.control_dropped = 0  # requests refused locally (queue full, frame too big)
        self._ctrl = []  # control frames waiting for the send buffer (bounded)
        self._asked_close = False
        self._opened = False
        self._fatal = None
        self._paused = False  # channel.status reconnecting: hold input until ready
        self._muted = False  # audio_format_mismatch: no audio for _mute_ms from _t_mute
        self._t_mute = 0
        self._mute_ms = 0
        self._stuck = 0

    ####################################################################
    # Connecting

    async def connect(self):
        link = self.link
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
        tls = link.default_tls() if info["ws_url"].startswith("wss://") else None
        if link.closing:
            raise Closing()  # close() came while bootstrapping: spend no token on it
        await self.ws.connect(info["ws_url"], tls=tls, timeout_ms=cfg["server"]["timeout_ms"])
        if link.closing:
            raise Closing()
        self._opened = False
        self._fatal = None
        self._asked_close = False
        self.close_reason = None
        self.ws.send_nowait(protocol.open_frame(info["open_token"], cfg["role"], cfg["turning_mode"]))
        info = None  # the token is single use; do not keep it around
        t0 = ticks_ms()
        timeout = cfg["server"]["open_timeout_ms"]
        while not self._opened:
            if self._fatal is not None:
                raise ChannelError(self._fatal)
            if not self.ws.open or self.close_reason is not None:
                code = self.close_reason or "socket closed before channel.opened"
                if code in _FATAL:
                    raise ChannelError("channel.open refused: %s" % code)
                raise Retry("channel.open refused: %s" % log.esc(code))
            if ticks_diff(ticks_ms(), t0) > timeout:
                raise Retry("no channel.opened within %d ms" % timeout)
            self.ws.poll()  # (the link's local pump keeps the mic and speaker going meanwhile)
            await sleep_ms(5)
        if self._fatal is not None:
            raise ChannelError(self._fatal)
        self._muted = False  # a new channel: its format was just checked
        self._mute_ms = 0
        ka = cfg["keepalive"]
        if ka["interval_ms"]:
            self.ws.keepalive(ka["interval_ms"], ka["timeout_ms"])  # only now: never before opened

    async def _bootstrap(self, settings):
        # Loaded for each (re)connect and dropped again: its heap back while streaming.
        from . import bootstrap

        try:
            # The WebSocket is closed meanwhile: its frame buffer holds the answer.
            return await bootstrap.fetch_open_info(settings, self.link.frame_buf)
        except bootstrap.BootstrapError as exc:
            if exc.kind == "no_such_method" and self.auto:
                raise SurfaceChanged("the server has no realtime/open_info: trying the live surface")
            if exc.retryable:
                raise Retry(str(exc))
            raise ChannelError(str(exc))
        finally:
            unload("v2.bootstrap")

    ####################################################################
    # The pump

    def send_control(self):
        # Queued control frames go out together, in one pass, each written at once: a
        # barge-in's interrupt and truncate reach the server back to back, not after the reply
        # audio the server had streamed ahead has been read and dropped. While the server's
        # provider reconnects they wait (it would discard them), except channel.close.
        ws = self.ws
        sent = False
        while self._ctrl and self._opened and ws.can_send():
            if self._paused and self._ctrl[0] is not protocol.CLOSE_FRAME:
                break
            ws.send_nowait(self._ctrl.pop(0))
            ws.flush()
            sent = True
        return sent

    def audio_ready(self):
        if self._paused or self._ctrl or not self.ws.can_send():
            return False
        if self._muted:
            if ticks_diff(ticks_ms(), self._t_mute) < self._mute_ms:
                return False
            self._muted = False  # try again; a mismatch answered mutes it for longer
        return True

    def send_audio(self, ring, i):
        ws = self.ws
        t = self.template
        n = ring.slot_len
        ws.begin(t.frame_len(n))
        ws.put(t.prefix, 0, len(t.prefix))
        ws.put(ring.slot_buffer, ring.slot_offset(i), n)
        ws.put(t.suffix, 0, len(t.suffix))
        ws.end_frame()

    def poll(self):
        # The downlink holds (the ws stops reading: TCP back-pressure) while the player cannot
        # take another staging buffer of decoded audio; see Downlink.hold.
        return bool(self.ws.poll())

    def ended(self):
        return not self.ws.open or self.close_reason is not None

    def finish(self):
        reason = self.close_reason
        if reason is None:
            raise Retry("connection lost: %s" % log.esc(self.ws.close_reason or "closed"))
        if self._asked_close and reason == "client_closed":
            return
        if reason in _FATAL:
            raise ChannelError("the server closed the channel: %s" % reason)
        if reason == "client_closed":
            raise Retry("the server closed the channel saying client_closed, but this device did not close it")
        raise Retry("the server closed the channel: %s" % log.esc(reason))

    ####################################################################
    # Requests (the app's, through the link; the ledger's)

    def room(self, n):
        return len(self._ctrl) + n <= _CTRL_QUEUE

    def check_text(self, s):
        if type(s) is not str:
            raise ValueError("text must be a string")
        n = len(protocol.text_input_frame(s).encode())
        if not self.ws.fits(n):
            raise ValueError("text of %d bytes is too long for this channel (at most about %d)" % (len(s.encode()), len(self.ws.tx) - 80))

    def send_text(self, s):
        self._queue(protocol.text_input_frame(s))

    def interrupt(self):
        self._queue(protocol.INTERRUPT_FRAME)

    def commit(self):
        self._queue(protocol.COMMIT_TURN_FRAME)

    def truncate(self, item_id, content_index, audio_played_ms):
        frame = protocol.barge_in_truncate_frame(item_id, content_index, audio_played_ms)
        if not self.ws.fits(len(frame)):
            self._refuse("a truncate of %d bytes does not fit the send buffer (item id of %d bytes)" % (len(frame), len(item_id)))
            return False
        return self._queue(frame)

    def _queue(self, frame):
        if len(self._ctrl) >= _CTRL_QUEUE:
            self._refuse("the control queue is full")
            return False
        self._ctrl.append(frame)
        return True

    def _refuse(self, why):
        self.control_dropped += 1
        log.warn("v2", "control frame not sent: %s", why)

    async def close(self, timeout_ms):
        """channel.close, then wait (bounded) for channel.closed."""
        if not self.ws.open:
            return
        self._asked_close = True
        self._ctrl.append(protocol.CLOSE_FRAME)
        link = self.link
        t0 = ticks_ms()
        while self.ws.open and self.close_reason is None and ticks_diff(ticks_ms(), t0) < timeout_ms:
            if not link._streaming:  # run() is not pumping (it ended, or never ran)
                link.pump_once()
            await sleep_ms(5)

    async def abandon(self):
        # Stopping for good: release the server's side too (an open channel keeps a provider
        # session bound, and the next device would get target_busy).
        if self._opened and self.ws.open and self.ws.can_send():
            self.ws.send_nowait(protocol.CLOSE_FRAME)
            self.ws.flush()
        await self.ws.close()

    async def drop(self):
        await self.ws.close()

    def lost(self):
        self._opened = False
        self._paused = False
        self._stuck = 0
        self._ctrl = []

    def stats(self, s):
        d = self.down
        s["downlink_dropped"] = d.dropped
        s["drops"] = dict(d.drops)
        s["unknown"] = d.unknown
        s["control_dropped"] = self.control_dropped
        if self.close_reason:
            s["close_reason"] = self.close_reason

    ####################################################################
    # Server frames (called by the downlink)

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
            self.close_reason = text(frame.get("reason") or "closed")
            log.info("v2", "channel closed by the server: %s", log.esc(self.close_reason))

    def _on_opened(self, frame):
        caps = frame["capabilities"]
        self.capabilities = caps
        if self.link.primary and self.link.ring is not None:
            fmt = caps.get("audio_input_format")
            if not protocol.format_matches(fmt):
                # Raised by the open loop, not here: this runs inside the WebSocket's parser.
                self._fatal = "the server's audio input format is %s; this device sends audio/pcm @ 24000 Hz / 1 ch" % log.esc(protocol.describe_format(fmt))
        self._opened = True
        self._on_status(frame["status"])

    def _on_status(self, status):
        self._stuck = 0
        paused = status["state"] == "reconnecting"
        if paused and not self._paused:
            self.turns.provider_reset()  # a new provider session is coming: old ids die
        self._paused = paused
        self.link.emit("status", _clean(status))

    def _on_error(self, frame):
        code = text(frame["code"])
        message = text(frame["message"])
        if code == "audio_format_mismatch":
            # Every chunk is being dropped: pause the uplink, say why once per pause, then try
            # again (the provider's format may come back; a reconnect checks it anew). Errors
            # for frames already in flight change nothing.
            if self._muted:
                return
            self._mute_ms = min(60000, self._mute_ms * 2 if self._mute_ms else _MUTE_MS)
            self._muted = True
            self._t_mute = ticks_ms()
            self.link.error = "the server rejects our audio format: " + message
            log.error("v2", "%s (audio paused %d s)", log.esc(self.link.error), self._mute_ms // 1000)
            self.link.emit("error", {"code": code, "message": message})
            return
        elif not self._opened:
            self.close_reason = code  # a refused channel.open; channel.closed follows
        elif code == "channel_reconnecting":
            self._stuck += 1
            if self._stuck >= _STUCK_ERRORS and self.close_reason is None:
                log.warn("v2", "the server keeps answering channel_reconnecting: opening a new channel")
                self.close_reason = "stuck_reconnecting"
                return
        log.warn("v2", "server error %s: %s", log.esc(code), log.esc(message))
        self.link.emit("error", {"code": code, "message": message})

    def _on_event(self, event):
        etype = event["type"]
        self.link.count(etype)
        self._stuck = 0
        turns = self.turns
        if etype == "output_text_delta":
            if not turns.output():
                return  # the interrupted reply's text: not for the app
        elif etype == "turn_committed":
            turns.turn_committed()
        elif etype == "turn_completed":
            if not turns.completed():
                return
        elif etype == "interrupted":
            turns.interrupted()
        elif etype == "tool_call_requested":
            turns.tool_requested()
        elif etype in ("tool_call_completed", "tool_call_failed", "tool_call_timed_out"):
            turns.tool_finished()
        self.link.emit(etype, _clean(event))


def _clean(d):
    # Every string the app gets is valid UTF-8 (shapes.text); nested objects as they are.
    for k in d:
        v = d[k]
        if type(v) is str:
            d[k] = text(v)
    return d
