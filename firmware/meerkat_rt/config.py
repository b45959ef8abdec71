# meerkat_rt.config: config.json -> one validated dict with documented defaults.
#
# Every field is checked once at start-up; an error names the field and what it must be, never
# the value (the file holds the Wi-Fi key). Unknown fields are errors too: a misspelt key that
# was silently ignored would look like a broken device. config.example.json lists every field.
import json

from .shapes import ProtocolError, check

ROLES = ("primary", "observer")
TURNING_MODES = ("provider_managed", "explicit_commit")
SURFACES = ("auto", "v2", "live")


class ConfigError(ValueError):
    pass


# Shapes in protocol.check's notation ("key:kind", "?" optional, o=NAME nested).
_SHAPES = {
    "config": "wifi:o? server:o target:o role:s? turning_mode:s? board:s? tls:o? reconnect:o? "
    "server_reconnect_policy:o? channel_config:o? audio:o? keepalive:o? max_message:n? log_level:s? trace_ms:n? "
    "tool_idle_ms:n?",
    "wifi": "ssid:s key:s? timeout_ms:n? retries:n? power_save:b? hostname:s?",
    "server": "rpc:s? rest:s? surface:s? timeout_ms:n? open_timeout_ms:n?",
    "session_target": "type:s session_id:s",
    "mob_member": "type:s mob_id:s agent_identity:s",
    "tls": "ca_file:s? insecure:b? ntp_host:s?",
    "reconnect": "max_attempts:n? initial_backoff_ms:n? max_backoff_ms:n? max_total_ms:n?",
    "policy": "max_attempts:n initial_backoff_ms:n max_backoff_ms:n max_total_ms:n",
    "audio": "frame_ms:n? ring_ms:n? playback_ms:n? margin_ms:n? preroll_ms:n? "
    "vad_sensitivity:n? speaker_mode:s? duplex:s?",
    "keepalive": "interval_ms:n? timeout_ms:n?",
}

DEFAULTS = {
    "role": "primary",
    "turning_mode": "provider_managed",
    "board": "esp32s3_devkitc",
    # surface: which Meerkat server surface to speak: "auto" asks the server (live/open, and
    # protocol v2's realtime/open_info when that method is not found), "v2" (Meerkat 0.6.0-0.6.4)
    # or "live" (0.6.5 and later). The REST proxy exists only for v2.
    "server": {"surface": "auto", "timeout_ms": 10000, "open_timeout_ms": 20000},
    # ntp_host: where the clock is set from before the first wss:// connect when certificates
    # are verified (a board's RTC reads 2000-01-01 after power-up); "": never (clock.py).
    "tls": {"insecure": False, "ntp_host": "pool.ntp.org"},
    # Client-side reconnect after a dropped socket or a retryable close: exponential backoff
    # with full jitter; max_attempts 0 = keep trying; max_total_ms 0 = no overall budget.
    "reconnect": {"max_attempts": 0, "initial_backoff_ms": 500, "max_backoff_ms": 8000, "max_total_ms": 0},
    # Frame and buffer sizes; ring_ms/playback_ms default to the board's (PSRAM boards get more).
    # duplex "half": the microphone is held while a reply plays (the device's echo-aware VAD
    # decides barge-in); "full" streams it all the time, for boards with hardware echo
    # cancellation, on the live surface only (protocol v2 cancels a reply on any input).
    "audio": {"frame_ms": 40, "margin_ms": 100, "preroll_ms": 300, "vad_sensitivity": 5, "duplex": "half"},
    # WebSocket pings after channel.opened (never before it); 0 disables.
    "keepalive": {"interval_ms": 15000, "timeout_ms": 45000},
    # The largest server message that is not audio (audio streams through at any size); 0: the
    # board's default (4 KB without PSRAM, 32 KB with).
    "max_message": 0,
    "log_level": "info",
    # The timeline trace (trace.py): a sample line every trace_ms on the console; 0: off.
    "trace_ms": 0,
    # A tool call runs on the server (its budget: 15 s on protocol v2, 30 s on the live surface);
    # a reply with a tool call pending and nothing else happening for this long is over, so
    # the microphone is never held for good by a tool that never completes.
    "tool_idle_ms": 60000,
}

# Wi-Fi is optional (a board on Ethernet, the simulator); these apply when the section exists.
# retries 0: keep trying (after a power cut the router may boot slower than the board).
WIFI_DEFAULTS = {"timeout_ms": 20000, "retries": 0, "power_save": False}

LOG_LEVELS = ("debug", "info", "warn", "error")
_TARGETS = ("session_target", "mob_member")
SPEAKER_MODES = ("drain", "irq", "poll")


def _fail(field, what):
    raise ConfigError("config.json: field %s must be %s" % (field, what))


def _merge(cfg):
    out = {}
    for key in DEFAULTS:
        value = DEFAULTS[key]
        out[key] = dict(value) if type(value) is dict else value  # never share the defaults
    for key in cfg:
        value = cfg[key]
        base = WIFI_DEFAULTS if key == "wifi" else DEFAULTS.get(key)
        if type(value) is dict and type(base) is dict:
            merged = dict(base)
            merged.update(value)
            value = merged
        out[key] = value
    return out


