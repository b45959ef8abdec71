# meerkat_rt.downlink: the WebSocket sink for server messages, on both server surfaces.
#
# Assistant audio is the bulk of the downlink (about 64 kB/s of base64). It is decoded while it
# streams in, straight from the socket's staging buffer into the playback ring, so the device
# never holds a whole audio message: only the message around the data (its "skeleton": type,
# ids, format, `"data":""`) is assembled, in the frame buffer, and validated by the surface's
# codec. Consecutive chunks of one item have byte-identical skeletons, so the parse result is
# cached and reused after a byte compare: steady-state audio allocates nothing.
#
# Chunk size is the server's business (protocol v2 forwards OpenAI's deltas unchanged, 2 s and
# more happen), so audio is not bounded by max_message: a chunk bigger than the free space in
# the playback ring is made playable while it streams (Player.flush_partial) and the socket is
# held meanwhile (TCP back-pressure). Whether a chunk is wanted (not late audio of a reply the
# user interrupted) is known for sure only from its ids, which may come after the data; the turn
# ledger answers early(): WANT (stream it), DROP (skip the data undecoded) or WAIT (decode
# tentatively; if it outgrows the ring before its ids arrive, the rest is skipped and counted).
#
# Anything else (events, status, errors, observations) is assembled whole in the frame buffer
# (max_message bytes) and parsed; a bigger message, a binary one or a malformed one is dropped,
# counted by reason and logged, and the channel keeps running.
#
# JSON allows escapes inside the base64 string (`\/` is common, `\u0041` legal); they are
# undone here, across fragment boundaries, and an escaped quote does not end the string.
from . import fast, log
from .compat import const
from .leanjson import loads_lean
from .shapes import ProtocolError
from .turns import PENDING

_HEAD = const(0)  # before the audio data (or a whole non-audio message)
_DATA = const(1)  # inside the base64 string of an audio chunk
_TAIL = const(2)  # after the data string
_SKIP = const(3)  # oversized or binary: ignore the rest of the message

WANT = const(1)
DROP = const(0)
WAIT = const(-1)

_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_DATA_KEY = b'"data"'

# Drop reasons, counted in `drops` (fixed keys: the dict never grows).
REASONS = ("oversized", "binary", "malformed", "no_memory", "bad_base64", "bad_format", "skipped", "overflow", "misattributed", "stale_played")


def data_value_at(buf, start, n):
    """Where the string value of the first `"data"` key at or after start in buf[:n] begins
    (just past its opening quote), or -1: no such key, or its value is not (yet) there or not
    a string. JSON whitespace around the colon is allowed."""
    k = buf.find(_DATA_KEY, start, n)
    if k < 0:
        return -1
    i = k + len(_DATA_KEY)
    colon = False
    while i < n:
        c = buf[i]
        if c == 58 and not colon:  # ':'
            colon = True
        elif c not in b" \t\r\n":
            break
        i += 1
    if not colon or i >= n or buf[i] != 34:  # '"'
        return -1
    return i + 1


