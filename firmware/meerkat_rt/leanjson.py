# meerkat_rt.leanjson: decoding a JSON message whose long strings do not fit a fragmented heap.
#
# json.loads builds each string in a buffer that grows 16 bytes at a time and then copies it
# out: a 4 KB string needs two 4 KB blocks at once. On a 110 KB board that plays a reply the
# free heap is some 30 KB in small pieces (measured on the unix port's 32-bit image: largest
# free block 2.5 KB), so a 4 KB transcript would not decode although max_message allows it.
#
# Here each long string is unescaped in place, in the message's own buffer, and made into a str
# with one allocation, in a DecodeRoom held back for that moment; the string's place in the
# buffer becomes a short placeholder and blanks (whitespace between tokens is valid JSON), and
# what json.loads still decodes is the message's small skeleton. The placeholders are then
# swapped for the strings; a message that holds a placeholder's text itself is refused rather
# than guessed at. Only values are taken out (an object key this long is left to json.loads).
# Used only after a plain decode failed for lack of memory.
from .compat import const
from .shapes import ProtocolError, loads

# Strings with this many bytes or more (escapes included) are taken out; shorter ones need two
# blocks of at most 512 bytes, which even a fragmented heap has.
_LONG = const(512)
_MAX_LONG = const(26)  # placeholders end in one letter, A..Z
# The placeholder: "\u0000\u0001" and a letter (15 bytes in the buffer, 3 characters decoded).
_MARK = b'"\\u0000\\u0001'
_SIMPLE = {0x22: 0x22, 0x5C: 0x5C, 0x2F: 0x2F, 0x62: 8, 0x66: 12, 0x6E: 10, 0x72: 13, 0x74: 9}


class DecodeRoom:
    """Contiguous heap held for the one allocation of the longest string a message of
    max_message bytes can hold: allocated with the big buffers, given up (and collected) just
    before that allocation, taken back by the link's housekeeping once it can be."""

    def __init__(self, size):
        self.size = size
        self.buf = None
        self.arm()

    def arm(self):
        if self.buf is None:
            try:
                self.buf = bytearray(self.size)
            except MemoryError:
                pass  # not now: the next housekeeping tries again

    def release(self):
        if self.buf is not None:
            self.buf = None
            import gc

            gc.collect()


