"""The fakes themselves (CPython): the WLAN against the firmware's wifi module, the I2S's
blocking-until-polled behaviour, overruns, the speaker recording as a WAV file, the barge-in
sweep's world (virtual clock, DMA buffers, looped noise, echo reflections)."""

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
        assert w.status() == network.STAT_CONNECTING  # the attempt takes wifi_connect_ms
        simworld.sleep_us(60000)
        assert w.status() == status and not w.isconnected()
    with pytest.raises(OSError):
        network.WLAN().connect("home", "secret")  # not active


def _wlan(**world):
    simworld.configure(clock="virtual", wifi_connect_ms=50, **world)
    w = network.WLAN(network.WLAN.IF_STA)
    w.active(True)
    return w


def test_wlan_status_follows_network_wlan_c():
    # CONNECTION_FAIL and AUTH_FAIL both read STAT_WRONG_PASSWORD; the driver retries by
    # itself; reasons outside the status table read CONNECTING while it does.
    w = _wlan(wifi_fail=[205, 204, 202])
    w.connect("home", "k")
    assert w.status() == network.STAT_CONNECTING
    seen = []
    for _ in range(4):
        simworld.advance_ms(50)
        seen.append(w.status())
    assert seen == [network.STAT_WRONG_PASSWORD, network.STAT_CONNECTING, network.STAT_WRONG_PASSWORD,
                    network.STAT_GOT_IP]


def test_wlan_reason_persists_across_connect_and_disconnect():
    w = _wlan(wifi_fail=[202])
    w.connect("home", "k")
    simworld.advance_ms(60)
    assert w.status() == network.STAT_WRONG_PASSWORD
    w.disconnect()  # between the driver's attempts: no association to leave, no new reason
    assert w.status() == network.STAT_WRONG_PASSWORD
    w.connect("home", "k")  # a new attempt: the old reason still shows ...
    assert w.status() == network.STAT_WRONG_PASSWORD
    simworld.advance_ms(60)
    assert w.isconnected()  # ... until the address replaces it
    w.disconnect()  # leaving an association: ASSOC_LEAVE reads IDLE
    assert w.status() == network.STAT_IDLE


def test_wlan_reconnects_bound_the_driver_and_pass_the_reason_through():
    w = _wlan(wifi_fail=[203, 203, 203])
    w.config(reconnects=2)
    w.connect("home", "k")
    simworld.advance_ms(60)
    assert w.status() == network.STAT_CONNECTING  # one retry left
    simworld.advance_ms(50)
    assert w.status() == network.STAT_CONNECT_FAIL == 203  # the driver gave up: the raw reason
    simworld.advance_ms(500)
    assert w.status() == 203 and not w.isconnected()


def test_ntptime_and_rtc_like_the_port():
    import ntptime

    simworld.configure(clock="virtual", ntp_hosts=["ntp.lan"], ntp_fail=1)
    rtc = machine.RTC()
    assert rtc.datetime()[:7] == (2000, 1, 1, 5, 0, 0, 0)  # a Saturday, after power-up
    simworld.advance_ms(61000)
    assert rtc.datetime()[4:7] == (0, 1, 1)
    ntptime.host = "pool.ntp.org"
    with pytest.raises(OSError) as exc:
        ntptime.settime()  # not a server this world reaches: the port's getaddrinfo error
    assert exc.value.args[0] == -202
    ntptime.host = "ntp.lan"
    with pytest.raises(OSError):
        ntptime.settime()  # the first answer is lost
    ntptime.settime()
    year = rtc.datetime()[0]
    assert year == time.gmtime()[0] and simworld.get().ntp_queries == 3
    rtc.datetime((2024, 2, 29, 3, 23, 59, 58, 0))
    simworld.advance_ms(3000)
    assert rtc.datetime()[:7] == (2024, 3, 1, 4, 0, 0, 1)
    simworld.configure(rtc="set")
    assert machine.RTC().datetime()[0] == time.gmtime()[0]


