# meerkat_rt.tls: client TLS contexts for wss://, verifying by default, on both runtimes.
#
# MicroPython: the native `tls` module (>= 1.23). Its SSLContext(PROTOCOL_TLS_CLIENT) verifies
# only with verify_mode = CERT_REQUIRED, which we set explicitly; the micropython-lib `ssl`
# wrapper defaults to CERT_NONE, so it is never used here. mbedtls wants the CA in DER form (the
# ESP32 and the unix port reject PEM cadata as "invalid cert"), and the native
# load_verify_locations takes it positionally (no keywords). ESP32 firmware has no CA bundle:
# the CA of the server (or of its issuer) must be shipped as a file. Verification also needs a
# correct clock (ntptime on the device).
#
# CPython: ssl.SSLContext(PROTOCOL_TLS_CLIENT) verifies and checks the host name by default;
# without a CA file it uses the system trust store.
from . import log
from .compat import IS_MICROPYTHON

if IS_MICROPYTHON:
    import tls as _tls
else:
    import ssl as _tls  # type: ignore


def read_ca(path):
    """The DER bytes of a CA certificate file; a PEM file is refused with a clear message."""
    with open(path, "rb") as f:
        der = f.read()
    if der[:5] == b"-----":
        raise ValueError("CA file %s is PEM; convert it: openssl x509 -in ca.pem -outform der -out ca.der" % path)
    return der


def context(ca_der=None, ca_file=None, insecure=False):
    """An SSL client context for ws.connect(tls=...). Verifies the server against the CA (DER
    bytes, or a DER file) unless insecure=True, which logs a warning. Raises ValueError."""
    ctx = _tls.SSLContext(_tls.PROTOCOL_TLS_CLIENT)
    if insecure:
        log.warn("tls", "certificate verification disabled (insecure): the server is not authenticated")
        if not IS_MICROPYTHON:
            ctx.check_hostname = False  # type: ignore
        ctx.verify_mode = _tls.CERT_NONE  # type: ignore  # settable; missing from the stubs
        return ctx
    if ca_file:
        ca_der = read_ca(ca_file)
    if ca_der is None:
        if IS_MICROPYTHON:
            raise ValueError("wss:// needs a CA certificate (DER file) or an explicit insecure option")
        ctx.load_default_certs()  # type: ignore
    elif IS_MICROPYTHON:
        ctx.load_verify_locations(ca_der)
    else:
        ctx.load_verify_locations(cadata=ca_der)
    ctx.verify_mode = _tls.CERT_REQUIRED  # type: ignore
    return ctx
