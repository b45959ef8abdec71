# Fake `network` for host tests and the simulator: one station WLAN modelled on the ESP32
# port's network_wlan.c (v1.28.0), awkward parts included, against simworld's wifi_* settings:
#   - connect() starts the driver; each association attempt takes wifi_connect_ms and ends
#     with the next reason of wifi_fail (a flaky AP), else NO_AP_FOUND (201) for another SSID
#     (wifi_ssid), AUTH_FAIL (202) for another key (wifi_key), else with an address;
#   - after a failed attempt the driver tries again by itself, for ever (config(reconnects=n)
#     bounds it), as the port's event handler does;
#   - the last disconnect reason persists: connect() does not clear it, only an address or a
#     new reason replaces it, and disconnect() replaces it (ASSOC_LEAVE) only when there was an
#     association to leave (no event otherwise: the worst case for a caller, and what a
#     disconnect() between the driver's attempts gives);
#   - status() maps it as the port does: 201 and its variants as themselves, AUTH_FAIL *and*
#     CONNECTION_FAIL (205) as STAT_WRONG_PASSWORD, ASSOC_LEAVE as STAT_IDLE; otherwise
#     STAT_CONNECTING while the driver retries, STAT_IDLE with no reason, else the reason
#     itself (203 is STAT_CONNECT_FAIL in v1.28, STAT_ASSOC_FAIL before).
import simworld

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_ASSOC_FAIL = 203  # deprecated in v1.28 ...
STAT_CONNECT_FAIL = 203  # ... for this name, which only v1.28 has
STAT_HANDSHAKE_TIMEOUT = 204
STAT_NO_AP_FOUND_W_COMPATIBLE_SECURITY = 210
STAT_NO_AP_FOUND_IN_AUTHMODE_THRESHOLD = 211
STAT_NO_AP_FOUND_IN_RSSI_THRESHOLD = 212

_AUTH_FAIL = 202
_CONNECTION_FAIL = 205
_ASSOC_LEAVE = 8
_NO_AP = (201, 210, 211, 212)

_hostname = "mpy-esp32"


def hostname(name=None):
    """network.hostname(): the DHCP host name (MicroPython 1.20+)."""
    global _hostname
    if name is None:
        return _hostname
    _hostname = name


class WLAN:
    IF_STA = 0
    IF_AP = 1
    PM_NONE = 0
    PM_PERFORMANCE = 1
    PM_POWERSAVE = 2

    def __init__(self, interface_id=0):
        self._active = False
        self._connected = False
        self._requested = False  # wifi_sta_connect_requested
        self._reason = 0  # wifi_sta_disconn_reason: persists across connect()
        self._tries = 0  # wifi_sta_reconnects
        self._at = -1  # world time (samples) when the attempt in progress ends; -1: none
        self._key = self._ssid = None
        self.connects = 0  # connect() calls, for tests
        self._cfg = {"pm": 1, "hostname": "meerkat-sim", "mac": b"\x02\x00\x00\x5e\x00\x01", "ssid": "", "reconnects": 0}

    def active(self, on=None):
        if on is None:
            return self._active
        self._active = bool(on)
        if not on:
            self._connected = False  # the driver stops; the reason and the request stay
            self._at = -1

    def connect(self, ssid=None, key=None, *, bssid=None):
        if not self._active:
            raise OSError("STA must be active")  # the port's message
        self._cfg["ssid"] = ssid or ""
        self._ssid, self._key = ssid, key
        self.connects += 1
        self._tries = 0
        self._requested = True
        if not self._connected:
            self._at = simworld.get().now() + self._attempt_samples()

    def _attempt_samples(self):
        return simworld.get().cfg["wifi_connect_ms"] * 24

    def _run(self):
        # The driver's events up to now: attempts ending, retries.
        w = simworld.get()
        now = w.now()
        while self._at >= 0 and now >= self._at:
            cfg = w.cfg
            if w.wifi_fail:
                reason = w.wifi_fail.pop(0)
            elif cfg["wifi_ssid"] is not None and self._ssid != cfg["wifi_ssid"]:
                reason = 201
            elif cfg["wifi_key"] is not None and self._key != cfg["wifi_key"]:
                reason = _AUTH_FAIL
            else:
                reason = 0
            if not reason:
                self._connected = True  # IP_EVENT_STA_GOT_IP
                self._reason = 0
                self._at = -1
                break
            self._reason = reason  # WIFI_EVENT_STA_DISCONNECTED
            limit = self._cfg["reconnects"]
            if self._requested and limit:
                self._tries += 1
            if self._requested and (not limit or self._tries < limit):
                self._at += self._attempt_samples()  # esp_wifi_connect() again
            else:
                self._at = -1

    def disconnect(self):
        self._run()
        self._requested = False
        if self._connected:
            self._connected = False
            self._reason = _ASSOC_LEAVE
        self._at = -1  # the attempt in progress is abandoned without an event

    def status(self, param=None):
        if param == "rssi":
            return -50
        self._run()
        if self._connected:
            return STAT_GOT_IP
        r = self._reason
        if r in _NO_AP:
            return r
        if r in (_AUTH_FAIL, _CONNECTION_FAIL):
            return STAT_WRONG_PASSWORD
        if r == _ASSOC_LEAVE:
            return STAT_IDLE
        limit = self._cfg["reconnects"]
        if self._requested and (not limit or self._tries < limit):
            return STAT_CONNECTING
        if not r:
            return STAT_IDLE
        return r

    def isconnected(self):
        return self.status() == STAT_GOT_IP

    def ifconfig(self, cfg=None):
        if self.isconnected():
            return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
        return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")

    def config(self, *args, **kw):
        if args:
            return self._cfg[args[0]]
        self._cfg.update(kw)

    def scan(self):
        ssid = simworld.get().cfg["wifi_ssid"] or "meerkat-sim"
        return [(ssid.encode(), b"\x02\x00\x00\x5e\x00\x02", 6, -50, 3, False)]
