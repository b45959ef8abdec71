# Bootstrap scenarios (realtime/open_info and friends), on CPython and the MicroPython unix port.
from meerkat_rt import bootstrap, log


async def fetch(a):
    lines = []
    log.sink = lines.append
    try:
        result = await getattr(bootstrap, a.get("fn", "fetch_open_info"))(a["settings"])
        return {"result": result, "log": lines}
    except bootstrap.BootstrapError as e:
        return {"error": str(e), "kind": e.kind, "retryable": e.retryable, "log": lines}
