"""The asyncio API (`await srv.start()` / `await srv.until()` / `await srv.stop()`), as the
board simulator uses it inside its own event loop."""

from __future__ import annotations

import asyncio

from meerkat_tools.devserver import DevServer, ServerOptions

from ._client import connect


def test_start_until_stop_in_a_running_loop():
    async def main() -> None:
        srv = DevServer(ServerOptions(surface="v2", reply_latency_ms=0, reply_speed=0.0))
        await srv.start()
        try:
            info = srv.open_info()  # callable from the loop thread too
            assert info["ws_url"] == srv.ws_url

            def client() -> list[str]:
                ch, _ = connect(srv)
                ch.send_text("hi")
                ch.recv_event("turn_completed")
                ch.send({"type": "channel.close"})
                ch.expect_end()
                return ch.raw

            raw = await asyncio.to_thread(client)
            assert raw[-1] == '{"type":"channel.closed","reason":"client_closed"}'
            await srv.until(lambda: srv.events(type="turn_completed"), timeout=5)
            assert srv.items()[0]["state"] == "completed"
        finally:
            await srv.stop()

    asyncio.run(main())
