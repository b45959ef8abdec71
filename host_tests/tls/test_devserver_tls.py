"""The dev server's TLS extension on its own (CPython clients): the CA it writes, wss:// URLs on
both surfaces, handshakes counted with their failures, the switches for the failure cases."""

from __future__ import annotations

import datetime
import json
import socket
import ssl

import pytest
import websocket

from meerkat_tools.devserver import DevServer, ServerOptions


def _client(url: str, ctx: ssl.SSLContext):
    return websocket.create_connection(url, sslopt={"context": ctx}, timeout=5)


def test_both_listeners_speak_tls_and_count_handshakes(tmp_path):
    with DevServer.running(ServerOptions(surface="both", tls=True, tls_dir=str(tmp_path))) as srv:
        ready = json.loads(srv.ready_line())
        assert ready["ws_url"].startswith("wss://127.0.0.1:") and ready["live_ws"].startswith("wss://127.0.0.1:")
        der = (tmp_path / "ca.der").read_bytes()
        assert ready["ca_der"] == str(tmp_path / "ca.der") and der[:1] == b"\x30"  # DER: a SEQUENCE
        trusting = ssl.create_default_context(cadata=der)
        for url in (srv.ws_url, srv.live_ws_url):
            try:  # the handshake and upgrade succeed; the server then closes (no token)
                _client(url, trusting).close()
            except websocket.WebSocketBadStatusException:
                pass
        with pytest.raises(ssl.SSLCertVerificationError):
            _client(srv.ws_url, ssl.create_default_context())  # the system store does not know the CA
        port = int(srv.ws_url.split("/")[2].rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /realtime/ws HTTP/1.1\r\nHost: x\r\n\r\n")  # plain text to a TLS port
            s.settimeout(5)
            try:
                assert s.recv(100) == b""
            except ConnectionResetError:
                pass
        srv.recorder.wait_for(lambda: srv.tls.stats()["attempts"] >= 4, 10, "four handshakes")
        stats = srv.tls.stats()
    assert stats["attempts"] == 4
    assert len(stats["failures"]) == 2 and {f["listener"] for f in stats["failures"]} == {"v2"}


def test_hostnames_and_start_of_the_certificate(tmp_path):
    start = datetime.datetime(2031, 1, 1)
    with DevServer.running(ServerOptions(tls=True, tls_hostnames=("meerkat.invalid",), tls_not_before=start)) as srv:
        ctx = ssl.create_default_context(cadata=srv.tls.ca_der.read_bytes())
        with pytest.raises(ssl.SSLCertVerificationError) as exc:
            _client(srv.live_ws_url, ctx)
        assert srv.tls.cert and srv.tls.not_before == start
        ca_dir = srv.tls.dir
    assert "mismatch" in str(exc.value) or "not yet valid" in str(exc.value)
    assert not ca_dir.exists()  # the temporary CA directory went with the server


def test_tls_needs_a_hostname():
    with pytest.raises(ValueError, match="tls_hostnames"):
        DevServer(ServerOptions(tls=True, tls_hostnames=()))
