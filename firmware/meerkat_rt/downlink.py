# meerkat_rt.downlink: the WebSocket sink for server frames.
#
# Assistant audio is the bulk of the downlink (about 64 kB/s of base64). It is decoded while it
# streams in, straight from the socket's staging buffer into the playback ring, so the device
# never holds a whole audio message: only the frame around the data (its "skeleton": type, ids,
# format, `"data":""`) is assembled, in a small buffer, and validated with the same parser as
# every other frame. Consecutive chunks of one item have byte-identical skeletons, so the parse
# result is cached and reused after a byte compare: steady-state audio allocates nothing.
#
# Anything else (events, status, errors) is assembled whole in the same small buffer and parsed.
# A message that does not fit is dropped, counted and logged, and the channel keeps running.
from . import fast, log, protocol
from .compat import const

_HEAD = const(0)  # before the audio data (or a whole non-audio message)
_DATA = const(1)  # inside the base64 string of an audio chunk
_TAIL = const(2)  # after the data string
_SKIP = const(3)  # oversized or binary: ignore the rest of the message


class Downlink:
    """ws sink: feed(buf, off, n, first, last, is_text) for each payload fragment.

    `player` takes the audio (begin_chunk/feed_b64/commit_chunk/abort_chunk); `on_frame(frame)`
    gets every other validated frame (a dict); `on_audio(item_id, content_index)` decides whether
    an audio chunk is wanted (False drops it: late audio of an interrupted item) and is told the
    outcome through `audio_done(item_id, ms)`.
    """

    def __init__(self, player, channel, capacity=3072):
        self.player = player
        self.channel = channel
        self.buf = bytearray(capacity)
        # Skeleton of the last audio chunk that validated (about 250 bytes from a Meerkat
        # server); a longer one is simply parsed every time.
        self.skel = bytearray(512)
        self.skel_len = -1
        self.skel_ids = None  # (item_id, content_index) of that skeleton
        self.n = 0
        self.mode = _HEAD
        self.data_at = -1  # where the data string starts in buf (after its opening quote)
        self.b64_ok = True
        # counters
        self.frames = 0
        self.audio_chunks = 0
        self.dropped = 0  # messages dropped: oversized, malformed, binary
        self.unknown = 0  # unknown event types / fields / codes reported by the parser

    @property
    def hold(self):
        # Checked by the WebSocket before each hand-off: while the player cannot take a full
        # staging buffer (1 KB of base64 decodes to 768 bytes), nothing more is read, and a
        # server that streams faster than real time is held back by TCP flow control.
        return self.player.space() < 1024

    def feed(self, src, off, n, first, last, is_text):
        if first:
            self.n = 0
            self.data_at = -1
            self.b64_ok = True
            self.mode = _HEAD if is_text else _SKIP
            if not is_text:
                self._drop("binary message from the server ignored")
        end = off + n
        while off < end and self.mode != _SKIP:
            if self.mode == _DATA:
                q = src.find(b'"', off, end)
                stop = end if q < 0 else q
                if stop > off and self.b64_ok:
                    self.b64_ok = self.player.feed_b64(src, off, stop - off)
                off = stop
                if q >= 0:
                    self.mode = _TAIL
            else:
                # Assemble in pieces no larger than the free space, so a fragment bigger than
                # the buffer still reaches the data string (which then streams past it).
                k = min(end - off, len(self.buf) - self.n)
                if k <= 0:
                    self.mode = _SKIP
                    break
                fast.copy(self.buf, self.n, src, off, k)
                start = self.n
                self.n += k
                off += k
                if self.mode == _HEAD:
                    self._find_data(start)
        if last:
            if self.mode == _SKIP:
                if is_text:
                    self._drop("message larger than the %d-byte frame buffer" % len(self.buf))
            else:
                self._finish()

    def _find_data(self, new_from):
        # Look for `"data"<ws>:<ws>"` in the bytes just appended (the key may straddle the
        # previous fragment, hence the look-back). Only audio and video chunks have a "data"
        # field; whether this one is audio is known when the skeleton is parsed at the end, so
        # decode tentatively now and commit or abort then (works for any key order).
        buf = self.buf
        i = protocol.data_value_at(buf, max(0, new_from - 16), self.n)
        if i < 0:
            return  # none, or its value has not arrived yet (the look-back covers that)
        self.data_at = i
        self.player.begin_chunk()
        q = buf.find(b'"', self.data_at, self.n)
        stop = self.n if q < 0 else q
        if stop > self.data_at:
            self.b64_ok = self.player.feed_b64(buf, self.data_at, stop - self.data_at)
        if q < 0:
            self.n = self.data_at
            self.mode = _DATA
        else:  # the whole data string was in this fragment: keep only the skeleton
            fast.copy(buf, self.data_at, buf, q, self.n - q)
            self.n -= q - self.data_at
            self.mode = _TAIL

    def _finish(self):
        self.frames += 1
        if self.data_at < 0:
            frame = self._parse(self.buf, self.n)
            if frame is not None:
                self.channel.on_frame(frame)
            return
        player = self.player
        ids = self._audio_ids()
        if ids is None or not self.b64_ok:
            player.abort_chunk()
            if ids is not None:
                self._drop("audio chunk with invalid base64 data")
            return
        self.audio_chunks += 1
        item_id, content_index = ids
        if self.channel.on_audio(item_id, content_index):
            self.channel.audio_done(item_id, player.commit_chunk(item_id, content_index))
        else:
            player.abort_chunk()

    def _audio_ids(self):
        # Same skeleton bytes as the last valid chunk: same validation result, no parse.
        n = self.n
        if n == self.skel_len and fast.equal(self.buf, 0, self.skel, 0, n):
            return self.skel_ids
        frame = self._parse(self.buf, n)
        if frame is None:
            return None
        event = frame.get("event") or {}
        chunk = event.get("chunk")
        if chunk is None or event.get("type") != "output_audio_chunk":
            self.channel.on_frame(frame)  # a video chunk (its data is not kept) or similar
            return None
        if not protocol.format_matches(chunk):
            self._drop("output audio is %s, expected audio/pcm @ 24000 Hz / 1 ch" % protocol.describe_format(chunk))
            return None
        ids = (event.get("item_id"), event.get("content_index", 0))
        data = chunk["data"]
        if data:
            # The streamed string was another "data" field (an unknown one before the chunk);
            # the audio is still in the skeleton. Rare: decode it from there, do not cache.
            self.player.abort_chunk()
            self.player.begin_chunk()
            raw = data.encode()
            self.b64_ok = self.player.feed_b64(raw, 0, len(raw))
            return ids
        if n <= len(self.skel):
            fast.copy(self.skel, 0, self.buf, 0, n)
            self.skel_len = n
            self.skel_ids = ids
        return ids

    def _parse(self, buf, n):
        report = []
        try:
            frame = protocol.parse_server_frame(memoryview(buf)[:n], report)
        except protocol.ProtocolError as exc:
            self._drop("malformed server frame: " + exc.reason)
            return None
        if report:
            self.unknown += len(report)
            log.debug("down", "tolerated: %s", " ".join(report))
        return frame

    def _drop(self, why):
        self.dropped += 1
        log.warn("down", "dropped: %s", why)
