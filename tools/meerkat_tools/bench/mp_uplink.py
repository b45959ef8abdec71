# Uplink benchmark, run on the MicroPython unix port by meerkat-bench (one process per
# implementation, so each has its own heap and its own modules):
#
#   micropython -X heapsize=220K mp_uplink.py spec.json
#
# spec: {"impl": name, "url": "ws://127.0.0.1:P/sink/", "frames_ms": [20, 40, 100],
#        "audio_s": 10, "repeats": 3, "warmup": 10, "alloc_frames": 20, "cpu": bool,
#        "alloc": bool, "tag": "cpu"}
# Prints one JSON line per frame size: the fastest of `repeats` CPU passes (and their median).
# Per frame, two timed parts (time.ticks_us):
#   build: I2S readinto -> PCM frame -> base64 (and, for the peers, the JSON envelope)
#   send:  frame on the wire: envelope/header/mask/socket write until the socket took it all
# CPU passes run with the GC enabled (collections are part of the cost of allocating);
# the allocation pass runs with the GC disabled and sums gc.mem_alloc() deltas.
import gc
import io
import json
import random
import sys
import time

from meerkat_rt import log

log.sink = lambda line: sys.stderr.write(line + "\n")  # stdout carries only the JSON lines
ticks_us = time.ticks_us
ticks_diff = time.ticks_diff


class Mic(io.BytesIO):
    """A fake I2S microphone (RX, 16-bit) whose readinto is native code, like the real
    driver's: 200 ms of noise in a BytesIO, rewound before every frame (untimed, prepare()).
    The same object feeds every implementation; readinto allocates nothing."""

    def ioctl(self, req, flags):
        return flags  # MP_STREAM_POLL from capture.arm(): always ready


def _noise(n):
    b = bytearray(n)
    for i in range(n):
        b[i] = random.getrandbits(8)
    return b


def split(url):
    rest = url[5:]
    i = rest.find("/")
    host, port = rest[:i].split(":")
    return host, int(port), rest[i:]


def envelope(b64):
    # What an application writes without templates: a dict and json.dumps.
    return json.dumps(
        {
            "type": "channel.input",
            "chunk": {"kind": "audio_chunk", "mime_type": "audio/pcm", "sample_rate_hz": 24000, "channels": 1, "data": b64},
        }
    )


class Null:
    """Harness baseline: the loop and the clock reads, nothing else."""

    is_async = False
    sent = 0

    def setup(self, fb, url):
        pass

    def build(self):
        pass

    def send(self):
        pass

    def close(self):
        pass


class Meerkat:
    """Our protocol v2 path: Capture (readinto 10 ms blocks into the staging buffer, copy into
    the frame, level) -> FrameRing.push_pcm (viper base64 into the slot) -> ws.begin / put(prefix)
    / put(slot) / put(suffix) / end_frame (header, fresh mask key, viper mask-copy) -> ws.poll()
    until the socket took the frame (v2.backend.send_audio, minus the link's state checks)."""

    is_async = False
    codec = "base64"

    def setup(self, fb, url):
        import asyncio

        from meerkat_rt.capture import Capture
        from meerkat_rt.ring import FrameRing
        from meerkat_rt.ws import WebSocket

        self.ring = FrameRing(4, fb, codec=self.codec)
        self.cap = Capture(MIC, self.ring, None, bits=16)
        self.template()
        self.ws = WebSocket(_Sink(), 1024, rx_size=1024, tx_size=self.ring.slot_len + 256)
        asyncio.run(self.ws.connect(url))
        self.sent = 0
        self.spins = 0

    def template(self):
        from meerkat_rt.v2 import protocol

        self.t = protocol.AudioInputTemplate()

    def build(self):
        self.cap.poll(0)

    def frame(self, ring, ws, i):
        t = self.t
        n = ring.slot_len
        ws.begin(t.frame_len(n))
        ws.put(t.prefix, 0, len(t.prefix))
        ws.put(ring.slot_buffer, ring.slot_offset(i), n)
        ws.put(t.suffix, 0, len(t.suffix))
        ws.end_frame()

    def send(self):
        ring = self.ring
        ws = self.ws
        self.frame(ring, ws, ring.peek())
        ring.mark_sent()
        ws.poll()
        while not ws.can_send():
            self.spins += 1
            ws.poll()
        self.sent += 1

    def close(self):
        self.ws.abort()


class MeerkatLive(Meerkat):
    """Our live-surface path: the same capture into a ring of raw PCM slots (no base64), then
    one binary frame straight from the slot: ws.begin(n, BINARY) / put(slot) / end_frame
    (live.backend.send_audio)."""

    codec = "pcm"

    def template(self):
        from meerkat_rt.ws import BINARY

        self.op = BINARY

    def frame(self, ring, ws, i):
        n = ring.slot_len
        ws.begin(n, self.op)
        ws.put(ring.slot_buffer, ring.slot_offset(i), n)
        ws.end_frame()


