"""The fakes themselves (CPython): the WLAN against the firmware's wifi module, the I2S's
blocking-until-polled behaviour, overruns, the speaker recording as a WAV file."""

from __future__ import annotations

import asyncio
import time
import wave

import pytest

import machine
import network
import simworld
from meerkat_rt import wifi
from meerkat_tools import paths


def _i2s(mode, **kw):
    args = dict(sck=machine.Pin(1), ws=machine.Pin(2), sd=machine.Pin(3), mode=mode, bits=16, format=machine.I2S.MONO,
                rate=24000, ibuf=4096)
    args.update(kw)
    return machine.I2S(0 if mode == machine.I2S.RX else 1, **args)


def test_wlan_joins_with_the_right_key_and_fails_like_the_port():
    simworld.configure(wifi_ssid="home", wifi_key="secret", wifi_connect_ms=50)
    wlan = asyncio.run(wifi.connect({"ssid": "home", "key": "secret", "timeout_ms": 2000}))
    assert wlan.isconnected() and wlan.ifconfig()[0] == "127.0.0.1" and wlan.config("pm") == wlan.PM_NONE
    for cfg, status in (({"ssid": "home", "key": "wrong"}, network.STAT_WRONG_PASSWORD),
                        ({"ssid": "cafe", "key": "secret"}, network.STAT_NO_AP_FOUND)):
        w = network.WLAN(network.WLAN.IF_STA)
        w.active(True)
        w.connect(cfg["ssid"], cfg["key"])
        assert w.status() == status and not w.isconnected()
    with pytest.raises(OSError):
        network.WLAN().connect("home", "secret")  # not active


def test_i2s_blocks_until_polled_then_returns_what_is_there():
    simworld.configure()
    mic = _i2s(machine.I2S.RX, ibuf=16384)
    buf = bytearray(480)  # 10 ms
    t0 = time.monotonic()
    assert mic.readinto(buf) == 480  # blocking mode: waits for a full buffer
    assert time.monotonic() - t0 >= 0.008
    assert mic.ioctl(3, 1) in (0, 1) and mic.asyncio
    assert mic.readinto(bytearray(48000)) < 48000  # ASYNCIO mode: only what has arrived
    with pytest.raises(OSError):
        mic.ioctl(3, 4)  # POLLOUT on a microphone: EPERM like the port
    time.sleep(0.1)  # 100 ms while the DMA holds 16384 / 8 bytes = 85 ms
    mic.readinto(bytearray(8000))
    assert mic.overruns > 0


def test_speaker_records_what_it_played_with_silence_where_it_ran_dry(tmp_path):
    rec = tmp_path / "out.wav"
    simworld.configure(record=str(rec))
    spk = _i2s(machine.I2S.TX)
    spk.ioctl(3, 4)
    tone = bytes([0x00, 0x10]) * 1200  # 50 ms of a constant
    assert spk.write(tone) == 2400
    time.sleep(0.12)
    simworld.service()
    assert spk.played == 2400 and spk.underruns == 1
    spk.write(tone, 0, 1200)
    time.sleep(0.05)
    simworld.get().close()
    with wave.open(str(rec)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24000, 1, 2)
        data = w.readframes(w.getnframes())
    assert w.getnframes() >= 24000 * 0.16
    start = data.find(tone)  # after the silence between the speaker's creation and the write
    assert 0 <= start < 2 * 2400 and data.count(b"\x00\x10") >= 1800
    assert data[start + 2400 : start + 2400 + 960] == bytes(960)  # then it ran dry: silence


def test_fixture_index_matches_the_files():
    from meerkat_tools import wavinfo

    import json

    index = json.loads((paths.FIXTURES / "index.json").read_text())
    assert sorted(index) == sorted(p.name for p in paths.FIXTURES.glob("*.wav"))
    for name, row in index.items():
        assert wavinfo.analyse(paths.FIXTURES / name) == row, name