def validate(cfg):
    """Check a decoded config object, fill in defaults, return the new dict."""
    report = []
    try:
        check(cfg, _SHAPES["config"], "config", report)
        for key in ("wifi", "server", "tls", "reconnect", "server_reconnect_policy", "audio", "keepalive"):
            if key in cfg:
                shape = "policy" if key == "server_reconnect_policy" else key
                check(cfg[key], _SHAPES[shape], "config." + key, report)
        target = cfg["target"]
        if type(target) is not dict or target.get("type") not in _TARGETS:
            raise ProtocolError("field config.target.type must be session_target or mob_member")
        check(target, _SHAPES[target["type"]], "config.target", report)
    except ProtocolError as exc:
        raise ConfigError("config.json: " + exc.reason)
    for entry in report:
        if entry.startswith("field:"):
            raise ConfigError("config.json: unknown field %s" % entry[6:])
    cfg = _merge(cfg)
    if cfg["role"] not in ROLES:
        _fail("config.role", "primary or observer")
    if cfg["turning_mode"] not in TURNING_MODES:
        _fail("config.turning_mode", "provider_managed or explicit_commit")
    server = cfg["server"]
    if ("rpc" in server) == ("rest" in server):
        _fail("config.server", 'exactly one of "rpc" (host:port) or "rest" (http://host:port)')
    if "rpc" in server:
        host, _, port = server["rpc"].rpartition(":")
        if not host or not port.isdigit():
            _fail("config.server.rpc", "host:port")
    elif not server["rest"].startswith("http://"):
        _fail("config.server.rest", "an http:// URL (the REST proxy has no TLS)")
    if server["surface"] not in SURFACES:
        _fail("config.server.surface", "auto, v2 or live")
    if "rest" in server:
        if server["surface"] == "live":
            _fail("config.server.rest", "unset with surface live (the live surface has no REST routes: use rpc)")
        server["surface"] = "v2"  # only protocol v2 has a REST proxy
    if cfg["audio"]["duplex"] not in ("half", "full"):
        _fail("config.audio.duplex", "half or full")
    if cfg["audio"]["duplex"] == "full" and server["surface"] == "v2":
        _fail("config.audio.duplex", "half with surface v2 (protocol v2 cancels a reply on any input)")
    if cfg["max_message"] and not 2048 <= cfg["max_message"] <= 1 << 20:
        _fail("config.max_message", "0 (the board's default) or 2048..1048576")
    audio = cfg["audio"]
    if not 20 <= audio["frame_ms"] <= 200 or audio["frame_ms"] % 20:
        _fail("config.audio.frame_ms", "20, 40, 60, ... 200")
    if not 1 <= audio["vad_sensitivity"] <= 10:
        _fail("config.audio.vad_sensitivity", "1 (loud speech only) .. 10 (quiet speech)")
    for key, lo, hi in (("preroll_ms", 0, 2000), ("margin_ms", 0, 1000)):
        if not lo <= audio[key] <= hi:
            _fail("config.audio." + key, "%d..%d (ms)" % (lo, hi))
    if audio.get("speaker_mode", "drain") not in SPEAKER_MODES:
        _fail("config.audio.speaker_mode", "drain, irq or poll")
    if not 1000 <= cfg["tool_idle_ms"] <= 600000:
        _fail("config.tool_idle_ms", "1000..600000 (ms)")
    if cfg["trace_ms"] and not 10 <= cfg["trace_ms"] <= 1000:
        _fail("config.trace_ms", "0 (off) or 10..1000 (ms between trace samples)")
    ntp = cfg["tls"]["ntp_host"]
    if len(ntp) > 253 or " " in ntp or ":" in ntp or "/" in ntp:
        _fail("config.tls.ntp_host", 'a host name (e.g. "pool.ntp.org"), or "" to never set the clock')
    if cfg["log_level"] not in LOG_LEVELS:
        _fail("config.log_level", "debug, info, warn or error")
    if "wifi" in cfg and cfg["wifi"].get("ssid") is None:
        _fail("config.wifi.ssid", "set when config.wifi is present")
    ka = cfg["keepalive"]
    if ka["interval_ms"] and ka["timeout_ms"] and ka["timeout_ms"] <= ka["interval_ms"]:
        # The server sends nothing on an idle channel: only pongs prove the link alive.
        _fail("config.keepalive.timeout_ms", "0 or longer than keepalive.interval_ms")
    return cfg


def load(path="config.json"):
    """Read and validate a config file. Errors never quote the file's contents."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise ConfigError("config.json: cannot read %s (copy config.example.json there and edit it)" % path)
    try:
        cfg = json.loads(text)
    except ValueError:
        raise ConfigError("config.json: %s is not valid JSON" % path)
    return validate(cfg)
