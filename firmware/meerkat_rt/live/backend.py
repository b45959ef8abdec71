# meerkat_rt.live.backend: the live surface (Meerkat 0.6.5 and later) for the link loop.
#
# Bootstrap and control are JSON-RPC on one TCP connection that stays open (a barge-in's
# live/interrupt and live/truncate must leave at once, not after a TCP handshake); media is the
# channel's WebSocket: the microphone's raw PCM as binary frames straight from the ring slots,
# text input as JSON text frames, observations in through the streaming downlink. Rules it
# keeps (as Meerkat v0.8.26 enforces them):
#   - every attempt is a new live/open (single-use token, 60 s, pinned to the channel); there is
#     no reattach; a channel that may still be open (its WebSocket never got in, or the link
#     died silently) is closed with live/close first, or the session refuses a new channel;
#   - nothing is sent before {"observation":"ready"}; no pong unless pinged (an unsolicited
#     pong closes the channel); binary frames only with format=pcm_24k_mono in the URL;
#   - terminal conditions are not announced (0.7.0+ just drops the socket): a drop is retried;
#   - truncate only items named on assistant_audio_chunk, once, at or below what was heard:
#     an unknown id or an overshoot ends the channel.
from .. import log
from ..compat import const, sleep_ms, ticks_diff, ticks_ms
from ..downlink import Downlink
from ..link import ChannelError, Closing, Retry, SurfaceChanged
from ..ring import PCM
from ..rpc import JsonRpc, RpcError, bootstrap_error, endpoint, rewrite_host
from ..shapes import text
from ..ws import BINARY
from . import protocol

_CTRL_QUEUE = const(8)


