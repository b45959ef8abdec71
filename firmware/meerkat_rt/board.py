# meerkat_rt.board: boards/<name>.json -> a validated dict; builds the machine.I2S objects.
#
# The only firmware module that imports machine (lazily, in make_mic/make_speaker). Every field
# is checked once; an error names the board and the field (boards/README.md documents them).
# Needed only at start-up: the app may drop it from sys.modules afterwards to free its heap.
#
# It also checks the board's internal-RAM budget and logs it: the ESP32 port allocates I2S DMA
# buffers from internal RAM (machine_i2s.c), where Wi-Fi, lwIP and the TLS buffers live too,
# and a DMA that does not fit fails at start-up, at the first stop's re-init, or starves TLS.
import json

from . import log

RATE = 24000


class BoardError(ValueError):
    pass


# Fields: [kind, low, high, default]; no default = required. Kinds: p pin, i integer, n number,
# b bool, s string, t string or list of strings (notes), m speaker mode, o object (mic, speaker).
# A JSON string, parsed only while checking: a table of tuples would stay in the heap.
_SPEC = """{
"": {"name": ["s", 0, 0, ""], "description": ["s", 0, 0, ""], "psram": ["b", 0, 0, false],
  "ring_ms": ["i", 80, 10000, null], "playback_ms": ["i", 200, 10000, null],
  "echo_coupling_db": ["n", -40, 20, -6], "notes": ["t", 0, 0, ""], "mic": ["o"], "speaker": ["o"],
  "internal_ram": ["i", 8192, 524288, null], "wifi_reserve": ["i", 0, 131072, 8192],
  "tls_reserve": ["i", 0, 131072, 20480]},
"mic": {"i2s": ["i", 0, 1], "sck": ["p", 0, 48], "ws": ["p", 0, 48], "sd": ["p", 0, 48],
  "bits": ["i", 16, 32, 16], "shift": ["i", 0, 24, null], "ibuf": ["i", 2048, 131072, null],
  "highpass": ["b", 0, 0, false], "model": ["s", 0, 0, ""]},
"speaker": {"i2s": ["i", 0, 1], "sck": ["p", 0, 48], "ws": ["p", 0, 48], "sd": ["p", 0, 48],
  "ibuf": ["i", 2048, 131072, null], "mode": ["m", 0, 0, "drain"], "block_ms": ["i", 10, 100, 20],
  "gain_db": ["n", -40, 12, 0], "enable": ["p", 0, 48, null], "enable_level": ["i", 0, 1, 1],
  "flush": ["b", 0, 0, true], "model": ["s", 0, 0, ""]}
}"""


def _err(name, msg):
    return BoardError("board %s: %s" % (name, msg))


def _fields(name, raw, spec, where):
    if type(raw) is not dict:
        raise _err(name, "%s must be an object" % (where[:-1] or "the file"))
    for key in raw:
        if key not in spec:
            raise _err(name, "unknown field " + where + key)
    out = {}
    for key in spec:
        s = spec[key]
        kind = s[0]
        field = where + key
        if key not in raw and len(s) < 4:
            raise _err(name, field + " is missing" + (" (null: none)" if kind == "o" else ""))
        v = raw.get(key, s[3] if len(s) > 3 else None)
        out[key] = v
        if v is None or kind == "o":
            continue
        t = type(v)
        if kind in "pin":
            ok = (t is int or kind == "n" and t is float) and s[1] <= v <= s[2]
            what = "a pin number (0-48)" if kind == "p" else "%s %d..%d" % ("an integer" if kind == "i" else "a number", s[1], s[2])
        elif kind == "b":
            ok = t is bool
            what = "true or false"
        elif kind == "m":
            ok = v in ("drain", "irq", "poll")
            what = '"drain", "irq" or "poll"'
        else:  # s, t
            ok = t is str or kind == "t" and t is list and all(type(x) is str for x in v)
            what = "a string" + (" or a list of strings" if kind == "t" else "")
        if not ok:
            raise _err(name, "%s must be %s" % (field, what))
    return out


