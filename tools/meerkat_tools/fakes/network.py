# Fake `network` for host tests and the simulator: one WLAN that joins after
# simworld's wifi_connect_ms if the SSID and key match (wifi_ssid / wifi_key; None accepts
# any), else fails with STAT_NO_AP_FOUND or STAT_WRONG_PASSWORD, as the ESP32 port reports.
import simworld

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_ASSOC_FAIL = 203
STAT_CONNECT_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204

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
        self._status = STAT_IDLE
        self._at = 0  # world time (samples) when the connection completes
        self._cfg = {"pm": 1, "hostname": "meerkat-sim", "mac": b"\x02\x00\x00\x5e\x00\x01", "ssid": ""}

    def active(self, on=None):
        if on is None:
            return self._active
        self._active = bool(on)
        if not on:
            self._status = STAT_IDLE

    def connect(self, ssid=None, key=None, *, bssid=None):
        if not self._active:
            raise OSError("STA must be active")  # the port's message
        cfg = simworld.get().cfg
        self._cfg["ssid"] = ssid or ""
        if cfg["wifi_ssid"] is not None and ssid != cfg["wifi_ssid"]:
            self._status = STAT_NO_AP_FOUND
        elif cfg["wifi_key"] is not None and key != cfg["wifi_key"]:
            self._status = STAT_WRONG_PASSWORD
        else:
            self._status = STAT_CONNECTING
            self._at = simworld.world.now() + cfg["wifi_connect_ms"] * 24

    def disconnect(self):
        self._status = STAT_IDLE

    def status(self, param=None):
        if param == "rssi":
            return -50
        if self._status == STAT_CONNECTING and simworld.get().now() >= self._at:
            self._status = STAT_GOT_IP
        return self._status

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
