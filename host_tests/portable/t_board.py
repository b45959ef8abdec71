# meerkat_rt.board: every shipped board loads; each kind of bad field gives an error naming
# the board and the field; the I2S objects are built from the fake machine module.
import json

from meerkat_rt import board

try:
    import machine  # noqa: F401  (the fake: MICROPYPATH on the unix port)
except ImportError:  # CPython: put the fakes on the path
    import sys

    from meerkat_tools import paths

    sys.path.append(str(paths.FAKES))

NAMES = ("esp32s3_devkitc", "esp32_devkit", "atom_echo", "sim")


def _path(name):
    # The unix port runs this from a temporary build directory: find boards/ from the cwd.
    for prefix in ("boards/", "../boards/", "../../boards/"):
        try:
            open(prefix + name + ".json").close()
            return prefix + name + ".json"
        except OSError:
            pass
    raise AssertionError("boards/%s.json not found from the current directory" % name)


def _raw(name="esp32_devkit"):
    with open(_path(name)) as f:
        return json.load(f)


def _error(raw, name="t"):
    try:
        board.check(raw, name)
    except board.BoardError as exc:
        return str(exc)
    raise AssertionError("no error for %r" % (raw,))


def test_every_board_file_is_valid():
    for name in NAMES:
        b = board.load(_path(name))
        assert b["name"] == name
        spk = b["speaker"]
        assert spk["mode"] in ("drain", "irq", "poll") and spk["ibuf"] >= 2048
        assert b["ring_ms"] >= 80 and b["playback_ms"] >= 200
        if b["psram"]:
            assert b["ring_ms"] == 2000
        else:
            assert b["ring_ms"] <= 320, name  # the ring must fit a no-PSRAM heap
    assert board.load(_path("atom_echo"))["mic"] is None
    mic = board.load(_path("esp32s3_devkitc"))["mic"]
    assert (mic["bits"], mic["shift"], mic["highpass"]) == (32, 14, True)


def test_defaults_are_filled_in():
    raw = {"mic": {"i2s": 0, "sck": 1, "ws": 2, "sd": 3}, "speaker": {"i2s": 1, "sck": 4, "ws": 5, "sd": 6}}
    b = board.check(raw, "minimal")
    assert b["name"] == "minimal" and b["psram"] is False
    assert (b["ring_ms"], b["playback_ms"], b["echo_coupling_db"]) == (280, 300, -6)
    assert b["mic"] == {"i2s": 0, "sck": 1, "ws": 2, "sd": 3, "bits": 16, "shift": 0, "ibuf": 8192,
                        "highpass": False, "model": ""}
    spk = b["speaker"]
    assert (spk["mode"], spk["ibuf"], spk["block_ms"], spk["gain_db"], spk["enable"], spk["flush"]) == (
        "drain", 4096, 20, 0, None, True)
    assert (b["internal_ram"], b["wifi_reserve"], b["tls_reserve"]) == (40960, 8192, 20480)
    raw["mic"]["bits"] = 32
    raw["psram"] = True
    b = board.check(raw, "minimal")
    assert b["mic"]["shift"] == 16 and b["ring_ms"] == 2000
    assert (b["mic"]["ibuf"], b["speaker"]["ibuf"], b["internal_ram"]) == (16384, 8192, 98304)


def test_errors_name_the_board_and_the_field():
    cases = (
        (("mic", "sck"), "x", "mic.sck must be a pin number"),
        (("mic", "sck"), 49, "mic.sck must be a pin number"),
        (("mic", "bits"), 24, "mic.bits must be 16 or 32"),
        (("mic", "shift"), 3, "mic.shift must be 0 with bits 16"),
        (("mic", "ibuf"), 100, "mic.ibuf must be an integer 2048..131072"),
        (("mic", "highpass"), 1, "mic.highpass must be true or false"),
        (("speaker", "mode"), "dma", 'speaker.mode must be "drain", "irq" or "poll"'),
        (("speaker", "gain_db"), "loud", "speaker.gain_db must be a number -40..12"),
        (("speaker", "i2s"), 0, "speaker.i2s must differ from mic.i2s"),
        (("speaker", "sck"), 32, "speaker.sck uses pin 32, already mic.sck"),
        (("speaker", "enable"), 33, "speaker.enable uses pin 33, already mic.sd"),
        (("speaker", "volume"), 3, "unknown field speaker.volume"),
        (("ring_ms",), 10, "ring_ms must be an integer 80..10000"),
        (("notes",), 5, "notes must be a string or a list of strings"),
        (("colour",), "red", "unknown field colour"),
    )
    for path, value, message in cases:
        raw = _raw()
        d = raw
        for key in path[:-1]:
            d = d[key]
        d[path[-1]] = value
        err = _error(raw, "esp32_devkit")
        assert err.startswith("board esp32_devkit: ") and message in err, (path, err)
    for section, key in (("mic", "ws"), ("speaker", "sd")):
        raw = _raw()
        del raw[section][key]
        assert "%s.%s is missing" % (section, key) in _error(raw), key
    raw = _raw()
    del raw["mic"]
    assert "mic is missing" in _error(raw)
    assert "speaker must be an object" in _error({"mic": None, "speaker": 3})
    assert "the file must be an object" in _error([1])