def check(raw, name="?"):
    """Validate a decoded board object and fill in the defaults; returns a new dict."""
    spec = json.loads(_SPEC)
    b = _fields(name, raw, spec[""], "")
    b["name"] = b["name"] or name
    mic = b["mic"]
    if mic is not None:
        mic = _fields(name, mic, spec["mic"], "mic.")
        bits = mic["bits"]
        if bits not in (16, 32):
            raise _err(name, "mic.bits must be 16 or 32")
        if mic["shift"] is None:
            mic["shift"] = 16 if bits == 32 else 0
        elif bits == 16 and mic["shift"]:
            raise _err(name, "mic.shift must be 0 with bits 16 (the port keeps the top 16 bits)")
    spk = _fields(name, b["speaker"], spec["speaker"], "speaker.")
    if mic is not None:
        if mic["i2s"] == spk["i2s"]:
            raise _err(name, "speaker.i2s must differ from mic.i2s (one I2S object per direction)")
        for a in ("sck", "ws", "sd", "enable"):
            for c in ("sck", "ws", "sd"):
                if spk[a] == mic[c]:
                    raise _err(name, "speaker.%s uses pin %d, already mic.%s" % (a, spk[a], c))
    b["mic"] = mic
    b["speaker"] = spk
    # Buffers: 2 s where PSRAM holds them; a no-PSRAM heap (~110 KB) affords a few frames.
    psram = b["psram"]
    if b["ring_ms"] is None:
        b["ring_ms"] = 2000 if psram else 280
    if b["playback_ms"] is None:
        b["playback_ms"] = 2000 if psram else 300
    # Internal RAM: what the IDF keeps once the GC heap has grown (a WROOM: ~40 KB, commit
    # f6d630877c; with PSRAM the GC heap lives there); DMA sizes that fit it with the reserves.
    if b["internal_ram"] is None:
        b["internal_ram"] = 98304 if psram else 40960
    if mic is not None and mic["ibuf"] is None:
        mic["ibuf"] = 16384 if psram else 8192
    if spk["ibuf"] is None:
        spk["ibuf"] = 8192 if psram else 4096
    i2s, room = ram_budget(b)
    what = "%s: I2S DMA takes %d B of internal RAM, %d B are left after Wi-Fi (%d) and TLS (%d) of %d"
    args = (b["name"], i2s, room, b["wifi_reserve"], b["tls_reserve"], b["internal_ram"])
    if i2s > room:
        log.warn("board", what + ": expect ENOMEM from I2S init, Wi-Fi or the TLS handshake; lower mic.ibuf, speaker.ibuf", *args)
    else:
        log.info("board", what, *args)
    return b


def dma_bytes(sec, rx):
    """Internal RAM the ESP32 port's I2S takes for one bus (machine_i2s.c get_dma_buf_count):
    DMA buffers of 256 frames, at least two; an RX frame is 8 bytes whatever `bits` is (it
    always reads 32-bit stereo), a TX frame bits/8 (mono)."""
    frame = 8 if rx else sec.get("bits", 16) // 8
    n = sec["ibuf"] // (256 * frame)
    return (n if n > 2 else 2) * 256 * frame


def ram_budget(b):
    """(internal RAM the board's I2S takes, internal RAM left for it after the Wi-Fi and TLS
    reserves). A speaker in irq mode adds its copy task's 2 KB stack."""
    spk = b["speaker"]
    i2s = dma_bytes(spk, False) + (2048 if spk["mode"] == "irq" else 0)
    if b["mic"] is not None:
        i2s += dma_bytes(b["mic"], True)
    return i2s, b["internal_ram"] - b["wifi_reserve"] - b["tls_reserve"]


def _candidates(name):
    if name.endswith(".json") or "/" in name:
        return (name,)
    here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    f = name + ".json"
    # cwd (a checkout, the simulator), the device's root, next to the package, the checkout
    return ("boards/" + f, "/boards/" + f, here + "/boards/" + f, here + "/" + f, here + "/../../boards/" + f)


def load(name_or_path):
    """Read a board by name (boards/<name>.json, looked up in a few places) or path."""
    name = name_or_path.rsplit("/", 1)[-1]
    if name.endswith(".json"):
        name = name[:-5]
    for path in _candidates(name_or_path):
        try:
            f = open(path)
        except OSError:
            continue
        try:
            raw = json.load(f)
        except ValueError:
            raise _err(name, path + " is not valid JSON")
        finally:
            f.close()
        return check(raw, name)
    raise _err(name, "no file %s.json in boards/ (known: see boards/README.md)" % name)


def _i2s(sec, rx):
    from machine import I2S

    return I2S(sec["i2s"], **_kwargs(sec, I2S.RX if rx else I2S.TX))


def _kwargs(sec, mode):
    from machine import I2S, Pin

    bits = sec.get("bits", 16)
    return {
        "sck": Pin(sec["sck"]),
        "ws": Pin(sec["ws"]),
        "sd": Pin(sec["sd"]),
        "mode": mode,
        "bits": bits,
        "format": I2S.MONO,
        "rate": RATE,
        "ibuf": sec["ibuf"],
    }


def make_mic(b):
    """The microphone's machine.I2S (RX, 24 kHz mono)."""
    if b["mic"] is None:
        raise _err(b["name"], "mic is null: no microphone usable through machine.I2S")
    return _i2s(b["mic"], True)


def speaker_kwargs(b):
    """I2S.init() arguments of the speaker: Player(reinit=...) uses them to flush the DMA."""
    from machine import I2S

    return _kwargs(b["speaker"], I2S.TX)


def make_speaker(b):
    """The speaker's machine.I2S (TX, 16-bit, 24 kHz mono), with the amplifier enabled."""
    from machine import Pin

    spk = b["speaker"]
    if spk["enable"] is not None:
        Pin(spk["enable"], Pin.OUT, value=spk["enable_level"])
    return _i2s(spk, False)