class Backend:
    surface = "live"
    strict_order = False  # the audio lane may trail the control lane
    ring_codec = PCM

    def __init__(self, link, auto=False):
        self.link = link
        self.auto = auto
        cfg = link.cfg
        self.cfg = cfg
        self.ws = link.ws
        self.turns = link.turns
        self.target = cfg["target"]
        self.down = Downlink(link.player, protocol, self.on_frame, link.turns, link.frame_buf, link.decode_room)
        self.ws.set_sink(self.down)
        server = cfg["server"]
        host, port = endpoint(server["rpc"])  # config.py: the live surface has no REST routes
        self.host = host
        # Kept open for the whole run: a barge-in's control calls leave at once. Its answers are
        # small (live/open's is under 1 KB), so a 2 KB line buffer bounds them.
        self.rpc = JsonRpc(host, port, server["timeout_ms"], bytearray(2048))
        self.channel_id = None
        self._maybe_open = None  # a channel of ours the server may still hold
        self._ready = False
        self._refused = None  # the WebSocket's refusal ({"error","reason"} before ready)
        self._ended = None  # why the server ended the channel, when it said so
        self._asked_close = False
        self._status = None
        self._ctrl = []  # requests waiting for the channel to be ready: (verb, args)
        self._calls = {}  # rpc id -> verb, for the answers
        self.control_dropped = 0
        self.control_failed = 0

    ####################################################################
    # Connecting

    async def connect(self):
        link = self.link
        cfg = self.cfg
        server = cfg["server"]
        where = "%s:%d" % (self.rpc.host, self.rpc.port)
        method, params = protocol.open_call(self.target, cfg["turning_mode"])
        try:
            await self.rpc.connect()
            await self._close_previous()
            result = await self.rpc.request(method, params, server["open_timeout_ms"])
            channel_id, url, token = protocol.check_open_result(result)
        except Exception as e:  # network, refusal, bad answer: classified
            err = bootstrap_error(method, where, e)
            if err.kind == "no_such_method":
                if self.auto:
                    raise SurfaceChanged("the server has no %s: trying protocol v2" % method)
                raise ChannelError("%s has no %s: it does not speak the live surface (Meerkat 0.6.0-0.6.4 speak protocol v2: set server.surface to v2 or auto)" % (where, method))
            if err.retryable or "already has an active live channel" in str(err):
                # (the server still holds a channel of ours whose link died without a close:
                # it frees it when it notices)
                raise Retry(str(err))
            raise ChannelError(str(err))
        self.channel_id = self._maybe_open = channel_id
        url = rewrite_host(url, self.host)
        log.info("live", "channel open, connecting its WebSocket")  # never the url: it holds the token
        tls = link.default_tls() if url.startswith("wss://") else None
        if link.closing:
            raise Closing()
        self._ready = False
        self._refused = self._ended = None
        self._asked_close = False
        self._status = None
        await self.ws.connect(url, tls=tls, timeout_ms=server["timeout_ms"])
        url = token = None  # single use: do not keep it around
        t0 = ticks_ms()
        timeout = server["open_timeout_ms"]
        while not self._ready:
            if self._refused is not None:
                raise Retry("the live WebSocket refused the token: %s" % self._refused)
            if not self.ws.open:
                raise Retry("the live WebSocket closed before ready: %s" % log.esc(self.ws.close_reason or "closed"))
            if link.closing:
                raise Closing()
            if ticks_diff(ticks_ms(), t0) > timeout:
                raise Retry("no ready observation within %d ms" % timeout)
            self.ws.poll()
            await sleep_ms(5)
        self._maybe_open = None  # admitted: from now on a dropped WebSocket ends the channel
        ka = cfg["keepalive"]
        if ka["interval_ms"]:
            self.ws.keepalive(ka["interval_ms"], ka["timeout_ms"])  # pings are answered; pongs never sent unasked

    async def _close_previous(self):
        cid = self._maybe_open
        if cid is None:
            return
        self._maybe_open = None
        method, params = protocol.control_call(self.target, cid, "close")
        try:
            await self.rpc.request(method, params)
        except RpcError as e:  # "channel ... not found": it is gone already
            log.debug("live", "closing the previous channel: %s", log.esc(e.message))

    ####################################################################
    # The pump

    def send_control(self):
        did = False
        if self._ready and self.ws.open:
            while self._ctrl and self.ws.can_send():
                verb, args = self._ctrl.pop(0)
                if verb == "text":
                    self.ws.send_nowait(protocol.text_frame(args))
                    self.ws.flush()
                else:
                    self._call(verb, args)
                did = True
        if self.rpc.connected:
            did |= self.rpc.poll()
            for rid in list(self._calls):
                answer = self.rpc.done(rid)
                if answer is not None:
                    verb = self._calls.pop(rid)
                    if answer[1] is not None:
                        self.control_failed += 1
                        why = answer[1].message if isinstance(answer[1], RpcError) else str(answer[1])
                        log.warn("live", "live/%s failed: %s", verb, log.esc(why))
                        self.link.emit("error", {"code": "control_failed", "message": "%s: %s" % (verb, text(why))})
        return did

    def _call(self, verb, args):
        if not self.rpc.connected:
            # The RPC connection dropped (the channel lives on in the server): the request is
            # lost; say so. The next bootstrap reconnects.
            self.control_failed += 1
            log.warn("live", "live/%s not sent: the JSON-RPC connection is down", verb)
            return
        if verb == "truncate":
            method, params = protocol.control_call(self.target, self.channel_id, verb, args[0], args[1], args[2])
        else:
            method, params = protocol.control_call(self.target, self.channel_id, verb)
        self._calls[self.rpc.call(method, params)] = verb

    def audio_ready(self):
        return self._ready and self.ws.can_send()

    def send_audio(self, ring, i):
        ws = self.ws
        n = ring.slot_len
        ws.begin(n, BINARY)
        ws.put(ring.slot_buffer, ring.slot_offset(i), n)
        ws.end_frame()

    def poll(self):
        return bool(self.ws.poll())

    def ended(self):
        return not self.ws.open or self._ended is not None

    def finish(self):
        if self._asked_close:
            return
        if self._ended is not None:
            raise Retry("the server ended the live channel: %s" % log.esc(self._ended))
        # 0.7.0 and later end a channel on a terminal error by dropping its socket, silently.
        raise Retry("the live channel's WebSocket was dropped (%s); opening a new channel" % log.esc(self.ws.close_reason or "closed"))

    ####################################################################
    # Requests

    def room(self, n):
        return len(self._ctrl) + n <= _CTRL_QUEUE

    def check_text(self, s):
        n = len(protocol.text_frame(s).encode())
        if not self.ws.fits(n):
            raise ValueError("text of %d bytes is too long for this channel (at most about %d)" % (len(s.encode()), len(self.ws.tx) - 40))

    def send_text(self, s):
        self._queue("text", s)

    def interrupt(self):
        self._queue("interrupt", None)

    def commit(self):
        self._queue("commit_input", None)

    def truncate(self, item_id, content_index, audio_played_ms):
        return self._queue("truncate", (item_id, content_index, audio_played_ms))

    def _queue(self, verb, args):
        if len(self._ctrl) >= _CTRL_QUEUE:
            self.control_dropped += 1
            log.warn("live", "%s not sent: the request queue is full", verb)
            return False
        self._ctrl.append((verb, args))
        return True

    async def close(self, timeout_ms):
        """live/close, bounded; the server then drops the WebSocket."""
        self._asked_close = True
        if self.channel_id is None:
            return
        method, params = protocol.control_call(self.target, self.channel_id, "close")
        try:
            await self.rpc.request(method, params, timeout_ms)
        except (RpcError, OSError) as e:
            log.warn("live", "live/close: %s", log.esc(str(e)))
        self._maybe_open = None

    async def abandon(self):
        # Stopping for good: release the server's channel (and its provider session).
        if self.channel_id is not None and self.rpc.connected:
            try:
                await self.close(2000)
            except Exception:  # best effort: the error that stopped us is what matters
                pass
        await self.ws.close()
        self.rpc.close()

    async def drop(self):
        await self.ws.close()

    def lost(self):
        # The server may still hold the channel: a link that died without a close (Wi-Fi gone,
        # a keepalive timeout) is noticed there only later, and until then the session refuses
        # a new channel. Closing it first costs one call ("not found" when it is gone).
        if not self._asked_close and self.channel_id is not None:
            self._maybe_open = self.channel_id
        self._ready = False
        self._ctrl = []
        self._calls = {}

    def stats(self, s):
        d = self.down
        s["downlink_dropped"] = d.dropped
        s["drops"] = dict(d.drops)
        s["unknown"] = d.unknown
        s["control_dropped"] = self.control_dropped
        s["control_failed"] = self.control_failed
        if self._ended:
            s["close_reason"] = self._ended

    ####################################################################
    # Server frames (called by the downlink)

    def on_frame(self, frame):
        name = frame.get("observation")
        link = self.link
        if name is None:  # {"error", "reason"}: a refused token, or input refused
            if frame["error"] == "invalid_token":  # then Close 1008
                self._refused = log.esc(frame.get("reason") or "invalid token")
                return
            reason = text(frame.get("reason") or "error")
            log.warn("live", "server refused: %s (%s)", log.esc(frame["error"]), log.esc(reason))
            link.emit("error", {"code": reason, "message": text(frame["error"])})
            return
        link.count(name)
        turns = self.turns
        if name == "ready":
            self._ready = True
            self._status_is("ready")
        elif name == "status_changed":
            self._status_is(frame["status"]["status"])
            if frame["status"]["status"] == "closed":
                self._ended = "the provider session closed"
        elif name == "user_transcript_final":
            link.emit("input_transcript_final", {"text": text(frame["text"])})
        elif name in ("assistant_transcript_delta", "assistant_text_delta"):
            if turns.output(frame.get("response_id"), frame.get("provider_item_id")):
                link.emit("output_text_delta", {"delta": text(frame["delta"])})
        elif name == "assistant_transcript_final":
            if turns.output(frame.get("response_id"), frame.get("provider_item_id")):
                link.emit("output_text_final", {"text": text(frame["text"])})
        elif name == "realtime_transcript":
            ev = frame["event"]
            if ev.get("role") == "assistant" and ev.get("type") == "item_observed" and ev.get("response_id"):
                turns.output(ev["response_id"], ev.get("item_id"))  # a response announced
        elif name == "turn_completed":
            stop = frame.get("stop_reason")
            if stop == "tool_use":
                return  # a tool runs server-side; its continuation response follows
            if turns.completed(frame.get("response_id"), stop == "cancelled"):
                link.emit("turn_completed", {"response_id": frame.get("response_id"), "stop_reason": stop})
        elif name == "turn_interrupted":
            turns.interrupted(frame.get("response_id"))
            link.emit("interrupted", {"response_id": frame.get("response_id")})
        elif name == "assistant_transcript_truncated":
            item = frame.get("provider_item_id")
            ms = -1
            for t in turns.truncates:
                if t[0] == item:
                    ms = t[1]
            ev = {"item_id": item, "audio_played_ms": ms}
            if "text" in frame:
                ev["truncated_text"] = text(frame["text"])
            link.emit("assistant_transcript_truncated", ev)
        elif name == "tool_call_requested":
            turns.tool_requested()
            link.emit("tool_call_requested", {"call_id": frame["provider_call_id"], "tool_name": text(frame["tool_name"])})
        elif name == "command_rejected":
            code = text(protocol.code_of(frame))
            message = text(frame.get("message") or "")
            log.warn("live", "command rejected: %s: %s", log.esc(code), log.esc(message))
            link.emit("error", {"code": code, "message": message})
        elif name == "error":  # 0.6.5 published terminal errors (and closed the socket)
            self._ended = text(protocol.code_of(frame))
            log.error("live", "terminal error: %s: %s", log.esc(self._ended), log.esc(frame.get("message") or ""))
            link.emit("error", {"code": self._ended, "message": text(frame.get("message") or "")})

    def _status_is(self, state):
        if state != self._status:
            self._status = state
            self.link.emit("status", {"state": state})