class Downlink:
    """ws sink: feed(buf, off, n, first, last, is_text) for each payload fragment.

    codec: the surface's parser: parse_server_frame(memoryview, report) -> frame (raises
    ProtocolError) and audio(frame) -> None (not audio), a string (why it is refused) or
    (item_id, content_index, response_id).
    on_frame(frame): gets every other frame.
    turns: the ledger (turns.Turns): early() -> WANT/DROP/WAIT at the start of an audio chunk's
    data; assumed() -> the item id to count streamed audio under before the chunk's own ids
    arrive; on_audio(item_id, content_index, response_id) -> whether the chunk is wanted;
    audio_done(ms) for what was made playable; stale_played() when streamed audio turned out to
    be late.
    buf: the frame buffer (max_message bytes), allocated early by the app.
    decode_room: a leanjson.DecodeRoom, given up when a message in buf fails to decode for lack of
    memory, or None."""

    streams = True  # the WebSocket does not enforce max_message: this sink bounds messages

    def __init__(self, player, codec, on_frame, turns, buf, decode_room=None):
        self.decode_room = decode_room
        self.player = player
        self.codec = codec
        self.on_frame = on_frame
        self.turns = turns
        self.buf = buf
        # Skeleton of the last audio chunk that validated (about 250 bytes from a Meerkat
        # server); a longer one is simply parsed every time.
        self.skel = bytearray(512)
        self.skel_len = -1
        self.skel_ids = None  # (item_id, content_index, response_id) of that skeleton
        self._esc = bytearray(6)  # an escape sequence inside the data string, being collected
        self._en = 0
        self.n = 0
        self.mode = _HEAD
        self.data_at = -1  # where the data string starts in buf (after its opening quote)
        self.b64_ok = True
        self.want = WANT
        self._barge_ins = 0
        self.streamed = None  # the item id audio was committed to while streaming, or None
        self.overflow = False
        # counters
        self.frames = 0
        self.audio_chunks = 0
        self.dropped = 0
        self.drops = {}
        for r in REASONS:
            self.drops[r] = 0
        self.unknown = 0  # unknown event types / fields / codes reported by the codec

    def hold(self):
        # Asked by the WebSocket before each hand-off. The player must be able to take a full
        # staging buffer (1 KB of base64 decodes to 768 bytes) before bytes that may be audio
        # come in; while it cannot, nothing more is read and a server that streams faster than
        # real time is held back by TCP. A chunk that has filled the ring with not-yet-playable
        # audio is made playable here (WANT), or, when nothing playable is left to drain
        # (WAIT), reading goes on and the rest of it is skipped: holding then would wait
        # forever. After the data string (the skeleton's tail) nothing goes to the player.
        p = self.player
        if p.space() >= 1024:
            return False
        mode = self.mode
        if mode == _TAIL or mode == _SKIP:
            return False
        if mode == _DATA:
            if self.want == DROP or self.overflow:
                return False
            if self.want == WANT and p.tentative():
                self._stream()
                return p.space() < 1024
            if self.want == WAIT and not p.queued():
                log.debug("down", "overflow while waiting for the ids: space %d, tentative %d", p.space(), p.tentative())
                self.overflow = True
                return False
        return True

    def _stream(self):
        item = self.streamed
        if item is None:
            item = self.streamed = self.turns.assumed()
        n = self.player.flush_partial(item)
        if n < 0:
            self.want = DROP  # a stopped item, or no room: the rest of the chunk is not played
            self.player.abort_chunk()
        elif n:
            self.turns.audio_done(n)

    def feed(self, src, off, n, first, last, is_text):
        if first:
            self.n = 0
            self.data_at = -1
            self.b64_ok = True
            self._en = 0
            self.streamed = None
            self.overflow = False
            self.mode = _HEAD if is_text else _SKIP
            if not is_text:
                self._drop("binary", "binary message from the server ignored")
        end = off + n
        while off < end and self.mode != _SKIP:
            if self.mode == _DATA:
                off = self._data(src, off, end)
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
                    if self.data_at >= 0:
                        self.player.abort_chunk()
                    self._drop("oversized", "message larger than the %d-byte frame buffer (max_message)" % len(self.buf))
            else:
                self._finish()
            self.mode = _HEAD  # between messages: the next one may begin with audio (hold())

    def _data(self, src, off, end):
        # Inside the data string: decode up to the closing quote, undoing escapes.
        while off < end:
            if self._en:
                e = self._esc
                e[self._en] = src[off]
                self._en += 1
                off += 1
                if self._en == 2 and e[1] != 117:  # not \uXXXX: a one-character escape
                    self._unescape(2)
                elif self._en == 6:
                    self._unescape(6)
                continue
            q = src.find(b'"', off, end)
            stop = end if q < 0 else q
            bs = src.find(b"\\", off, stop)
            if bs >= 0:
                stop = bs
            if stop > off:
                self._take(src, off, stop - off)
            off = stop
            if bs >= 0:
                self._esc[0] = 92
                self._en = 1
                off += 1
            elif q >= 0:
                self.mode = _TAIL
                # Keep the closing quote and what follows (the skeleton's tail).
                k = min(end - q, len(self.buf) - self.n)
                if k < end - q:
                    self.mode = _SKIP
                    return end
                fast.copy(self.buf, self.n, src, q, k)
                self.n += k
                return end
        return off

    def _unescape(self, n):
        e = self._esc
        self._en = 0
        c = e[1]
        if n == 6:
            c = 0
            for i in range(2, 6):
                d = e[i]
                v = d - 48 if 48 <= d <= 57 else (d | 32) - 87 if 97 <= (d | 32) <= 102 else -1
                if v < 0:
                    self.b64_ok = False
                    return
                c = c * 16 + v
        if c > 127 or _B64.find(bytes((c,))) < 0:
            self.b64_ok = False  # \" \\ \n ... or a non-base64 character: not audio data
            return
        e[0] = c
        self._take(e, 0, 1)

    def _take(self, src, off, n):
        if not self.b64_ok or self.want == DROP:
            return
        p = self.player
        if self.overflow:
            return
        if (self._nq(n)) > p.space():
            # More than fits: stream what is there (WANT) or give up on the rest (WAIT).
            if self.want == WANT and p.tentative():
                self._stream()
                if self.want == DROP:
                    return
            if self._nq(n) > p.space():
                log.debug("down", "overflow: want %d, %d to decode, space %d, tentative %d, queued %d", self.want, n, p.space(), p.tentative(), p.queued())
                self.overflow = True
                return
        self.b64_ok = p.feed_b64(src, off, n)

    def _nq(self, n):
        return (n + 3) // 4 * 3

    def _find_data(self, new_from):
        # Look for `"data"<ws>:<ws>"` in the bytes just appended (the key may straddle the
        # previous fragment, hence the look-back). Only audio (and video) chunks have a "data"
        # field; whether this one is audio is known when the skeleton is parsed at the end, so
        # decode tentatively now and commit or abort then (works for any key order).
        buf = self.buf
        i = data_value_at(buf, max(0, new_from - 16), self.n)
        if i < 0:
            return  # none, or its value has not arrived yet (the look-back covers that)
        self.data_at = i
        self.want = self.turns.early()
        self._barge_ins = self.turns.barge_ins  # a barge-in during the chunk cuts it anyway
        self.player.begin_chunk()
        n = self.n
        self.n = i
        self.mode = _DATA
        # What was assembled after the opening quote goes through the data path in place: it
        # decodes from buf[i:n] and, at the closing quote, moves the skeleton's tail down to
        # buf[i:] (a forward copy to a lower offset: safe on overlap).
        if n > i:
            self._data(buf, i, n)

    def _finish(self):
        self.frames += 1
        if self.data_at < 0:
            frame = self._parse(self.buf, self.n)
            if frame is not None:
                self.on_frame(frame)
            return
        player = self.player
        ids = self._audio_ids()
        if ids is None:
            player.abort_chunk()
            return
        if not self.b64_ok:
            player.abort_chunk()
            self._drop("bad_base64", "audio chunk with invalid base64 data")
            return
        self.audio_chunks += 1
        item_id, content_index, response_id = ids
        wanted = self.turns.on_audio(item_id, content_index, response_id)
        streamed = self.streamed
        if not wanted:
            player.abort_chunk()
            if streamed is not None and self.turns.barge_ins == self._barge_ins:
                self._drop("stale_played", "streamed audio turned out to be late (item %s)" % log.esc(item_id or "-"))
                self.turns.stale_played()
            return
        if self.want == DROP:
            # Skipped undecoded (late by the ledger's state) although its ids look current.
            self._drop("skipped", "audio chunk skipped as late before its ids arrived")
            player.abort_chunk()
            return
        if streamed is not None and streamed != item_id:
            # Streamed before its ids came, under the ledger's guess (turns.assumed()).
            if streamed is PENDING and player.rename(streamed, item_id):
                streamed = item_id
            else:
                # Counted under another item (the guess was wrong), or the item had audio
                # of its own already: this part of the chunk plays but is nobody's, and the
                # item's cursor errs low (the safe side).
                if streamed is PENDING:
                    player.retire(streamed)
                if item_id is not None:
                    self._drop("misattributed", "streamed audio counted under another item than %s" % log.esc(item_id))
                streamed = item_id
        item = streamed if streamed is not None else item_id
        if self.overflow:
            # The head only: what was decoded ends anywhere in a quad; its loose end goes.
            n = player.flush_partial(item)
            player.abort_chunk()
        else:
            n = player.commit_chunk(item, content_index)
        if n == -1:
            self._drop("bad_base64", "audio chunk cut short (a stray base64 character)")
            return
        if self.overflow:
            self._drop("overflow", "audio chunk larger than the playback ring before its ids arrived: its end was skipped")
        if n > 0:
            self.turns.audio_done(n)

    def _audio_ids(self):
        # Same skeleton bytes as the last valid chunk: same validation result, no parse.
        n = self.n
        if n == self.skel_len and fast.equal(self.buf, 0, self.skel, 0, n):
            return self.skel_ids
        frame = self._parse(self.buf, n)
        if frame is None:
            return None
        ids = self.codec.audio(frame)
        if ids is None:
            self.on_frame(frame)  # a video chunk or similar: its data is not kept
            return None
        if type(ids) is str:
            self._drop("bad_format", ids)
            return None
        if n <= len(self.skel):
            fast.copy(self.skel, 0, self.buf, 0, n)
            self.skel_len = n
            self.skel_ids = ids
        return ids

    def _parse(self, buf, n):
        report = []
        try:
            try:
                frame = self.codec.parse_server_frame(memoryview(buf)[:n], report)
            except ProtocolError as exc:
                if "memory" not in exc.reason:
                    raise
                # Not for want of memory but of one block big enough for its strings: again,
                # each long string made in one allocation (the room given up for it).
                report = []
                frame = self.codec.check_server_frame(loads_lean(buf, n, self.decode_room), report)
        except ProtocolError as exc:
            if "memory" in exc.reason:  # valid, perhaps, but no room for it on this heap now
                self._drop("no_memory", "server frame of %d bytes: %s" % (n, exc.reason))
            else:
                self._drop("malformed", "malformed server frame: " + exc.reason)
            return None
        if report:
            self.unknown += len(report)
            log.debug("down", "tolerated: %s", log.esc(" ".join(report)))
        return frame

    def _drop(self, reason, why):
        self.dropped += 1
        self.drops[reason] += 1
        log.warn("down", "dropped (%s): %s", reason, why)