def test_i2s_dma_comes_from_internal_ram_and_init_can_fail():
    import errno

    simworld.configure(i2s_ram=8192 + 4096)
    mic = _i2s(machine.I2S.RX, ibuf=8192)
    spk = _i2s(machine.I2S.TX, ibuf=4096)
    assert simworld.get().i2s_ram == 12288
    with pytest.raises(RuntimeError):
        spk.irq(lambda i2s: None)  # the copy task's 2 KB stack does not fit
    kw = dict(sck=machine.Pin(4), ws=machine.Pin(5), sd=machine.Pin(6), mode=machine.I2S.TX, bits=16,
              format=machine.I2S.MONO, rate=24000, ibuf=8192)
    with pytest.raises(OSError) as exc:
        spk.init(**kw)  # twice the DMA: ENOMEM, and the old channel is gone
    assert exc.value.args[0] == errno.ENOMEM and simworld.get().i2s_ram == 8192
    with pytest.raises(OSError):
        spk.write(bytes(100))
    kw["ibuf"] = 4096
    spk.init(**kw)
    assert spk.write(bytes(100)) == 100
    simworld.get().i2s_init_fail = 1  # e.g. Wi-Fi took the memory for a moment
    with pytest.raises(OSError):
        spk.init(**kw)
    spk.init(**kw)
    mic.deinit()
    assert simworld.get().i2s_ram == 4096


def test_i2s_irq_queue_holds_one_write_and_callbacks_can_be_lost():
    simworld.configure(clock="virtual", i2s_irq_lose=[2])
    spk = _i2s(machine.I2S.TX, ibuf=2048)
    done = []
    spk.irq(done.append)
    assert spk.write(bytes(2048)) == 2048 and len(done) == 1  # the DMA had room: copied at once
    block = bytes(1920)
    for _ in range(3):
        assert spk.write(block) == 1920  # copying, queued, lost: all return at once
    assert spk.lost_writes == 1 and len(done) == 1
    for _ in range(20):
        simworld.advance_ms(10)
        simworld.service()
    assert spk.callbacks == 3 and len(done) == 2  # the second completion never called back
    assert spk.written == 2048 + 2 * 1920


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


def test_world_for_the_barge_in_sweep_virtual_clock_dma_buffers_noise_and_echo_tail():
    # The settings meerkat-sweep uses: time that moves only when told, microphone samples that
    # become readable in whole 256-frame DMA buffers, a looped noise file, echo reflections.
    noise = str(paths.FIXTURES / "noise_pink.wav")
    simworld.configure(clock="virtual", mic_dma_frames=256, noise_wav=noise, noise_db=-6)
    mic = _i2s(machine.I2S.RX)
    mic.ioctl(3, 1)  # ASYNCIO mode: partial reads
    buf = bytearray(4096)
    simworld.advance_ms(10)
    assert simworld.ticks_ms() == 10 and mic.readinto(buf) == 0  # 240 frames: not a whole buffer yet
    simworld.advance_ms(1)
    assert mic.readinto(buf) == 512  # 256 frames at 10.7 ms
    # The noise loops: 3 s of file, still there after 4 s (and mixed at its level).
    simworld.advance_ms(4000)
    while mic.readinto(buf) == len(buf):
        pass
    simworld.advance_ms(22)
    n = mic.readinto(buf)
    assert n == 1024
    from meerkat_rt import fast

    assert 300 < fast.mean_abs(buf, 0, 512) < 2000
    # The echo: what the speaker plays comes back 10 ms later, and again 20 ms after that.
    w = simworld.configure(clock="virtual", echo_db=-6, echo_delay_ms=10, echo_tail=[[20, -6]], track_sound=True)
    spk = _i2s(machine.I2S.TX)
    mic = _i2s(machine.I2S.RX)
    mic.ioctl(3, 1)
    spk.ioctl(3, 4)
    tone = bytearray(480)  # 10 ms at 16000
    for i in range(240):
        tone[2 * i] = 0x80
        tone[2 * i + 1] = 0x3E
    assert spk.write(tone) == 480
    levels = []
    for _ in range(8):  # 40 ms, 5 ms at a time
        simworld.advance_ms(5)
        n = mic.readinto(buf)
        levels.append(fast.mean_abs(buf, 0, n // 2) if n else -1)
    assert w.last_sound == w.spk_start + 240  # the speaker's last non-zero sample, to 1 ms
    # Blocks of 5 ms: silence, the direct echo (16000 at -6 dB: 8000) at 10-20 ms, silence, the
    # reflection (-12 dB: 4000) at 30-40 ms.
    assert levels[0] == levels[1] == 0 and 7000 < max(levels[2:4]) < 9000, levels
    assert levels[4] == levels[5] == 0 and 3500 < max(levels[6:8]) < 4500, levels