def test_load_by_name_and_clear_errors_for_missing_or_broken_files():
    try:
        board.load("no_such_board")
    except board.BoardError as exc:
        assert "no_such_board" in str(exc)
    else:
        raise AssertionError("missing board accepted")
    bad = "_bad_board_test.json"
    with open(bad, "w") as f:
        f.write("{nope")
    try:
        board.load(bad)
    except board.BoardError as exc:
        assert "board _bad_board_test: " in str(exc) and "not valid JSON" in str(exc)
    else:
        raise AssertionError("broken JSON accepted")
    finally:
        import os

        os.remove(bad)


def test_make_mic_and_speaker_build_i2s_objects():
    import simworld

    simworld.configure()
    b = board.load(_path("sim"))
    mic = board.make_mic(b)
    spk = board.make_speaker(b)
    assert (mic.mode, mic.bits, mic.ibuf, mic.id) == (1, 16, 65536, 0)
    assert (spk.mode, spk.bits, spk.ibuf, spk.id) == (2, 16, 4096, 1)
    kw = board.speaker_kwargs(b)
    assert (kw["rate"], kw["format"], kw["ibuf"]) == (24000, 0, 4096)
    spk.deinit()
    spk.init(**kw)
    b = board.load(_path("esp32s3_devkitc"))
    assert board.make_mic(b).bits == 32
    try:
        board.make_mic(board.load(_path("atom_echo")))
    except board.BoardError as exc:
        assert "atom_echo" in str(exc) and "mic" in str(exc)
    else:
        raise AssertionError("atom_echo has no usable microphone")
    simworld.get().close()


def _logged(fn):
    from meerkat_rt import log

    lines = []
    old = log.sink
    log.sink = lines.append
    try:
        return fn(), lines
    finally:
        log.sink = old


def test_dma_is_counted_as_the_esp32_port_allocates_it():
    # machine_i2s.c: buffers of 256 frames, at least two; RX frames are 32-bit stereo (8 bytes)
    # whatever bits is, TX frames 16-bit mono (2 bytes).
    assert board.dma_bytes({"ibuf": 16384, "bits": 16}, True) == 16384  # 8 buffers of 2 KB
    assert board.dma_bytes({"ibuf": 5000, "bits": 32}, True) == 4096  # rounded down
    assert board.dma_bytes({"ibuf": 2048, "bits": 16}, True) == 4096  # the minimum of two
    assert board.dma_bytes({"ibuf": 4096}, False) == 4096  # 8 buffers of 512 bytes
    assert board.dma_bytes({"ibuf": 1000}, False) == 1024


def test_every_board_fits_its_internal_ram_and_says_so():
    for name in NAMES:
        b, lines = _logged(lambda: board.load(_path(name)))
        i2s, room = board.ram_budget(b)
        assert i2s <= room, (name, i2s, room)
        assert [line for line in lines if line.startswith("I board: %s: I2S DMA takes %d B" % (name, i2s))], lines
    b = board.load(_path("esp32_devkit"))  # a WROOM: the DMA that leaves Wi-Fi and TLS their share
    assert (b["mic"]["ibuf"], b["speaker"]["ibuf"]) == (8192, 4096)
    assert board.ram_budget(b) == (12288, 12288)


def test_a_board_over_its_internal_ram_budget_is_warned_about():
    raw = _raw("esp32_devkit")
    raw["mic"]["ibuf"] = 16384  # the former WROOM defaults: 24 KB of DMA
    raw["speaker"]["ibuf"] = 8192
    b, lines = _logged(lambda: board.check(raw, "esp32_devkit"))
    assert board.ram_budget(b) == (24576, 12288)
    warn = [line for line in lines if line.startswith("W board: esp32_devkit: I2S DMA takes 24576 B")]
    assert len(warn) == 1 and "12288 B are left" in warn[0] and "ENOMEM" in warn[0], lines
    raw["speaker"]["mode"] = "irq"  # the copy task's stack is internal RAM too
    raw["mic"]["ibuf"] = 8192
    raw["speaker"]["ibuf"] = 4096
    b, lines = _logged(lambda: board.check(raw, "esp32_devkit"))
    assert board.ram_budget(b)[0] == 12288 + 2048 and lines[0].startswith("W board:"), lines
    raw["internal_ram"] = 65536  # a board (or a measurement) with more room
    b, lines = _logged(lambda: board.check(raw, "esp32_devkit"))
    assert lines[0].startswith("I board:"), lines
