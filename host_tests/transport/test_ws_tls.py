"""wss:// with certificate verification (CA in DER from a file, server_hostname checked) on
CPython and on the MicroPython unix port, against a TLS server whose CA the test made."""

from __future__ import annotations



def test_wss_with_the_right_ca(client, peers):
    r = client.run("sc_tls", "wss", ca=peers.certs["ca_der"], url=peers.url("wss", "/echo"))
    assert r.get("echo") == "over tls", r
    assert r["close_code"] == 1000


def test_wss_with_a_wrong_ca_fails_verification(client, peers):
    r = client.run("sc_tls", "wss", ca=peers.certs["otherca_der"], url=peers.url("wss", "/echo"))
    assert r["type"] == "WebSocketError", r
    assert r["error"].startswith("TLS handshake with 127.0.0.1:%d failed" % peers.ports["wss"]), r
    assert "verif" in r["error"] or "not correctly signed" in r["error"], r


def test_wss_with_a_wrong_hostname_fails_verification(client, peers):
    # A certificate of the right CA, but for wrong.example only.
    r = client.run("sc_tls", "wss", ca=peers.certs["ca_der"], url=peers.url("wss_wrong", "/echo"))
    assert r["type"] == "WebSocketError", r
    assert r["error"].startswith("TLS handshake with"), r
    assert "match" in r["error"] or "mismatch" in r["error"], r


def test_wss_insecure_is_explicit_and_warns(client, peers):
    r = client.run("sc_tls", "wss", insecure=True, url=peers.url("wss_wrong", "/echo"))
    assert r.get("echo") == "over tls", r
    assert any(line.startswith("W tls:") and "insecure" in line for line in r["log"]), r["log"]


def test_wss_without_a_ca(client, peers):
    r = client.run("sc_tls", "wss", url=peers.url("wss", "/echo"))
    assert r["type"] == "WebSocketError", r
    if client.runtime == "micropython":  # no CA bundle on a device: refuse clearly
        assert "needs a CA certificate" in r["error"], r
    else:  # CPython falls back to the system trust store, which does not know the test CA
        assert r["error"].startswith("TLS handshake with"), r


def test_pem_ca_file_is_refused_with_a_hint(client, peers):
    r = client.run("sc_tls", "wss", ca=peers.certs["ca_pem"], url=peers.url("wss", "/echo"))
    assert r["type"] == "ValueError" and "openssl x509" in r["error"] and "-outform der" in r["error"], r
