"""A local Meerkat-compatible realtime host (protocol v2, as Meerkat 0.6.2 enforces it) with a
scripted voice agent, recording and fault injection. A development and test tool.

    from meerkat_tools.devserver import DevServer, ServerOptions

    with DevServer.running(ServerOptions(token_ttl=5)) as srv:
        info = srv.open_info()            # or realtime/open_info over srv.rpc_address / REST
        ...                               # a client connects to info["ws_url"]
        srv.wait_event("turn_completed")  # block until the server sent it
        srv.force_reconnect_cycle(succeed=False)

Modules: wire (shapes, client-frame parser), tokens, rpc, rest, ws (transport), channel
(first-frame table, in-session rules, status, observers), reconnect, agent, vad, audio,
recording, faults, host, server (DevServer), cli (`meerkat-devserver`).
"""

from .faults import INJECT_KINDS, Faults
from .options import DEFAULT_SESSION_ID, ServerOptions
from .server import DevServer

ServerConfig = ServerOptions

__all__ = ["DevServer", "ServerOptions", "ServerConfig", "Faults", "INJECT_KINDS", "DEFAULT_SESSION_ID"]
