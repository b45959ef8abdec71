# Bootstrap scenarios (realtime/open_info), on CPython and the MicroPython unix port.
import wsmsg
from meerkat_rt import log
from meerkat_rt.v2 import bootstrap


async def fetch(a):
    lines = []
    log.sink = lines.append
    try:
        result = await bootstrap.fetch_open_info(a["settings"])
        return {"result": result, "log": lines}
    except bootstrap.BootstrapError as e:
        return {"error": str(e), "kind": e.kind, "retryable": e.retryable, "log": lines}


async def open_channel(a):
    # Bootstrap, open the WebSocket, send channel.open as the first frame, read channel.opened,
    # then close the channel: the whole transport path against the development server.
    from meerkat_rt.v2 import protocol

    lines = []
    log.sink = lines.append
    info = await bootstrap.fetch_open_info(a["settings"])
    w = wsmsg.client(4096)
    await w.connect(info["ws_url"])
    await wsmsg.send(w, protocol.open_frame(info["open_token"], "primary", a["settings"].get("turning_mode", "provider_managed")))
    opened = protocol.parse_server_frame(await wsmsg.recv(w, timeout_ms=15000))
    await wsmsg.send(w, protocol.CLOSE_FRAME)
    frames = []
    while True:
        m = await wsmsg.recv(w, timeout_ms=5000)
        if m is None:
            break
        frames.append(protocol.parse_server_frame(m)["type"])
    return {"ws_url": info["ws_url"], "opened": opened["type"], "role": opened["role"],
            "state": opened["status"]["state"], "after_close": frames, "close_code": w.close_code,
            "log": lines}
