"""TLS for the dev server's WebSocket listeners (an extension, off by default).

The real Meerkat server has no TLS at all: `rkat-rpc` serves plain `ws://`, and `wss://` means a
TLS-terminating proxy in front of it (`--live-ws-scheme wss` only changes the advertised
scheme). With `ServerOptions(tls=True)` (`meerkat-devserver --tls`) the dev server plays that
proxy itself: both WebSocket listeners (v2 `/realtime/ws`, live `/live/ws`) speak TLS with a
certificate signed by a CA it makes on start-up, and the URLs it hands out say `wss://`. The
JSON-RPC listener and the REST proxy stay plain, as they are on a real deployment.

The CA is written to `tls_dir` (a temporary directory by default) as `ca.der`, the form a
device needs (mbedtls rejects PEM CA data; copy it to the board and name it in config.json's
`tls.ca_file`), and as `ca.pem` for host tools (`curl --cacert`, CPython clients).

Switches for the failure tests: `tls_hostnames` (the names the certificate holds; anything else
fails host name verification) and `tls_not_before` (the certificate's start; a start after the
device's clock fails as "not yet valid", which is what a board whose clock was never set sees
with every real certificate).

Every handshake is counted (`attempts`, `failures` with the reason): a device that fails
verification must stop, not hammer the server with new attempts.
"""

from __future__ import annotations

import datetime
import ssl
import tempfile
import threading
from pathlib import Path

DEFAULT_HOSTNAMES = ("127.0.0.1", "localhost")
# A freshly issued certificate: valid from an hour ago (like a real one, and unlike trustme's
# default of the year 2000, which a board with an unset clock would accept), for 30 days.
VALID_BEFORE_NOW = datetime.timedelta(hours=1)
VALIDITY = datetime.timedelta(days=30)


class ServerTLS:
    """A CA, a server certificate and the server-side SSL context; handshake counters."""

    def __init__(
        self,
        directory: str | Path | None = None,
        hostnames: tuple[str, ...] = DEFAULT_HOSTNAMES,
        not_before: datetime.datetime | None = None,
    ):
        import trustme  # a well-kept test-CA library (python-trio); imported only when TLS is on

        self._tmp = None
        if directory is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="meerkat-devserver-tls-")
            directory = self._tmp.name
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        start = not_before if not_before is not None else now - VALID_BEFORE_NOW
        self.not_before = start
        self.hostnames = tuple(hostnames)
        self.ca = trustme.CA(organization_name="meerkat devserver")
        self.cert = self.ca.issue_cert(*self.hostnames, not_before=start, not_after=max(start, now) + VALIDITY)
        self.ca_pem = self.dir / "ca.pem"
        self.ca_der = self.dir / "ca.der"
        self.ca.cert_pem.write_to_path(str(self.ca_pem))
        self.ca_der.write_bytes(ssl.PEM_cert_to_DER_cert(self.ca.cert_pem.bytes().decode()))
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.cert.configure_cert(self.context)
        self._lock = threading.Lock()
        self.attempts = 0
        self.failures: list[dict] = []

    def client_context(self) -> ssl.SSLContext:
        """A CPython client context that trusts this CA (for host-side clients and tests)."""
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx

    def count(self, listener: str, error: BaseException | None) -> None:
        with self._lock:
            self.attempts += 1
            if error is not None:
                self.failures.append({"listener": listener, "error": f"{type(error).__name__}: {error}"})

    def stats(self) -> dict:
        with self._lock:
            return {"attempts": self.attempts, "failures": list(self.failures)}

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
