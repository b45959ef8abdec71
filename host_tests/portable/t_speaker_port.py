# meerkat_rt.playback against the fake machine.I2S where it behaves as the ESP32 port does
# and a board can go wrong: a stop's re-init (deinit + init, the only DMA flush) that fails
# for want of internal RAM, and irq callbacks that never come. The world's clock is virtual:
# every step is 1 ms, and the fake speaker's output is the ground truth.
import machine
import simworld
from meerkat_rt import log
from meerkat_rt.playback import IRQ, POLL, Player

# Allocated once: at the unix port's 110K heap, fresh 10 KB buffers per test fragment it.
PCM = bytearray(b"\x00\x10" * 4800)  # 200 ms of a constant
RING = bytearray(9600)


def _speaker(mode, ibuf=4096, **world):
    simworld.configure(clock="virtual", **world)
    kw = {"sck": machine.Pin(4), "ws": machine.Pin(5), "sd": machine.Pin(6), "mode": machine.I2S.TX, "bits": 16,
          "format": machine.I2S.MONO, "rate": 24000, "ibuf": ibuf}
    spk = machine.I2S(1, **kw)
    p = Player(spk, capacity=RING, ibuf=ibuf, mode=mode, margin_ms=0, reinit=kw)
    p.clock = simworld.ticks_ms
    return p, spk


def _play(p, item, ms):
    p.begin_chunk()
    assert p.feed_pcm(PCM, 0, 48 * ms)
    return p.commit_chunk(item)


def _run(p, spk, ms, item=None):
    for _ in range(ms):
        simworld.advance_ms(1)
        simworld.service()  # the fake hardware catches up: DMA, irq callbacks
        p.poll()
        if item is not None:
            assert p.played_ms(item) <= spk.played // 48  # never ahead of the DAC


class _Log:
    def __enter__(self):
        self.lines = []
        self.old = log.sink
        log.sink = self.lines.append
        return self.lines

    def __exit__(self, *exc):
        log.sink = self.old


def test_a_lost_irq_callback_times_out_and_playback_goes_on():
    p, spk = _speaker(IRQ, i2s_irq_lose=[3])
    with _Log() as lines:
        assert _play(p, "a", 200) == 9600
        _run(p, spk, 600, "a")
    assert spk.played == 9600 and p.finished("a") and p.idle()  # without the timeout: never idle
    assert spk.callbacks >= 10 and p.irq_lost == 1
    assert len([line for line in lines if "irq callback lost" in line]) == 1, lines
    assert _play(p, "b", 100) == 4800  # and the next reply plays
    _run(p, spk, 300, "b")
    assert spk.played == 9600 + 4800 and p.finished("b") and p.irq_lost == 1


def _stop_during(mode, fails):
    p, spk = _speaker(mode, i2s_init_fail=fails)
    _play(p, "a", 200)
    _run(p, spk, 50, "a")
    played = spk.played
    with _Log() as lines:
        p.stop_now()  # deinit + init: the init fails `fails` times
        _run(p, spk, 20)
    assert p.flushes == 1 and p.is_stopped("a")
    assert spk.played - played < 48 * 20  # the stop stopped it: at most the 20 ms since
    return p, spk, lines


def test_a_reinit_that_fails_once_is_retried_after_a_collection():
    for mode in (POLL, IRQ):
        p, spk, lines = _stop_during(mode, 1)
        assert simworld.get().i2s_inits == 2 and p.reinit_failures == 0 and not lines, lines
        before = spk.played
        _play(p, "b", 100)
        _run(p, spk, 200, "b")
        assert spk.played - before == 4800 and p.finished("b"), mode


def test_a_reinit_that_fails_twice_leaves_a_player_that_recovers_without_flushes():
    for mode in (POLL, IRQ):
        p, spk, lines = _stop_during(mode, 2)
        assert p.reinit_failures == 1, mode
        assert len([line for line in lines if line.startswith("W playback: speaker re-init failed twice")]) == 1, lines
        before = spk.played
        _play(p, "b", 100)  # arrives while the speaker is down: it waits for the retry
        _run(p, spk, 300, "b")
        assert spk.played - before == 4800 and p.finished("b") and p.lost_bytes == 0, mode
        inits = simworld.get().i2s_inits
        _play(p, "c", 200)
        _run(p, spk, 30, "c")
        p.stop_now()  # no flush any more: init() is not risked again, the DMA plays out
        assert simworld.get().i2s_inits == inits and p.flushes == 1 and p.is_stopped("c")
        _run(p, spk, 200)
        assert p.idle()


def test_a_speaker_that_stays_down_discards_audio_and_comes_back_later():
    p, spk, lines = _stop_during(POLL, 1000)
    _play(p, "b", 100)
    _run(p, spk, 300)
    assert p.lost_bytes == 4800 and p.idle() and not p.finished("b")  # the turn is not held
    assert p.played_ms("b") == 0
    simworld.get().i2s_init_fail = 0  # the memory is back
    _run(p, spk, 150)
    before = spk.played
    _play(p, "c", 100)
    _run(p, spk, 200, "c")
    assert spk.played - before == 4800 and p.finished("c")


def test_drain_mode_survives_a_failed_reinit():
    # The speaker task of mode drain (the unix port; CPython runs it as poll), in real time.
    import asyncio

    from meerkat_rt.compat import sleep_ms, ticks_diff, ticks_ms
    from meerkat_rt.playback import DRAIN

    simworld.configure(i2s_init_fail=2)
    kw = {"sck": machine.Pin(4), "ws": machine.Pin(5), "sd": machine.Pin(6), "mode": machine.I2S.TX, "bits": 16,
          "format": machine.I2S.MONO, "rate": 24000, "ibuf": 4096}
    spk = machine.I2S(1, **kw)
    p = Player(spk, capacity=RING, ibuf=4096, mode=DRAIN, margin_ms=0, reinit=kw)

    async def main():
        task = asyncio.create_task(p.run()) if p.mode == DRAIN else None

        async def until(cond, ms):
            t0 = ticks_ms()
            while not cond():
                if ticks_diff(ticks_ms(), t0) > ms:
                    return False
                if task is None:
                    p.poll()
                simworld.service()
                await sleep_ms(2)
            return True

        try:
            _play(p, "a", 200)
            assert await until(lambda: spk.played > 2400, 3000)
            with _Log() as lines:
                p.stop_now()
                assert await until(lambda: p.reinit_failures == 1, 3000), lines
            before = spk.played
            _play(p, "b", 100)
            assert await until(lambda: spk.played - before >= 4800 and p.finished("b"), 3000)
            assert p.flushes == 1 and simworld.get().i2s_inits == 3  # two failed, one revived
        finally:
            if task is not None:
                task.cancel()

    asyncio.run(main())
