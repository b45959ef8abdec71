# meerkat_rt.leanjson: the same values as json.loads, and a 4 KB string decoded on a heap whose
# free memory is all in small pieces (on the unix port at 110K), where json.loads cannot.
import gc
import json

from meerkat_rt.compat import IS_MICROPYTHON
from meerkat_rt.leanjson import DecodeRoom, loads_lean, room_size
from meerkat_rt.shapes import ProtocolError


def _lean(raw, room=None):
    buf = bytearray(len(raw) + 7)  # (bigger than the message, as the frame buffer is)
    buf[: len(raw)] = raw
    return loads_lean(buf, len(raw), room)


def _raises(raw, words):
    try:
        _lean(raw)
    except ProtocolError as exc:
        assert words in exc.reason, exc.reason
        return
    raise AssertionError("no ProtocolError for %r" % raw[:40])


def test_same_values_as_json_loads():
    long_text = "y" * 700 + 'q"\\/\n\t\r\b\f\u00e9\u20ac\U0001F99C end'
    msgs = [
        {"observation": "user_transcript_final", "text": long_text, "e": "", "n": 1.5, "t": True},
        {"k" * 600: [1, "z" * 900, {"a": "short", "b": None}], "x": ["w" * 512, "v" * 511]},
        ["a" * 520, "b" * 520, "c" * 520],
        {"only": "short", "list": [1, 2, 3]},
        "s" * 1000,
    ]
    for msg in msgs:
        raws = [json.dumps(msg).encode()]  # (MicroPython's json writes non-ASCII as it is)
        if not IS_MICROPYTHON:
            raws.append(json.dumps(msg, ensure_ascii=False).encode())
        for raw in raws:
            got = _lean(raw)
            assert got == json.loads(raw), str(msg)[:40]
            assert got == msg
    escaped = b'{"a":"' + b"x" * 600 + b'\\u00e9\\u20AC\\"\\n"}'  # what CPython servers send
    assert _lean(escaped) == json.loads(escaped) == {"a": "x" * 600 + '\u00e9\u20ac"\n'}


def test_surrogates_are_repaired_as_shapes_text_does():
    pair = b'{"a":"' + b"x" * 600 + b'\\ud83e\\udd9c"}'
    assert _lean(pair)["a"] == "x" * 600 + "\U0001F99C"
    for lone in (b"\\ud83e", b"\\udd9c", b"\\ud83ex", b"\\ud83e\\u0041"):
        got = _lean(b'{"a":"' + b"x" * 600 + lone + b'"}')["a"]
        assert got.startswith("x" * 600 + "\ufffd"), lone
    assert _lean(b'{"a":"' + b"x" * 600 + b'\\ud83e\\u0041"}')["a"].endswith("\ufffdA")


def test_bad_input_is_a_protocol_error():
    body = b"x" * 600
    _raises(b'{"a":"' + body + b'\\q"}', "not valid JSON")  # unknown escape
    _raises(b'{"a":"' + body + b'\\u12G4"}', "not valid JSON")
    _raises(b'{"a":"' + body + b'\\u12"}', "not valid JSON")
    _raises(b'{"a":"' + body, "not valid JSON")  # unterminated
    _raises(b'{"a":"' + body + b'"', "not valid JSON")  # the skeleton is cut short
    _raises(b'{"a":"' + body + b'\xff\xfe"}', "UTF-8")


def test_a_placeholder_lookalike_is_refused_not_guessed_at():
    for other in ("\u0000\u0001A", "\u0000\u0001B"):
        raw = json.dumps({"a": "x" * 600, "b": "w" * 600, "c": other}).encode()
        _raises(raw, "placeholder")
    raw = json.dumps({"a": "x" * 600, "c": "\u0000\u0001C"}).encode()  # not one of ours
    assert _lean(raw) == json.loads(raw)


def test_a_4k_string_decodes_on_a_heap_in_small_pieces():
    if not IS_MICROPYTHON:
        return  # CPython's heap does not fragment like this
    max_message = 4096
    text = "word " * 790 + "\u00e9nd"
    raw = json.dumps({"observation": "user_transcript_final", "text": text}).encode()
    assert len(raw) <= max_message
    gc.collect()
    buf = bytearray(max_message)
    buf[: len(raw)] = raw
    room = DecodeRoom(room_size(max_message))
    assert room.buf is not None
    # Fill the rest of the heap with 200-byte blocks, then free every other one: half the heap
    # is free, in pieces of about 200 bytes.
    filler = [None] * 1000
    n = 0
    try:
        while n < len(filler):
            filler[n] = bytearray(200)
            n += 1
    except MemoryError:
        pass
    for i in range(0, n, 2):
        filler[i] = None
    gc.collect()
    free = gc.mem_free()
    try:
        try:
            json.loads(memoryview(buf)[: len(raw)])
            plain = "decoded"
        except MemoryError:
            plain = "MemoryError"
        got = loads_lean(buf, len(raw), room)
    finally:
        filler = None
        gc.collect()
    assert free > 8 * 1024, free  # plenty free, only not in one piece
    assert plain == "MemoryError"  # json.loads needs two 4 KB blocks
    assert got["text"] == text and room.buf is None
    room.arm()
    assert room.buf is not None


def test_the_room_is_given_up_once_and_taken_back():
    room = DecodeRoom(1000)
    assert room.buf is not None and len(room.buf) == 1000
    room.release()
    assert room.buf is None
    room.release()
    room.arm()
    assert room.buf is not None
