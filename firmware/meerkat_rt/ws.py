# meerkat_rt.ws: a lean RFC 6455 WebSocket client (ws:// and wss://) for MicroPython and CPython.
#
# Run-time model (docs/architecture.md 2): connect() is async (TCP, TLS, HTTP upgrade); after it
# the socket is non-blocking and poll() does all the I/O without awaiting: it parses what has
# arrived into the sink, answers pings, follows the close handshake, then writes what the socket
# accepts. Nothing on that path allocates on MicroPython: buffers are preallocated here, payloads
# are handed on as (buffer, offset, length), masking runs in place (fast.mask_copy, viper), and
# a non-blocking sock.write(buf, off, n) / sock.readinto(buf) allocate nothing.
#
# Runtime differences live in one place: on MicroPython the raw (or tls) socket already has the
# semantics the frame logic wants (write -> count or None, readinto -> count, 0 at EOF, None when
# nothing arrived); on CPython net.stream() gives a plain or ssl socket the same semantics, and
# connect() drives the TLS handshake itself (MicroPython's tls does it during the first I/O).
#
# Sending is one data frame at a time: begin(n, opcode) writes the header with a fresh mask key
# into the send buffer, put() masks payload pieces straight into it, end_frame() publishes it,
# poll() writes it out across as many calls as the socket needs. Control frames (pong, close,
# ping) use their own small buffer and are written between data frames, never inside one.
# Whichever buffer a write was started on is finished before the other is touched: TLS stacks
# (OpenSSL, mbedtls) require a write that returned "try again" to be retried with the same data.
import random

from . import fast, log, net
from .compat import IS_MICROPYTHON, const, sleep_ms, ticks_add, ticks_diff, ticks_ms

# Opcodes (RFC 6455 5.2).
CONT = const(0)
TEXT = const(1)
BINARY = const(2)
CLOSE = const(8)
PING = const(9)
PONG = const(10)

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_IDLE = const(0)  # never connected, or closed (see close_code)
_OPEN = const(1)
_CLOSING = const(2)  # a close frame is queued or sent; waiting for the other side
_CLOSED = const(3)
_CLOSE_WAIT_MS = const(1000)


class WebSocketError(Exception):
    """Every failure of this module. `code` is the close code when one applies (1002, 1009).
    `fatal`: retrying cannot help (the server's certificate failed verification: a wrong CA,
    host name or clock stays wrong on the next attempt); the link stops instead of retrying."""

    def __init__(self, message, code=None, fatal=False):
        super().__init__(message)
        self.code = code
        self.fatal = fatal


def split_url(url):
    """ws[s]://host[:port][/path][?query] -> (secure, host, port, path). IPv6 literals are not
    supported. Errors name the URL without its path and query: a live URL carries its token."""
    secure = url.startswith("wss://")
    if not secure and not url.startswith("ws://"):
        raise WebSocketError("not a ws:// or wss:// URL: %s..." % log.esc(url[:8]))
    rest = url[6 if secure else 5 :]
    i = 0
    while i < len(rest) and rest[i] not in "/?":
        i += 1
    hostport, path = rest[:i], rest[i:]
    if not path or path[0] == "?":
        path = "/" + path
    shown = url[: len(url) - len(rest) + i]
    i = hostport.rfind(":")
    try:
        port = int(hostport[i + 1 :]) if i >= 0 else (443 if secure else 80)
    except ValueError:
        raise WebSocketError("bad port in %s" % log.esc(shown))
    host = hostport[:i] if i >= 0 else hostport
    if not host:
        raise WebSocketError("no host in %s" % log.esc(shown))
    return secure, host, port, path


