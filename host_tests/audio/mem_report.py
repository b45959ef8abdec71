# Heap numbers of the audio path on the MicroPython unix port (64-bit: objects are about twice
# their ESP32 size). Prints one JSON object:
#   import_bytes   heap taken by importing each module (bytecode, functions, names)
#   frame_alloc    bytes allocated per captured frame in steady state (16-bit; 32-bit + shift +
#                  high-pass + VAD + the player's speaker history per block), over 50 frames
#   chunk_alloc    bytes allocated per 200 ms downlink chunk: begin, feed_b64 in pieces, commit,
#                  speaker poll, heard_ms, level_now, level (speaker modes poll and irq)
#   drain_alloc    bytes allocated per block written by the asyncio out_buf/drain speaker task
# Run through pytest (precompiles everything): pytest host_tests/audio -k mem_report -s
import gc
import json
import sys

def _cost(name):
    gc.collect()
    a = gc.mem_free()
    __import__(name)
    gc.collect()
    return a - gc.mem_free()


def main():
    out = {"import_bytes": {}}
    for name in ("meerkat_rt.compat", "meerkat_rt.fast", "meerkat_rt.ring", "meerkat_rt.vad",
                 "meerkat_rt.capture", "meerkat_rt.playback", "meerkat_rt.board", "wavfile",
                 "simworld", "machine", "network"):
        out["import_bytes"][name] = _cost(name)
    del sys.modules["meerkat_rt.board"]

    from meerkat_rt import fast
    from meerkat_rt.capture import Capture
    from meerkat_rt.playback import Player
    from meerkat_rt.ring import FrameRing
    from meerkat_rt.vad import VAD

    class Mic:  # hands out a full buffer every time, allocation-free
        def __init__(self):
            self.src = bytearray(1920)

        def readinto(self, buf):
            n = len(buf)
            fast.copy(buf, 0, self.src, 0, n)
            return n

        def ioctl(self, req, flags):
            return flags

    class Sink:  # a speaker that takes everything, allocation-free
        handler = None

        def write(self, buf, off, n):
            if self.handler is not None:
                self.handler(self)
            return n

        def ioctl(self, req, flags):
            return flags

        def irq(self, handler):
            self.handler = handler

    import binascii

    text = bytearray(binascii.b2a_base64(bytes(range(256)) * 18 + bytes(192), newline=False))  # 200 ms
    out["frame_alloc"] = {}
    for bits in (16, 32):
        ring = FrameRing(4, 1920)
        spk = Player(Sink(), 9600, mode="poll")
        spk.begin_chunk()
        spk.feed_b64(text, 0, len(text))
        spk.commit_chunk("item", 0)
        spk.poll()  # the history has the audio now (and the DMA model says it plays)
        cap = Capture(Mic(), ring, VAD(), bits=bits, shift=14 if bits == 32 else 0, highpass=bits == 32,
                      speaker=spk)
        for _ in range(5):
            cap.poll(0)
            ring.mark_sent()
        gc.collect()
        a = gc.mem_alloc()
        f0 = cap.frames
        while cap.frames - f0 < 50:
            cap.poll(0)
            ring.mark_sent()
        out["frame_alloc"]["bits%d" % bits] = (gc.mem_alloc() - a) / (cap.frames - f0)
        ring = cap = spk = None

    text = bytearray(binascii.b2a_base64(bytes(4800), newline=False))
    out["chunk_alloc"] = {}
    for mode in ("poll", "irq"):
        p = Player(Sink(), 9600, mode=mode)

        def chunk():
            p.begin_chunk()
            p.feed_b64(text, 0, 1024)
            p.feed_b64(text, 1024, 1024)
            p.feed_b64(text, 2048, len(text) - 2048)
            p.commit_chunk("item", 0)
            while p.poll():
                pass
            p.heard_ms("item")
            p.level_now()
            p.level(0, 10)

        for _ in range(3):
            chunk()
        gc.collect()
        a = gc.mem_alloc()
        for _ in range(20):
            chunk()
        out["chunk_alloc"][mode] = (gc.mem_alloc() - a) / 20
        p = None

    # drain: the asyncio speaker task against the fake I2S (real time, 0.5 s).
    import asyncio

    import machine
    import simworld

    simworld.configure()
    spk = machine.I2S(1, sck=None, ws=None, sd=None, mode=2, bits=16, format=0, rate=24000, ibuf=4096)
    p = Player(spk, 9600, ibuf=4096, mode="drain", block_ms=20)

    def fill():
        while p.space() >= 4800:
            p.begin_chunk()
            p.feed_b64(text, 0, len(text))
            p.commit_chunk("item", 0)

    async def drain():
        task = asyncio.create_task(p.run())
        fill()
        await asyncio.sleep_ms(100)
        fill()
        gc.collect()
        gc.disable()  # mem_alloc is what is allocated now: a collection would hide garbage
        a = gc.mem_alloc()
        w = spk.written
        for _ in range(10):
            fill()
            await asyncio.sleep_ms(20)
        used = gc.mem_alloc() - a
        gc.enable()
        blocks = (spk.written - w) // 960
        task.cancel()
        return used / blocks

    out["drain_alloc_per_block"] = asyncio.run(drain())
    print(json.dumps(out))


main()