class _Sink:
    def hold(self):
        return False

    def feed(self, buf, off, n, first, last, is_text):
        pass


class _Builder:
    """The peers' build step: readinto a frame, binascii.b2a_base64, json.dumps."""

    def setup_frame(self, fb):
        self.frame = bytearray(fb)

    def build(self):
        import binascii

        MIC.readinto(self.frame)
        self.text = envelope(binascii.b2a_base64(self.frame, newline=False).decode())


class Naive(_Builder):
    """b2a_base64 + json.dumps + pure-Python masking, as micropython-lib aiohttp's
    _encode_websocket_frame does it (a generator per byte), header with struct, one
    sock.write of header + key + masked payload on a blocking socket."""

    is_async = False

    def setup(self, fb, url):
        import socket

        self.setup_frame(fb)
        host, port, path = split(url)
        s = socket.socket()
        s.connect(socket.getaddrinfo(host, port)[0][-1])
        s.write(
            b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, host, port)
        )
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += s.read(1)
        self.sock = s
        self.sent = 0

    def send(self):
        import struct

        payload = self.text.encode()
        mask = struct.pack("!I", random.getrandbits(32))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        n = len(payload)
        head = struct.pack("!BBH", 0x81, 0xFE, n) if n < 65536 else struct.pack("!BBQ", 0x81, 0xFF, n)
        self.sock.write(head + mask + masked)
        self.sent += 1

    def close(self):
        self.sock.close()


class Chumicro(_Builder):
    """chumicro-websockets: WebSocketClient.send_text(text) (str.encode, encode_frame: header,
    os.urandom(4) key, payload copied and masked byte by byte in place, queued), then
    WebSocketClient.handle(now) until io_interest() no longer asks to write (_drain_outbound:
    memoryview slices to socket.send; _drain_inbound: one recv attempt). The transport is its own
    chumicro_sockets connector; send_budget_per_tick is raised to 64 KB so one handle() sends a
    whole frame (its best case; the default 1024 would take several ticks per frame)."""

    is_async = False

    def setup(self, fb, url):
        from chumicro_sockets.sockets_factory import connector_factory
        from chumicro_websockets.client import WebSocketClient

        self.setup_frame(fb)
        c = WebSocketClient(connector_factory(), send_budget_per_tick=65536, recv_budget_per_tick=1024, ticks=time)
        c.connect(url)
        t0 = time.ticks_ms()
        while c.state != "open":
            c.handle(time.ticks_ms())
            if c.state == "closed" or time.ticks_diff(time.ticks_ms(), t0) > 5000:
                raise OSError("chumicro-websockets did not open: %s" % c.state)
            time.sleep_ms(1)
        self.c = c
        self.sent = 0
        self.spins = 0

    def send(self):
        c = self.c
        c.send_text(self.text)
        now = time.ticks_ms()
        c.handle(now)
        while c.io_interest(now) & 2:
            self.spins += 1
            c.handle(now)
        self.sent += 1

    def close(self):
        self.c._socket.close()


class AsyncClient(_Builder):
    """micropython-async-websocket-client: `await AsyncWebsocketClient.send(text)` (its lock,
    str.encode, write_frame: struct header, getrandbits key, bytes(generator per byte) masking,
    three sock.write calls on its non-blocking socket)."""

    is_async = True

    def setup(self, fb, url):
        import asyncio

        from async_websocket_client.ws import AsyncWebsocketClient

        self.setup_frame(fb)
        self.ws = AsyncWebsocketClient()
        asyncio.run(self.ws.handshake(url))
        self.sent = 0

    async def asend(self):
        await self.ws.send(self.text)
        self.sent += 1

    def close(self):
        self.ws.sock.close()


class MpWebsocket(_Builder):
    """micropython-websocket: WebSocket.send(text) (_encode_frame: str.encode, bytes header,
    os.urandom(4) key, _mask_payload: a bytearray filled byte by byte, bytes() copy, header +
    key + payload concatenation; one write on its blocking socket)."""

    is_async = False

    def setup(self, fb, url):
        from micropython_websocket.websocket import WebSocket

        self.setup_frame(fb)
        self.ws = WebSocket(url)
        self.ws.connect()
        self.sent = 0

    def send(self):
        self.ws.send(self.text)
        self.sent += 1

    def close(self):
        self.ws._sock.close()


IMPLS = {
    "null": Null,
    "meerkat": Meerkat,
    "meerkat-live": MeerkatLive,
    "naive": Naive,
    "chumicro-websockets": Chumicro,
    "micropython-async-websocket-client": AsyncClient,
    "micropython-websocket": MpWebsocket,
}


