# TLS cost on the MicroPython unix port (run by tlscost.py, one process per scheme so that each
# starts from the same heap):
#
#   micropython -X heapsize=110K mp_tlscost.py URL CA_DER_FILE FRAMES
#
# Prints one JSON line: the context set-up (time, heap), the connect (TCP + TLS handshake + HTTP
# upgrade: time; heap the open connection holds afterwards), and the CPU per 40 ms audio frame
# (a v2 channel.input of 2560 base64 characters) from ws.send_nowait() until the socket took it.
# Heap figures are the GC heap's: mbedtls's session buffers live outside it (the C heap here, the
# IDF heap on an ESP32: about 40 KB at the handshake).
import gc
import json
import sys
import time

import asyncio
from meerkat_rt import log
from meerkat_rt.ws import WebSocket

log.sink = lambda line: None


class Drop:
    # The WebSocket's sink: whatever the server sends (only its close frame here) is dropped.
    def hold(self):
        return False

    def feed(self, buf, off, n, first, last, text):
        pass


async def main(url, ca_file, frames):
    out = {"scheme": url.split(":", 1)[0]}
    ctx = None
    gc.collect()
    free0 = gc.mem_free()
    if url.startswith("wss"):
        from meerkat_rt import tls

        t = time.ticks_us()
        ctx = tls.context(ca_file=ca_file)
        out["context_ms"] = time.ticks_diff(time.ticks_us(), t) / 1000
        gc.collect()
        out["context_heap"] = free0 - gc.mem_free()
    ws = WebSocket(Drop(), 4096, tx_size=2560 + 256)
    gc.collect()
    free1 = gc.mem_free()
    t = time.ticks_us()
    await ws.connect(url, tls=ctx, timeout_ms=10000)
    out["connect_ms"] = time.ticks_diff(time.ticks_us(), t) / 1000
    gc.collect()
    out["connection_heap"] = free1 - gc.mem_free()
    body = b'{"type":"channel.input","chunk":{"kind":"audio_chunk","data":"' + b"A" * 2560 + b'"}}'
    spent = 0
    for i in range(frames):
        t = time.ticks_us()
        while not ws.send_nowait(body):
            ws.poll()
        while not ws.can_send():
            ws.poll()
        spent += time.ticks_diff(time.ticks_us(), t)
        if i % 10 == 9:
            await asyncio.sleep_ms(0)
    out["frames"] = frames
    out["frame_us"] = spent // frames
    out["frame_bytes"] = len(body)
    gc.collect()
    out["heap_free_end"] = gc.mem_free()
    await ws.close()
    print(json.dumps(out))


asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
