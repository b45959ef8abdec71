# Downlink benchmark, run on the MicroPython unix port by meerkat-bench:
#
#   micropython -X heapsize=220K mp_downlink.py spec.json
#
# spec: {"impl": "meerkat" | "meerkat-live" | "naive", "url": "ws://127.0.0.1:P/down/", "chunks_ms": [20, 200, 1000],
#        "audio_s": 30, "repeats": 5, "warmup": 5, "alloc_messages": 20, "cpu": bool,
#        "alloc": bool, "tag": "cpu"}   (a CPU pass is audio_s seconds of audio, >= 10 messages)
# The host's loopback peer streams output_audio_chunk messages (exactly the development server's
# JSON) back to back into the socket. Timed per message: every ws.poll() that did something
# (socket readinto, frame parsing, the sink) plus, for the naive path, its decode step; polls
# that found nothing to read are not counted. The player is emptied before each message
# (untimed): the speaker is never the bottleneck here.
import gc
import json
import sys
import time

from meerkat_rt import log

log.sink = lambda line: sys.stderr.write(line + "\n")  # stdout carries only the JSON lines
ticks_us = time.ticks_us
ticks_diff = time.ticks_diff


class NullI2S:
    """A speaker that takes everything at once (Player in poll mode)."""

    def write(self, buf, off=0, n=-1):
        return len(buf) - off if n < 0 else n

    def ioctl(self, req, flags):
        return flags


class Turns:
    """The ledger's side of the Downlink: every chunk wanted, nothing else to do."""

    barge_ins = 0

    def early(self):
        return 1  # WANT

    def assumed(self):
        return "item_1"

    def on_audio(self, item_id, content_index, response_id):
        return True

    def audio_done(self, nbytes):
        pass

    def stale_played(self):
        pass


def _on_frame(frame):
    pass


class Meerkat:
    """ws.poll() -> frame parser -> Downlink.feed (skeleton assembled, data located, skeleton
    compared with the cached one) -> Player.feed_b64 (viper base64 decode straight into the PCM
    ring; a chunk bigger than the ring streams through it) -> Player.commit_chunk. The ring is
    a no-PSRAM board's (300 ms), whatever the chunk size."""

    surface = "v2"

    def codec(self):
        from meerkat_rt.v2 import protocol

        return protocol

    def setup(self, ms, url):
        import asyncio

        from meerkat_rt.downlink import Downlink
        from meerkat_rt.playback import POLL, Player
        from meerkat_rt.ws import WebSocket

        self.player = Player(NullI2S(), capacity=bytearray(14400), mode=POLL)
        self.down = Downlink(self.player, self.codec(), _on_frame, Turns(), bytearray(8192))
        self.ws = WebSocket(self.down, 8192, rx_size=1024, tx_size=256)
        asyncio.run(self.ws.connect(url))

    def make_space(self):
        while self.player.poll():  # the null speaker takes everything committed
            pass

    def done(self):
        return self.down.audio_chunks

    def step(self):
        # A chunk bigger than the ring streams through it: the speaker must take what was made
        # playable meanwhile (the device's pump polls the player on every pass).
        if self.player.space() < 1024:
            self.make_space()
        return self.ws.poll()

    def finish(self):
        pass

    def close(self):
        self.ws.abort()


class MeerkatLive(Meerkat):
    """The same path with the live surface's codec: assistant_audio_chunk, data before the ids."""

    surface = "live"

    def codec(self):
        from meerkat_rt.live import protocol

        return protocol


class Naive:
    """The same ws.poll() into a sink that assembles whole messages (MessageBuffer), then what an
    application does with it: take() (the text as a str), json.loads,
    binascii.a2b_base64(chunk["data"]), and a copy into the PCM buffer."""

    surface = "v2"

    def setup(self, ms, url):
        import asyncio

        import wsmsg

        self.pcm = bytearray(ms * 48 + 4096)
        self.ws = wsmsg.client(ms * 64 + 1024, rx_size=1024, tx_size=256)
        asyncio.run(self.ws.connect(url))
        self.n = 0

    def make_space(self):
        pass

    def done(self):
        return self.n

    def step(self):
        return self.ws.poll()

    def finish(self):
        import binascii

        sink = self.ws.sink
        if sink.ready:
            msg = json.loads(sink.take())
            pcm = binascii.a2b_base64(msg["event"]["chunk"]["data"])
            self.pcm[0 : len(pcm)] = pcm
            self.n += 1

    def close(self):
        self.ws.abort()


IMPLS = {"meerkat": Meerkat, "meerkat-live": MeerkatLive, "naive": Naive}


def run_pass(impl, n, alloc=False):
    # Returns (us, bytes, idle polls) over n messages.
    us = nbytes = idle = 0
    mem = gc.mem_alloc
    step = impl.step
    finish = impl.finish
    for _ in range(n):
        impl.make_space()
        target = impl.done() + 1
        while impl.done() < target:
            a0 = mem() if alloc else 0
            t0 = ticks_us()
            did = step()
            finish()
            t1 = ticks_us()
            a1 = mem() if alloc else 0
            if did:
                us += ticks_diff(t1, t0)
                nbytes += a1 - a0
            else:
                idle += 1
    return us, nbytes, idle


def median(xs):
    s = sorted(xs)
    return s[len(s) // 2]


def bench(name, spec, ms):
    impl = IMPLS[name]()
    out = {"impl": name, "chunk_ms": ms}
    cpu = spec.get("cpu", True)
    messages = max(10, spec["audio_s"] * 1000 // ms)
    total = spec["warmup"] + (spec["repeats"] * messages if cpu else 0)
    total += spec["alloc_messages"] + 1 if spec.get("alloc", True) else 0
    try:
        impl.setup(ms, spec["url"] + "%s-%d-%s?ms=%d&n=%d&surface=%s" % (name, ms, spec.get("tag", "x"), ms, total + 4, impl.surface))
        run_pass(impl, spec["warmup"])
        if cpu:
            runs = []
            idle = 0
            for _ in range(spec["repeats"]):
                gc.collect()
                us, _, i = run_pass(impl, messages)
                runs.append(us)
                idle += i
            audio_s = messages * ms / 1000
            out["messages_per_pass"] = messages
            out["cpu_us_per_audio_s"] = round(min(runs) / audio_s, 1)  # the fastest pass
            out["median_us_per_audio_s"] = round(median(runs) / audio_s, 1)
            out["us_per_message"] = round(min(runs) / messages, 1)
            out["passes_us_per_audio_s"] = [round(r / audio_s, 1) for r in runs]
            out["idle_polls"] = idle
        if spec.get("alloc", True):
            gc.collect()
            gc.disable()
            try:
                _, nbytes, _ = run_pass(impl, spec["alloc_messages"], True)
            finally:
                gc.enable()
            out["alloc_messages"] = spec["alloc_messages"]
            out["alloc_bytes_per_message"] = nbytes / spec["alloc_messages"]
        if name.startswith("meerkat"):
            out["chunks"] = impl.down.audio_chunks
            out["dropped"] = impl.down.dropped
            out["pcm_bytes"] = impl.player.bytes
        out["ws_bytes_in"] = impl.ws.bytes_in
    except Exception as exc:
        out["error"] = "%s: %s" % (type(exc).__name__, exc)
    finally:
        try:
            impl.close()
        except Exception:
            pass
        impl = None
        gc.collect()
    return out


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    for ms in spec["chunks_ms"]:
        print(json.dumps(bench(spec["impl"], spec, ms)))


main()
