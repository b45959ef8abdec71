"""wss:// end to end: the simulated board (frozen32 at 110K where it can be built) holds the
demo conversation with the dev server over verified TLS (the dev server's TLS extension, its
CA given to the board in DER through config tls.ca_file), on both server surfaces; and a wrong
CA, a wrong host name and a certificate that is not valid yet (the device's clock behind the
certificate's start) each stop the device with the error the README promises, after exactly
one connection attempt: no retry storm."""

from __future__ import annotations

import datetime
import ssl

import pytest
import trustme
from harness import FIX, conversation

BOOTSTRAP = {"live": "live/open", "v2": "realtime/open_info"}


def _tls_server(tmp_path, **extra) -> dict:
    return dict({"tls": True, "tls_dir": str(tmp_path / "ca"), "item_ids": True}, **extra)


@pytest.mark.parametrize("surface", ["live", "v2"])
def test_the_demo_over_verified_wss(tmp_path, surface):
    world = {"mic_wav": str(FIX / "user_question.wav")}
    with conversation(tmp_path, server=_tls_server(tmp_path), world=world, surface=surface,
                      tls={"ca_file": str(tmp_path / "ca" / "ca.der")}) as (srv, dev, _rec):
        assert (srv.live_ws_url if surface == "live" else srv.ws_url).startswith("wss://")
        dev.wait_event("state", 60, where=lambda s: s == "open")
        dev.wait_event("input_transcript_final", 60)
        dev.wait_event("turn_completed", 60)
        dev.wait_event("reply_done", 60)
        summary = dev.stop()
    assert summary["state"] == "closed" and summary["reconnects"] == 0, summary
    assert summary["audio_received_ms"] > 5000  # the whole spoken reply came over TLS
    tls = srv.tls.stats()
    assert tls["failures"] == [] and tls["attempts"] == 1


def _other_ca(tmp_path):
    der = tmp_path / "other-ca.der"
    der.write_bytes(ssl.PEM_cert_to_DER_cert(trustme.CA().cert_pem.bytes().decode()))
    return str(der)


CASES = {
    # name: (server options, the CA the board trusts: None = the server's, what the error says:
    # mbedtls's words (MicroPython; the README quotes them) and the hint, on both runtimes)
    "wrong_ca": ({}, "other", ("not correctly signed",), ("tls.ca_file",)),
    "wrong_host": ({"tls_hostnames": ("meerkat.invalid",)}, None, ("does not match",), ("host name",)),
    "not_yet_valid": (
        {"tls_not_before": datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) + datetime.timedelta(days=2)},
        None,
        ("validity starts in the future",),
        ("clock",),
    ),
}


@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_certificate_that_fails_verification_stops_the_device_after_one_attempt(tmp_path, case, runtime):
    server, ca, mbedtls_words, hint = CASES[case]
    words = (mbedtls_words if runtime == "micropython" else ()) + hint
    ca_file = _other_ca(tmp_path) if ca == "other" else str(tmp_path / "ca" / "ca.der")
    with conversation(tmp_path, server=_tls_server(tmp_path, **server), surface="live", runtime=runtime,
                      tls={"ca_file": ca_file}) as (srv, dev, _rec):
        summary = dev.wait_summary(60)
        bootstraps = len(srv.recorder.rpc_calls(BOOTSTRAP["live"]))
        tls = srv.tls.stats()
    assert summary["state"] == "error", summary
    error = summary["error"]
    assert error.startswith("TLS handshake with 127.0.0.1:"), error
    for word in words:
        assert word in error, (word, error)
    assert summary["reconnects"] == 0
    assert bootstraps == 1  # one token fetched: one attempt, no retries
    assert tls["attempts"] == 1 and len(tls["failures"]) == 1, tls
    assert not any(e == "reconnect" for e in (l.get("ev") for l in dev.lines))
