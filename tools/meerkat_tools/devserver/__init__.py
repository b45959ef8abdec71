"""A local Meerkat-compatible realtime host with a scripted voice agent, recording and fault
injection: the live surface (Meerkat 0.6.5 onwards, as at 0.8.26) and protocol v2 (Meerkat
0.6.2), alone or both at once. A development and test tool; see README.md.

    from meerkat_tools.devserver import DevServer, ServerOptions

    with DevServer.running(ServerOptions(surface="live")) as srv:
        opened = srv.live_open()          # or live/open over srv.rpc_address
        ...                               # a client connects to opened["transport"]["url"]
        srv.wait_event("turn_completed")  # an observation (live) or event (v2) the server sent

    with DevServer.running(ServerOptions(surface="v2", item_ids=True)) as srv:
        info = srv.open_info()            # or realtime/open_info over TCP / REST
        srv.force_reconnect_cycle(succeed=False)

Modules: options, faults; provider (the fake OpenAI-like model) and agent (what it says);
v2: wire, tokens, v2_api, rest, v2_adapter, channel, reconnect; live: live_wire, live_api,
live_adapter, live_channel; shared: rpc, ws, ws_channel, host, vad, audio, recording, server
(DevServer), cli (`meerkat-devserver`).
"""

from .faults import INJECT_KINDS, Faults
from .options import DEFAULT_SESSION_ID, DEFAULT_SURFACE, SURFACES, ServerOptions
from .rpc import RpcError
from .server import DevServer

ServerConfig = ServerOptions

__all__ = [
    "DevServer",
    "ServerOptions",
    "ServerConfig",
    "Faults",
    "INJECT_KINDS",
    "DEFAULT_SESSION_ID",
    "DEFAULT_SURFACE",
    "SURFACES",
    "RpcError",
]