def run_pass(impl, n, alloc=False):
    # Returns (build_us, send_us, build_bytes, send_bytes) over n frames.
    tb = ts = ab = asz = 0
    build = impl.build
    send = impl.send
    mem = gc.mem_alloc
    rewind = MIC.seek
    for _ in range(n):
        rewind(0)
        a0 = mem() if alloc else 0
        t0 = ticks_us()
        build()
        t1 = ticks_us()
        a1 = mem() if alloc else 0
        send()
        t2 = ticks_us()
        a2 = mem() if alloc else 0
        tb += ticks_diff(t1, t0)
        ts += ticks_diff(t2, t1)
        ab += a1 - a0
        asz += a2 - a1
    return tb, ts, ab, asz


async def run_pass_async(impl, n, alloc=False):
    tb = ts = ab = asz = 0
    build = impl.build
    mem = gc.mem_alloc
    rewind = MIC.seek
    for _ in range(n):
        rewind(0)
        a0 = mem() if alloc else 0
        t0 = ticks_us()
        build()
        t1 = ticks_us()
        a1 = mem() if alloc else 0
        await impl.asend()
        t2 = ticks_us()
        a2 = mem() if alloc else 0
        tb += ticks_diff(t1, t0)
        ts += ticks_diff(t2, t1)
        ab += a1 - a0
        asz += a2 - a1
    return tb, ts, ab, asz


def measure(impl, n, alloc=False):
    if impl.is_async:
        import asyncio

        return asyncio.run(run_pass_async(impl, n, alloc))
    return run_pass(impl, n, alloc)


def median(xs):
    s = sorted(xs)
    return s[len(s) // 2]


def bench(name, spec, frame_ms):
    fb = frame_ms * 48
    impl = IMPLS[name]()
    out = {"impl": name, "frame_ms": frame_ms}
    try:
        impl.setup(fb, spec["url"] + "%s-%d-%s" % (name, frame_ms, spec.get("tag", "x")))
        measure(impl, spec["warmup"])
        if spec.get("cpu", True):
            frames = max(1, spec["audio_s"] * 1000 // frame_ms)
            audio_s = frames * frame_ms / 1000
            runs = []
            for _ in range(spec["repeats"]):
                gc.collect()
                tb, ts, _, _ = measure(impl, frames)
                runs.append((tb + ts, tb, ts))
            # The fastest pass (timeit's convention: the one least disturbed by the rest of the
            # machine); the median is kept beside it.
            pick = min(runs)
            total = pick[0]
            out["frames_per_pass"] = frames
            out["cpu_us_per_audio_s"] = round(total / audio_s, 1)
            out["median_us_per_audio_s"] = round(median([r[0] for r in runs]) / audio_s, 1)
            out["build_us_per_audio_s"] = round(pick[1] / audio_s, 1)
            out["send_us_per_audio_s"] = round(pick[2] / audio_s, 1)
            out["passes_us_per_audio_s"] = [round(r[0] / audio_s, 1) for r in runs]
            out["passes_build_send"] = [[round(r[1] / audio_s), round(r[2] / audio_s)] for r in runs]
        if spec.get("alloc", True):
            # GC off, gc.mem_alloc() deltas summed around the timed parts. One frame first to
            # size the pass, so a peer's garbage fits the heap (the host gives this pass a big
            # heap: the count does not depend on it, the GC is off).
            gc.collect()
            gc.disable()
            try:
                _, _, ab, asz = measure(impl, 1, True)
                per = max(1, ab + asz)
                m = max(1, min(spec["alloc_frames"], (gc.mem_free() // 2) // per))
                _, _, ab, asz = measure(impl, m, True)
            finally:
                gc.enable()
            out["alloc_frames"] = m
            out["alloc_bytes_per_frame"] = (ab + asz) / m
            out["alloc_build_bytes_per_frame"] = ab / m
            out["alloc_send_bytes_per_frame"] = asz / m
        out["frames_sent"] = impl.sent
        if hasattr(impl, "spins"):
            out["spins"] = impl.spins
        if name.startswith("meerkat"):
            out["ws_bytes_out"] = impl.ws.bytes_out
            out["ws_frames_out"] = impl.ws.frames_out
    except Exception as exc:  # a peer that cannot run here: report it, go on
        out["error"] = "%s: %s" % (type(exc).__name__, exc)
    finally:
        try:
            impl.close()
        except Exception:
            pass
        impl = None
        gc.collect()
    return out


MIC = Mic(_noise(9600))


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    name = spec["impl"]
    for frame_ms in spec["frames_ms"]:
        print(json.dumps(bench(name, spec, frame_ms)))


main()
