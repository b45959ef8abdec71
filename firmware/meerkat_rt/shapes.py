# meerkat_rt.shapes: JSON decoding and table-driven validation, shared by both server surfaces
# and the configuration.
#
# A shape is a string of space-separated `key:kind` fields; a trailing `?` marks an optional
# field. Kinds: s string, u u32, c u8, n unsigned integer, b bool, v a fixed string (the caller's
# `version`), l list of strings, o object (not looked into), o=NAME a nested shape from the
# caller's table, e=NAME a string from one of the caller's enums, k=NAME a list of strings whose
# unknown values are reported, a any value. Strings cost a few bytes of heap where a tuple of tuples costs
# 50-100 bytes per entry, which matters on a 112 KB heap.
#
# check() raises ProtocolError with a reason naming the field, never quoting a value (a token or
# a Wi-Fi key must not leak through an error message). Unknown fields, and unknown values of `k`
# lists, are appended to the caller's `report` list instead of being rejected.
import json

from .compat import IS_MICROPYTHON


class ProtocolError(ValueError):
    """Input that is not a valid frame or document. `reason` says what is wrong and where."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


_KIND_WORDS = {
    "s": "a string",
    "u": "an integer in 0..2**32-1",
    "c": "an integer in 0..255",
    "n": "a non-negative integer",
    "b": "a boolean",
    "v": "the protocol version string",
    "l": "a list of strings",
    "k": "a list of strings",
    "e": "one of the known values",
    "o": "an object",
    "a": "any value",
}


def check(obj, shape, where, report=None, shapes=None, enums=None, version=None):
    """Validate a decoded JSON object against a shape string; returns obj."""
    if type(obj) is not dict:
        raise ProtocolError("field %s must be an object" % where)
    for field in shape.split():
        sep = field.find(":")
        key = field[:sep]
        kind = field[sep + 1]
        if key not in obj:
            if field[-1] == "?":
                continue
            raise ProtocolError("missing field %s.%s" % (where, key))
        v = obj[key]
        t = type(v)
        if kind == "s":
            ok = t is str
        elif kind in "ucn":
            # bool is an int subtype on both runtimes; JSON true is not a number.
            ok = t is int and v >= 0 and (kind == "n" or v <= (255 if kind == "c" else 0xFFFFFFFF))
        elif kind == "b":
            ok = t is bool
        elif kind == "a":
            ok = True
        elif kind == "v":
            ok = t is str and v == version
        elif kind in "lk":
            ok = t is list
            for item in v if ok else ():
                if type(item) is not str:
                    ok = False
                elif kind == "k" and report is not None and item not in enums[_ref(field)]:  # type: ignore
                    report.append("value:%s.%s" % (where, key))
        elif kind == "e":
            ok = t is str and v in enums[_ref(field)]  # type: ignore
        else:  # "o"
            ok = t is dict
            if ok and "=" in field:
                check(v, shapes[_ref(field)], where + "." + key, report, shapes, enums, version)  # type: ignore
        if not ok:
            raise ProtocolError("field %s.%s must be %s" % (where, key, _KIND_WORDS[kind]))
    if report is not None:
        for key in obj:
            if (" %s:" % key) not in " " + shape:
                report.append("field:%s.%s" % (where, key))
    return obj


def _ref(field):
    # "key:o=name?" -> "name"
    return field[field.find("=") + 1 :].rstrip("?")


def loads(data, what="frame"):
    """json.loads of str, bytes or memoryview; ProtocolError when it is not JSON."""
    if not IS_MICROPYTHON and type(data) is memoryview:
        data = bytes(data)  # CPython's json takes no memoryview; MicroPython's does, copy-free
    try:
        return json.loads(data)
    except (ValueError, UnicodeError):
        # Both runtimes raise ValueError (CPython's JSONDecodeError subclasses it).
        raise ProtocolError(what + " is not valid JSON")
    except RuntimeError:  # RecursionError on CPython, recursion depth on MicroPython
        raise ProtocolError(what + " is nested too deeply")
    except MemoryError:
        pass
    # The heap had no block for it: often only fragmented by garbage (the audio path makes
    # none, but the app's handlers may); once after a collection. A small message can also
    # expand into more objects than a 112 KB heap holds (deeply nested arrays): then the
    # half-built objects are garbage and the caller survives.
    import gc

    gc.collect()
    try:
        return json.loads(data)
    except MemoryError:
        raise ProtocolError(what + " does not fit in memory when decoded")


def _suspect(s):
    # Any 0xED lead byte (a surrogate half, or Hangul, which the repair leaves as it is)? Looked
    # for 256 characters at a time: a 4 KB transcript is not copied whole on a fragmented heap.
    try:
        if len(s) <= 256:
            return b"\xed" in s.encode()
        for i in range(0, len(s), 256):
            if b"\xed" in s[i : i + 256].encode():
                return True
    except UnicodeError:  # CPython: a lone surrogate
        return True
    return False


def text(s):
    """A server string as valid UTF-8 for the app.

    JSON may carry a character outside the BMP as a surrogate-pair escape ("\\ud83e\\udd9c");
    MicroPython's json decodes each half on its own into a 3-byte sequence (invalid UTF-8), and
    CPython keeps a lone half as an unencodable code point. Pairs are joined into the real
    character, lone halves become U+FFFD. Plain strings (no 0xED byte) are returned as they
    are, without a copy."""
    if not _suspect(s):
        return s
    raw = s.encode("utf-8", "surrogatepass") if not IS_MICROPYTHON else s.encode()
    out = bytearray()
    i = 0
    n = len(raw)
    while i < n:
        c = raw[i]
        if c == 0xED and i + 2 < n and raw[i + 1] >= 0xA0:
            hi = ((raw[i + 1] & 0x0F) << 6) | (raw[i + 2] & 0x3F)  # 10 bits of a surrogate
            if raw[i + 1] < 0xB0 and i + 5 < n and raw[i + 3] == 0xED and 0xB0 <= raw[i + 4] < 0xC0:
                lo = ((raw[i + 4] & 0x0F) << 6) | (raw[i + 5] & 0x3F)
                cp = 0x10000 + (hi << 10) + lo
                out.append(0xF0 | cp >> 18)
                out.append(0x80 | (cp >> 12) & 0x3F)
                out.append(0x80 | (cp >> 6) & 0x3F)
                out.append(0x80 | cp & 0x3F)
                i += 6
                continue
            out += b"\xef\xbf\xbd"  # a lone half
            i += 3
            continue
        out.append(c)
        i += 1
    return bytes(out).decode()
