# wss:// scenarios (TLS with certificate verification), on CPython and the MicroPython unix port.
import wsmsg
from meerkat_rt import log, tls
from meerkat_rt.ws import WebSocketError


async def wss(a):
    lines = []
    log.sink = lines.append
    try:
        ctx = None
        if a.get("ca") or a.get("insecure"):
            ctx = tls.context(ca_file=a.get("ca"), insecure=a.get("insecure", False))
        w = wsmsg.client(2048, rx_size=512, tx_size=1024)
        await w.connect(a["url"], tls=ctx, timeout_ms=5000)
        await wsmsg.send(w, "over tls")
        echo = await wsmsg.recv(w, timeout_ms=5000)
        await w.close()
        return {"echo": echo, "close_code": w.close_code, "log": lines}
    except (WebSocketError, ValueError, OSError) as e:
        return {"error": str(e), "type": type(e).__name__, "log": lines}