class WebSocket:
    def __init__(self, sink, max_message=16384, rx_size=1024, tx_size=4096):
        """sink: where received payloads go (see the module comment and Sink below).
        max_message: the largest message accepted (close 1009 beyond it), unless the sink
        bounds messages itself (a true `streams` attribute: the downlink streams audio of any
        size and drops oversized others, counted)."""
        # Big buffers first, before anything fragments the heap (docs/architecture.md 1).
        self.tx = bytearray(tx_size)
        self.rx = bytearray(rx_size)
        self.max_message = max_message
        self.set_sink(sink)
        self._ctl = bytearray(131)  # one outgoing control frame: 2 + 4 (key) + 125
        self._cin = bytearray(125)  # payload of the incoming control frame
        self._hdr = bytearray(10)  # incoming frame header (servers never mask: no key)
        self._key = bytearray(4)
        self.sock = None
        self.close_timeout_ms = _CLOSE_WAIT_MS
        self._reset()

    def set_sink(self, sink):
        self.sink = sink
        self.bounded = not getattr(sink, "streams", False)

    def _reset(self):
        # Every attribute the hot path touches exists from here on: assigning an existing
        # attribute allocates nothing, adding one would grow the instance dict.
        self.state = _IDLE
        self.open = False
        self.close_code = None
        self.close_reason = ""
        self.error = None
        self.bytes_in = self.bytes_out = self.frames_in = self.frames_out = self.pongs = 0
        self._tx_off = self._tx_end = 0  # published data frame: tx[_tx_off:_tx_end] unwritten
        self._fill = -1  # write position of the frame being built, -1 when none
        self._pend = self._pay = 0  # end and payload start of the frame being built
        self._ctl_off = self._ctl_n = 0
        self._wsel = 0  # buffer a write was started on: 0 none, 1 tx, 2 control
        self._close_q = 0  # close code to send once the control buffer is free
        self._close_why = ""
        self._sent_close = self._got_close = self._discard = False
        self._rx_off = self._rx_end = 0
        self._hn = 0  # header bytes collected
        self._need = 2  # header bytes needed; 0 while in a frame's payload
        self._op = self._fin = self._rem = self._cn = 0
        self._mop = self._mlen = 0  # opcode and size so far of the message being received
        self._first = False
        self._ka_iv = self._ka_to = 0
        self._last_rx = self._last_ping = self._since = 0

    # ---------------------------------------------------------------- connect

    async def connect(self, url, tls=None, timeout_ms=10000, host_header=None):
        """TCP (+TLS) connect and HTTP upgrade, bounded by timeout_ms. Raises WebSocketError."""
        secure, host, port, path = split_url(url)
        if secure and tls is None:
            from . import tls as _tls

            try:
                tls = _tls.context()
            except ValueError as e:
                raise WebSocketError(str(e))
        if self.sock is not None:
            self._shutdown()
        self._reset()
        where = "%s:%d" % (host, port)
        deadline = ticks_add(ticks_ms(), timeout_ms)
        phase = "connect"
        try:
            s = await net.connect(host, port, timeout_ms)  # DNS cached; refusals seen at once
            self.sock = s
            if tls is not None:
                phase = "TLS handshake"
                s = tls.wrap_socket(s, server_hostname=host, do_handshake_on_connect=False)
                self.sock = s
                s.setblocking(False)
            if not IS_MICROPYTHON:
                from ._host import again as _again

                again = _again()
                while tls is not None:
                    try:
                        s.do_handshake()  # type: ignore
                        break
                    except again:
                        await _tick(deadline, phase, where, timeout_ms)
                s = self.sock = net.stream(s)
            phase = "upgrade"
            await self._upgrade(s, host, port, path, host_header, deadline, where, timeout_ms)
            self.state = _OPEN
        except WebSocketError:
            raise
        except net.NetError as e:
            raise WebSocketError(str(e))
        except Exception as e:  # OSError; ValueError: mbedtls verification; ssl.SSLError
            why = str(e).strip()
            code = e.args[0] if e.args else 0
            if phase == "connect":
                raise WebSocketError("cannot connect to %s: %s" % (where, why))
            if tls is not None and isinstance(e, ValueError) and not isinstance(e, UnicodeError):
                # Certificate verification: mbedtls raises ValueError with its verify_info
                # text; CPython's SSLCertVerificationError is a ValueError too. Not retryable.
                raise WebSocketError("TLS handshake with %s failed: %s%s" % (where, why, _verify_hint(why)), fatal=True)
            if tls is not None and ((type(code) is int and code < 0) or phase[0] == "T"):
                raise WebSocketError("TLS handshake with %s failed: %s" % (where, why))
            raise WebSocketError("connection to %s failed during the %s: %s" % (where, phase, why))
        finally:
            if self.state != _OPEN:  # failed or cancelled: never leak the socket
                self._shutdown(1006, "connect failed")
        self.open = True
        self._last_rx = self._last_ping = ticks_ms()
        log.info("ws", "open %s", where)

    async def _upgrade(self, s, host, port, path, host_header, deadline, where, timeout_ms):
        raw = bytearray(16)
        for i in range(16):
            raw[i] = random.getrandbits(8)
        key = _b64(raw)
        if host_header is None:
            host_header = host if port in (80, 443) else where
        req = (
            "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, host_header, key)
        ).encode()
        off = 0
        while off < len(req):
            k = s.write(req, off, len(req) - off)
            if k:
                off += k
            else:
                await _tick(deadline, "upgrade", where, timeout_ms)
        head = b""
        rx = self.rx
        while True:
            n = s.readinto(rx)
            if n == 0:
                raise WebSocketError("%s closed the connection during the upgrade" % where)
            if n:
                head += rx[:n]
                end = head.find(b"\r\n\r\n")
                if end >= 0:
                    break
                if len(head) > 4096:
                    raise WebSocketError("upgrade response from %s too long" % where)
            else:
                await _tick(deadline, "upgrade", where, timeout_ms)
        lines = head[:end].decode().split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) < 2 or parts[1] != "101":
            raise WebSocketError("upgrade refused by %s: '%s'" % (where, log.esc(lines[0], 80)))
        accept = upgrade = None
        for line in lines[1:]:
            i = line.find(":")
            name = line[:i].strip().lower()
            if name == "sec-websocket-accept":
                accept = line[i + 1 :].strip()
            elif name == "upgrade":
                upgrade = line[i + 1 :].strip().lower()
        if upgrade != "websocket":
            raise WebSocketError("upgrade response from %s lacks 'Upgrade: websocket'" % where)
        import hashlib

        if accept != _b64(hashlib.sha1(key.encode() + _GUID).digest()):
            raise WebSocketError("bad Sec-WebSocket-Accept from %s" % where)
        # Frames the server sent right behind the 101 came in the same read: keep them.
        rest = len(head) - end - 4
        rx[0:rest] = head[end + 4 :]
        self._rx_end = rest

    # ---------------------------------------------------------------- sending

    def can_send(self):
        """True when a new data frame may be started (open, previous frame fully written)."""
        return self.state == _OPEN and self._fill < 0 and self._tx_end == 0

    def begin(self, n, opcode=TEXT):
        """Start a data frame of n payload bytes (TEXT or BINARY) in the send buffer."""
        t = self.tx
        h = 6 if n < 126 else (8 if n < 65536 else 14)
        if not self.can_send():
            raise WebSocketError("cannot start a frame now (check can_send())")
        if h + n > len(t):
            raise WebSocketError("frame of %d bytes exceeds tx_size %d" % (n, len(t)))
        t[0] = 0x80 | opcode
        if h == 6:
            t[1] = 0x80 | n
        elif h == 8:
            t[1] = 0xFE
            t[2] = n >> 8
            t[3] = n & 255
        else:
            t[1] = 0xFF
            for i in range(8):
                t[2 + i] = (n >> (56 - 8 * i)) & 255
        self._new_key(t, h - 4)
        self._pay = self._fill = h
        self._pend = h + n

    def put(self, src, off, n):
        """Mask n bytes of src from off into the frame being built."""
        f = self._fill
        if f < 0 or f + n > self._pend:
            raise WebSocketError("put() beyond the frame begun")
        fast.mask_copy(self.tx, f, src, off, n, self._key, f - self._pay)
        self._fill = f + n

    def end_frame(self):
        """Publish the frame; poll() writes it."""
        if self._fill != self._pend:
            raise WebSocketError("end_frame() before the whole payload was put()")
        self._tx_off = 0
        self._tx_end = self._pend
        self._fill = -1

    def fits(self, n):
        """Whether a data frame of n payload bytes fits the send buffer."""
        return n + (6 if n < 126 else (8 if n < 65536 else 14)) <= len(self.tx)

    def send_nowait(self, data, opcode=TEXT):
        """Queue one whole frame from bytes (a str is encoded: allocates). False when a frame
        is still being written; WebSocketError when it can never fit (check fits() first)."""
        if type(data) is str:
            data = data.encode()
        if not self.can_send():
            return False
        self.begin(len(data), opcode)
        self.put(data, 0, len(data))
        self.end_frame()
        return True

    def ping(self, payload=b""):
        """Queue a ping (at most 125 bytes). The server must not see one before channel.opened."""
        return self._control(9, payload, len(payload))

    def _new_key(self, buf, at):
        # A fresh mask key per frame (RFC 6455 5.3), allocation-free: two 16-bit draws (ESP32 small
        # ints are 31-bit). ESP32's random is seeded from the hardware RNG at boot.
        k = self._key
        r = random.getrandbits(16)
        k[0] = r & 255
        k[1] = r >> 8
        r = random.getrandbits(16)
        k[2] = r & 255
        k[3] = r >> 8
        for i in range(4):
            buf[at + i] = k[i]

    def _control(self, op, src, n, code=0):
        # Build a control frame in the control buffer unless a write of it is under way; pings
        # and pongs only while open (nothing may follow a close); a newer pong replaces an older.
        if self._wsel == 2 or (op != 8 and self.state != _OPEN):
            return False
        c = self._ctl
        m = n + (2 if code else 0)
        c[0] = 0x80 | op
        c[1] = 0x80 | m
        self._new_key(c, 2)
        if code:
            c[6] = code >> 8
            c[7] = code & 255
        fast.copy(c, 6 + m - n, src, 0, n)
        fast.mask_copy(c, 6, c, 6, m, self._key, 0)
        self._ctl_off = 0
        self._ctl_n = 6 + m
        return True

    def _flush(self):
        s = self.sock
        did = False
        while True:
            w = self._wsel
            if w == 0:
                # Order: a queued pong/ping, then the pending data frame, then the close.
                if self._ctl_n:
                    w = 2
                elif self._tx_end and not self._sent_close:
                    w = 1
                elif self._close_q:
                    code = self._close_q
                    why = self._close_why.encode()[:123] if code != 1005 else b""
                    self._close_q = 0
                    self._control(8, why, len(why), code if code != 1005 else 0)
                    self._sent_close = True
                    w = 2
                else:
                    return did
                self._wsel = w
            if w == 1:
                buf, off, end = self.tx, self._tx_off, self._tx_end
            else:
                buf, off, end = self._ctl, self._ctl_off, self._ctl_n
            k = s.write(buf, off, end - off)  # type: ignore  # the stubs lack write(buf, off, n)
            if not k:
                return did
            did = True
            self.bytes_out = (self.bytes_out + k) & 0x3FFFFFFF  # wraps: stays a small int
            off += k
            if off < end:  # the socket is full; go on from here next time
                if w == 1:
                    self._tx_off = off
                else:
                    self._ctl_off = off
                return did
            if w == 1:
                self._tx_off = self._tx_end = 0
            else:
                self._ctl_off = self._ctl_n = 0
            self._wsel = 0
            self.frames_out += 1

    # ---------------------------------------------------------------- receiving and polling

    def poll(self, now=None):
        """Do all the I/O possible right now; True when something happened. Never awaits."""
        if self.state == _IDLE or self.state == _CLOSED:
            return False
        if now is None:
            now = ticks_ms()
        did = False
        if self._rx_off < self._rx_end:
            did = self._parse()
        else:
            try:
                n = self.sock.readinto(self.rx)  # type: ignore  # not None while open
            except OSError as e:
                self._shutdown(1006, "connection lost: %s" % e)
                return True
            if n == 0:
                self._shutdown(1006, "connection closed without a close frame")
                return True
            if n:
                self.bytes_in = (self.bytes_in + n) & 0x3FFFFFFF
                self._last_rx = now
                self._rx_off = 0
                self._rx_end = n
                did = True
                self._parse()
        if self._rx_off < self._rx_end:
            self._last_rx = now  # held back by the sink: not reading is no sign of a dead link
        iv = self._ka_iv
        if iv and self.state == _OPEN and ticks_diff(now, self._last_rx) >= iv and ticks_diff(now, self._last_ping) >= iv:
            self._last_ping = now
            self.ping()
        try:
            did = self._flush() or did
        except OSError as e:
            self._shutdown(1006, "connection lost: %s" % e)
            return True
        if self.state == _CLOSING:
            if (self._sent_close and self._got_close and not self._ctl_n) or ticks_diff(now, self._since) > self.close_timeout_ms:
                self._shutdown()
        elif self._ka_to and ticks_diff(now, self._last_rx) > self._ka_to:
            log.warn("ws", "nothing received for %d ms: link dead", self._ka_to)
            self._shutdown(1006, "keepalive timeout")
        return did

    def flush(self):
        """Write what the socket accepts now, without reading (poll() does both)."""
        if self.state == _IDLE or self.state == _CLOSED:
            return False
        try:
            return self._flush()
        except OSError as e:
            self._shutdown(1006, "connection lost: %s" % e)
            return True

    def keepalive(self, interval_ms, timeout_ms=0):
        """Ping when nothing arrived for interval_ms (0: never); declare the link dead when nothing
        at all (not even a pong) arrived for timeout_ms (0: never). Call only after channel.opened."""
        self._ka_iv = interval_ms
        self._ka_to = timeout_ms
        self._last_rx = self._last_ping = ticks_ms()

    def _parse(self):
        # Frame parser over rx[_rx_off:_rx_end]; consumes what it can, returns whether it did.
        if self._discard:  # after a protocol violation the stream cannot be trusted
            self._rx_off = self._rx_end
            return True
        buf = self.rx
        sink = self.sink
        i = start = self._rx_off
        end = self._rx_end
        while i < end:
            need = self._need
            if need:
                if self._hn == 0 and sink.hold():
                    break  # back-pressure: the sink takes nothing now
                k = need - self._hn
                if k > end - i:
                    k = end - i
                fast.copy(self._hdr, self._hn, buf, i, k)
                self._hn += k
                i += k
                if self._hn < need:
                    break
                h = self._hdr
                if need == 2:
                    if h[0] & 0x70:
                        return self._fail(1002, "reserved bits set in a frame from the server")
                    if h[1] & 0x80:
                        return self._fail(1002, "masked frame from the server")
                    k = h[1] & 127
                    if k > 125:
                        self._need = 4 if k == 126 else 10
                        continue
                elif need == 4:
                    k = (h[2] << 8) | h[3]
                elif h[2] | h[3] | h[4] | h[5] or h[6] & 0xC0:
                    k = 0x3FFFFFFF  # 2**30 or more: over any max_message, kept a small int
                else:
                    k = (h[6] << 24) | (h[7] << 16) | (h[8] << 8) | h[9]
                self._hn = self._need = 0
                if not self._frame(h[0], k):
                    self._rx_off = end
                    return True
                continue
            k = self._rem
            if k > end - i:
                k = end - i
            if self._op >= 8:
                fast.copy(self._cin, self._cn, buf, i, k)
                self._cn += k
            elif self.state == _OPEN:
                if sink.hold():
                    break
                sink.feed(buf, i, k, self._first, self._fin and k == self._rem, self._mop == 1)
                self._first = False
            i += k
            self._rem -= k
            if self._rem == 0:
                self._frame_done()
        self._rx_off = i
        return i > start

    def _frame(self, b0, n):
        # A complete frame header: validate it and set up the payload phase.
        op = b0 & 15
        fin = b0 & 0x80
        if op >= 8:
            if op > 10 or not fin or n > 125:
                return self._fail(1002, "bad control frame (opcode %d, %d bytes)" % (op, n))
        elif op > 2:
            return self._fail(1002, "unknown opcode %d" % op)
        elif op == 0:
            if not self._mop:
                return self._fail(1002, "continuation frame outside a message")
        else:
            if self._mop:
                return self._fail(1002, "new message inside a fragmented one")
            self._mop = op
            self._mlen = 0
            self._first = True
        if op < 8 and self.bounded:
            self._mlen += n
            if self._mlen > self.max_message:
                return self._fail(1009, "message of %d+ bytes exceeds max_message %d" % (self._mlen, self.max_message))
        self._op = op
        self._fin = fin
        self._rem = n
        self._cn = 0
        self.frames_in += 1
        if n == 0:
            if op < 8 and fin and self.state == _OPEN:
                self.sink.feed(self.rx, 0, 0, self._first, True, self._mop == 1)
            self._frame_done()
        return True

    def _frame_done(self):
        self._need = 2
        op = self._op
        if op < 8:
            if self._fin:
                self._mop = 0
            return
        if op == 10:
            self.pongs += 1
        elif op == 9:
            self._control(10, self._cin, self._cn)
        else:
            self._close_in()

    def _close_in(self):
        # The server's close frame: record its code and reason, echo it, then shut down.
        c = self._cin
        n = self._cn
        self._got_close = True
        if self.state != _OPEN:
            return  # the answer to our close
        code = 1005
        why = ""
        if n >= 2:
            code = (c[0] << 8) | c[1]
            try:
                why = bytes(c[2:n]).decode()
            except UnicodeError:
                why = "?"
        self._close(code, why)
        log.info("ws", "server closed: %d %s", code, log.esc(why))

    def _close(self, code, why):
        if self.state != _OPEN:
            return
        self.state = _CLOSING
        self.open = False
        self.close_code = code
        self.close_reason = why
        self._close_q = code
        self._close_why = why
        self._since = ticks_ms()

    def _fail(self, code, why):
        log.warn("ws", "closing with %d: %s", code, why)
        if self.state == _OPEN:
            self.error = WebSocketError(why, code)
        self._close(code, why)
        self._discard = True
        return False

    def _shutdown(self, code=1006, why=""):
        if self.close_code is None:
            self.close_code = code
            self.close_reason = why
        if self.state == _OPEN and why:
            log.info("ws", "closed: %s", why)
        s = self.sock
        self.sock = None
        if s is not None:
            try:
                s.close()
            except OSError:
                pass
        self.state = _CLOSED
        self.open = False

    def abort(self):
        """Drop the connection now, without a close handshake (code 1006)."""
        if self.state != _IDLE:
            self._shutdown(1006, "aborted")

    # ---------------------------------------------------------------- closing

    async def close(self, code=1000, reason=""):
        """Send a close frame, wait (bounded by close_timeout_ms) for the answer, close the socket."""
        self._close(code, reason)
        while self.state == _CLOSING:
            if not self.poll():
                await sleep_ms(1)
        if self.sock is not None:
            self._shutdown()


def _verify_hint(why):
    # What to do about a failed verification, from the words mbedtls (MicroPython) or OpenSSL
    # (CPython) use; the README's troubleshooting section lists the same three cases.
    w = why.lower()
    if "future" in w or "not yet valid" in w:
        return " (the device's clock is before the certificate's start: set the clock first, ntptime.settime())"
    if "expired" in w:
        return " (expired, or the device's clock is wrong)"
    if "match" in w:
        return " (the certificate does not name this host: connect with a host name it names)"
    if "signed" in w or "issuer" in w or "self-signed" in w:
        return " (not signed by the CA in tls.ca_file: wrong CA file?)"
    return ""


async def _tick(deadline, phase, where, timeout_ms):
    if ticks_diff(deadline, ticks_ms()) <= 0:
        raise WebSocketError("timeout after %d ms during the %s with %s" % (timeout_ms, phase, where))
    await sleep_ms(2)


def _b64(data):
    import binascii

    return binascii.b2a_base64(data, newline=False).decode()