def room_size(max_message):
    """The room for a message of max_message bytes: its bytes, and for each long string it can
    hold the small objects made with it (a memoryview, the str's header: 96 bytes with the
    16-byte rounding), which land in the room too when it is the lowest free block."""
    return max_message + 96 * (max_message // _LONG + 1)


def loads_lean(buf, n, room=None):
    """The JSON value in buf[:n] (bytearray), as json.loads gives it; buf is overwritten.
    ProtocolError when it is not JSON (as shapes.loads) or a long string is not UTF-8."""
    longs = []
    i = 0
    while i < n:
        if buf[i] != 0x22:
            i += 1
            continue
        end, escaped = _string_end(buf, i + 1, n)
        if end - i - 1 >= _LONG and len(longs) < _MAX_LONG and not _is_key(buf, end + 1, n):
            longs.append([i, end, _unescape(buf, i + 1, end) if escaped else end])
        i = end + 1
    if not longs:
        return loads(memoryview(buf)[:n])
    # Nothing is allocated from here to the last str but the strs themselves (and their small
    # companions, budgeted in room_size).
    strs: list = [None] * len(longs)
    if room is not None:
        room.release()
    k = 0
    for a, e, m in longs:
        try:
            strs[k] = str(memoryview(buf)[a + 1 : m], "utf-8")
        except UnicodeError:
            raise ProtocolError("frame holds a string that is not valid UTF-8")
        except MemoryError:  # the room was not back yet (taken by the last such message)
            raise ProtocolError("frame does not fit in memory when decoded")
        k += 1
    mark = len(_MARK)
    k = 0
    for a, e, m in longs:
        buf[a : a + mark] = _MARK
        buf[a + mark] = 0x41 + k
        buf[a + mark + 1] = 0x22
        for j in range(a + mark + 2, e + 1):
            buf[j] = 0x20
        k += 1
    seen = bytearray(len(strs))
    obj = _put(loads(memoryview(buf)[:n]), strs, seen)
    for c in seen:
        if c != 1:  # the message had a string just like a placeholder
            raise ProtocolError("frame holds a placeholder's text (\\u0000\\u0001 and a letter)")
    return obj


def _is_key(buf, i, n):
    # Is the string that ended before buf[i] an object key (a colon next)?
    while i < n and buf[i] in b" \t\r\n":
        i += 1
    return i < n and buf[i] == 0x3A


def _string_end(buf, i, n):
    # (index of the closing quote of the string whose content starts at i, any escape seen)
    escaped = False
    while i < n:
        c = buf[i]
        if c == 0x22:
            return i, escaped
        if c == 0x5C:
            escaped = True
            i += 1
        i += 1
    raise ProtocolError("frame is not valid JSON")


def _hex4(buf, i, e):
    # The 4 hex digits at buf[i:] (arithmetic only: nothing allocated).
    if i + 4 > e:
        raise ProtocolError("frame is not valid JSON")
    v = 0
    for j in range(i, i + 4):
        c = buf[j]
        if 0x30 <= c <= 0x39:
            v = v * 16 + c - 0x30
        elif 0x61 <= c | 0x20 <= 0x66:
            c |= 0x20
            v = v * 16 + c - 0x57
        else:
            raise ProtocolError("frame is not valid JSON")
    return v


def _unescape(buf, r, e):
    # The string content buf[r:e] unescaped in place; returns its new end. Every escape is at
    # least as long as what it stands for, so the writes never overtake the reads. A surrogate
    # pair becomes its character, a lone half U+FFFD (what shapes.text makes of them).
    w = r
    while r < e:
        c = buf[r]
        if c != 0x5C:
            buf[w] = c
            w += 1
            r += 1
            continue
        c = buf[r + 1]
        if c != 0x75:  # not \u
            v = _SIMPLE.get(c)
            if v is None:
                raise ProtocolError("frame is not valid JSON")
            buf[w] = v
            w += 1
            r += 2
            continue
        cp = _hex4(buf, r + 2, e)
        r += 6
        if 0xD800 <= cp < 0xE000:
            lo = _hex4(buf, r + 2, e) if cp < 0xDC00 and r + 1 < e and buf[r] == 0x5C and buf[r + 1] == 0x75 else 0
            if 0xDC00 <= lo < 0xE000:
                cp = 0x10000 + ((cp - 0xD800) << 10) + lo - 0xDC00
                r += 6
            else:
                cp = 0xFFFD
        w = _utf8(buf, w, cp)
    return w


def _utf8(buf, w, cp):
    if cp < 0x80:
        buf[w] = cp
        return w + 1
    if cp < 0x800:
        buf[w] = 0xC0 | cp >> 6
        buf[w + 1] = 0x80 | cp & 0x3F
        return w + 2
    if cp < 0x10000:
        buf[w] = 0xE0 | cp >> 12
        buf[w + 1] = 0x80 | (cp >> 6) & 0x3F
        buf[w + 2] = 0x80 | cp & 0x3F
        return w + 3
    buf[w] = 0xF0 | cp >> 18
    buf[w + 1] = 0x80 | (cp >> 12) & 0x3F
    buf[w + 2] = 0x80 | (cp >> 6) & 0x3F
    buf[w + 3] = 0x80 | cp & 0x3F
    return w + 4


def _put(v, strs, seen):
    # The decoded skeleton with its placeholders (values only: keys are never taken out)
    # swapped for the strings; seen[k] counts where placeholder k was found.
    t = type(v)
    if t is str:
        if len(v) == 3 and v[0] == "\x00" and v[1] == "\x01":
            k = ord(v[2]) - 0x41
            if 0 <= k < len(strs):
                seen[k] += 1
                return strs[k]
        return v
    if t is dict:
        for key in v:
            val = v[key]
            new = _put(val, strs, seen)
            if new is not val:
                v[key] = new  # (an existing key: the dict does not change size while iterated)
    elif t is list:
        for i in range(len(v)):
            v[i] = _put(v[i], strs, seen)
    return v
