"""The real and misbehaving peers the transport tests talk to, all in the pytest process.

One background thread runs an asyncio loop with:

- a `websockets` server (the reference peer), routed by request path: echo, fragments, ping,
  server-initiated close, oversized messages, bursts, the audio-frame sink of the memory tests;
- the same server behind TLS twice: with a certificate for 127.0.0.1/localhost and with one for
  another name only (hostname mismatch);
- a raw asyncio TCP server for what `websockets` refuses to do: non-101 answers, a bad
  Sec-WebSocket-Accept, silence, masked or RSV frames, EOF without a close frame, a close frame
  without a code, control frames between fragments, watching for pings;
- JSON-lines and HTTP stubs of the bootstrap endpoints (realtime/open_info and friends).

Each connection names itself with `?id=...`; what the server saw is recorded under that id and
tests wait for it (`Peers.wait(id)`), never sleep.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import ssl
import struct
import subprocess
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import websockets
from websockets.asyncio.server import serve

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TOKEN = "SECRET-open-token-3f0c5a52"  # must never show up in a client log or error
PCM_FRAME = 1920  # 40 ms of 24 kHz mono PCM16


def pcm_pattern(seq: int) -> bytes:
    """The PCM frame number `seq` of the memory test (mirrors sc_mem.fill)."""
    body = bytes((i * 7 + 3) & 0xFF for i in range(PCM_FRAME))
    return struct.pack("<I", seq) + body[4:]


def make_certs(d: Path) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1/localhost, one for another name, and an
    unrelated CA; CAs also in DER (what mbedtls wants)."""

    def ossl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "otherca"):
        ossl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN=Test {ca}")
        ossl("x509", "-in", f"{ca}.pem", "-outform", "der", "-out", f"{ca}.der")
    for name, san in (("srv", "DNS:localhost,IP:127.0.0.1"), ("wrong", "DNS:wrong.example")):
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n")
        ossl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={san.split(':')[1].split(',')[0]}")
        ossl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return {k: str(d / v) for k, v in {
        "ca_der": "ca.der", "ca_pem": "ca.pem", "otherca_der": "otherca.der",
        "srv_pem": "srv.pem", "srv_key": "srv.key", "wrong_pem": "wrong.pem", "wrong_key": "wrong.key",
    }.items()}


def _query(path: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(path)
    return parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}


class Peers:
    def __init__(self, cert_dir: Path):
        self.certs = make_certs(cert_dir)
        self.results: dict[str, dict] = {}
        self.requests: list[dict] = []  # bootstrap requests seen by the stubs
        self._cond = threading.Condition()
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("peers did not start")

    # ------------------------------------------------------------ plumbing

    def record(self, cid: str | None, **values) -> None:
        if not cid:
            return
        with self._cond:
            self.results.setdefault(cid, {}).update(values)
            self._cond.notify_all()

    def wait(self, cid: str, key: str = "done", timeout: float = 10) -> dict:
        """What the server recorded for connection `cid`, once it recorded `key`."""
        with self._cond:
            if not self._cond.wait_for(lambda: key in self.results.get(cid, {}), timeout):
                raise AssertionError(f"server never recorded {key!r} for {cid}: {self.results.get(cid)}")
            return dict(self.results[cid])

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    async def _start(self) -> None:
        opts = dict(ping_interval=None, max_size=2**20, compression=None)
        self.ws = await serve(self._ws, "127.0.0.1", 0, **opts)
        tls_ok = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls_ok.load_cert_chain(self.certs["srv_pem"], self.certs["srv_key"])
        tls_wrong = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls_wrong.load_cert_chain(self.certs["wrong_pem"], self.certs["wrong_key"])
        self.wss = await serve(self._ws, "127.0.0.1", 0, ssl=tls_ok, **opts)
        self.wss_wrong = await serve(self._ws, "127.0.0.1", 0, ssl=tls_wrong, **opts)
        self.raw = await asyncio.start_server(self._raw, "127.0.0.1", 0)
        self.rpc = await asyncio.start_server(self._rpc, "127.0.0.1", 0)
        self.rest = await asyncio.start_server(self._rest, "127.0.0.1", 0)
        self.ports = {
            name: srv.sockets[0].getsockname()[1]
            for name, srv in (("ws", self.ws), ("wss", self.wss), ("wss_wrong", self.wss_wrong),
                              ("raw", self.raw), ("rpc", self.rpc), ("rest", self.rest))
        }
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.ports["closed"] = s.getsockname()[1]  # nothing listens here
        s.close()

    def url(self, kind: str, path: str) -> str:
        scheme = "wss" if kind.startswith("wss") else "ws"
        return f"{scheme}://127.0.0.1:{self.ports[kind]}{path}"

    # ------------------------------------------------------------ the websockets peer

    async def _ws(self, conn) -> None:
        path, q = _query(conn.request.path)
        cid = q.get("id")
        try:
            await getattr(self, "_ws_" + path.strip("/"))(conn, q, cid)
        except websockets.ConnectionClosed:
            pass
        finally:
            await conn.wait_closed()
            self.record(cid, close_code=conn.close_code, close_reason=conn.close_reason, done=True)

    async def _ws_echo(self, conn, q, cid) -> None:
        n = 0
        async for message in conn:
            n += 1
            await conn.send(message)
        self.record(cid, echoed=n)

    async def _ws_fragments(self, conn, q, cid) -> None:
        await conn.send(["alpha-", "beta-", "gamma"])
        await conn.send([b"\x00\x01", b"", b"\xfe\xff"])
        await conn.send("end")
        await conn.wait_closed()

    async def _ws_ping(self, conn, q, cid) -> None:
        waiter = await conn.ping(b"are-you-there")
        try:
            await asyncio.wait_for(waiter, 5)
            await conn.send("pong received")
        except asyncio.TimeoutError:
            await conn.send("no pong")
        await conn.wait_closed()

    async def _ws_server_close(self, conn, q, cid) -> None:
        await conn.send("hello")
        await conn.close(int(q.get("code", 1000)), q.get("reason", ""))
        # websockets returns from close() once the client's close frame came back (or timed out)
        self.record(cid, echo_code=conn.protocol.close_rcvd.code if conn.protocol.close_rcvd else None)

    async def _ws_big(self, conn, q, cid) -> None:
        await conn.send("x" * int(q["n"]))
        await conn.wait_closed()

    async def _ws_burst(self, conn, q, cid) -> None:
        for i in range(int(q["n"])):
            await conn.send("message %d" % i)
        await conn.wait_closed()

    async def _ws_flood(self, conn, q, cid) -> None:
        # n audio-sized text messages, as fast as the client reads them
        payload = "y" * int(q["size"])
        await conn.recv()  # the client says when it is ready to measure
        for _ in range(int(q["n"])):
            await conn.send(payload)
        await conn.wait_closed()

    async def _ws_sink(self, conn, q, cid) -> None:
        n = 0
        async for _ in conn:
            n += 1
        self.record(cid, received=n)

    async def _ws_mem(self, conn, q, cid) -> None:
        # The memory test's receiver: every audio frame must arrive intact and in order.
        expected = bad = 0
        first_bad = None
        async for message in conn:
            if message == "done":
                break
            try:
                frame = json.loads(message)
                chunk = frame["chunk"]
                ok = (frame["type"] == "channel.input" and chunk["kind"] == "audio_chunk"
                      and chunk["mime_type"] == "audio/pcm" and chunk["sample_rate_hz"] == 24000
                      and chunk["channels"] == 1 and base64.b64decode(chunk["data"], validate=True) == pcm_pattern(expected))
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                bad += 1
                first_bad = expected if first_bad is None else first_bad
            expected += 1
        summary = {"frames": expected, "bad": bad, "first_bad": first_bad}
        self.record(cid, **summary)
        await conn.send(json.dumps(summary))
        await conn.wait_closed()

    # ------------------------------------------------------------ the raw (misbehaving) peer

    async def _raw(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        lines = head.decode().split("\r\n")
        path, q = _query(lines[0].split(" ")[1])
        cid = q.get("id")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
        self.record(cid, request=headers)
        key = headers.get("sec-websocket-key", "").encode()
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        ok = f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        name = path.strip("/")
        try:
            if name == "status403":
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            elif name == "badaccept":
                writer.write(ok.replace(accept, "AAAAAAAAAAAAAAAAAAAAAAAAAAA=").encode())
            elif name == "silent":
                await reader.read()  # never answer; wait for the client to give up
            else:
                writer.write(ok.encode())
                await getattr(self, "_raw_" + name)(reader, writer, q, cid)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.record(cid, done=True)
            writer.close()

    @staticmethod
    def frame(op: int, payload: bytes = b"", fin: bool = True, rsv: int = 0, mask: bytes | None = None) -> bytes:
        n = len(payload)
        head = bytes([(0x80 if fin else 0) | rsv | op])
        mbit = 0x80 if mask else 0
        if n < 126:
            head += bytes([mbit | n])
        elif n < 65536:
            head += bytes([mbit | 126]) + struct.pack(">H", n)
        else:
            head += bytes([mbit | 127]) + struct.pack(">Q", n)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            head += mask
        return head + payload

    @staticmethod
    async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
        """One client frame: (opcode, fin, unmasked payload); the client must mask."""
        b0, b1 = await reader.readexactly(2)
        n = b1 & 127
        if n == 126:
            n = struct.unpack(">H", await reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", await reader.readexactly(8))[0]
        assert b1 & 0x80, "client frame not masked"
        key = await reader.readexactly(4)
        data = await reader.readexactly(n)
        return b0 & 15, bool(b0 & 0x80), bytes(b ^ key[i % 4] for i, b in enumerate(data))

    async def _expect_close(self, reader, cid) -> None:
        # Read client frames until its close frame; record its code and whether it came.
        while True:
            op, _, data = await asyncio.wait_for(self.read_frame(reader), 5)
            if op == 8:
                code = struct.unpack(">H", data[:2])[0] if len(data) >= 2 else None
                self.record(cid, client_close=code, client_close_len=len(data))
                return

    async def _raw_masked(self, reader, writer, q, cid) -> None:
        writer.write(self.frame(1, b"masked!", mask=b"\x01\x02\x03\x04"))
        await self._expect_close(reader, cid)

    async def _raw_rsv(self, reader, writer, q, cid) -> None:
        writer.write(self.frame(1, b"compressed?", rsv=0x40))
        await self._expect_close(reader, cid)

    async def _raw_badop(self, reader, writer, q, cid) -> None:
        writer.write(self.frame(3, b"?"))
        await self._expect_close(reader, cid)

    async def _raw_eof(self, reader, writer, q, cid) -> None:
        writer.write(self.frame(1, b"last words"))
        await writer.drain()

    async def _raw_nocode(self, reader, writer, q, cid) -> None:
        writer.write(self.frame(8))
        await self._expect_close(reader, cid)

    async def _raw_interleave(self, reader, writer, q, cid) -> None:
        # A fragmented message with a ping between its fragments and an empty last fragment,
        # an empty message, and a 64-bit-length message (RFC 6455 allows it for any size).
        writer.write(self.frame(1, b"one,", fin=False) + self.frame(9, b"ping-data")
                     + self.frame(0, b"two,", fin=False) + self.frame(0, b"three", fin=False)
                     + self.frame(0, b"", fin=True) + self.frame(1, b""))
        writer.write(b"\x82\x7f" + struct.pack(">Q", 3) + b"abc")
        op, _, data = await asyncio.wait_for(self.read_frame(reader), 5)
        self.record(cid, pong_op=op, pong=data.decode())
        await self._expect_close(reader, cid)

    async def _raw_split(self, reader, writer, q, cid) -> None:
        # Frames dribbled a few bytes at a time (headers split across TCP segments).
        data = self.frame(1, b"s" * 300) + self.frame(9, b"p") + self.frame(2, bytes(range(200)))
        for i in range(0, len(data), 3):
            writer.write(data[i : i + 3])
            await writer.drain()
            await asyncio.sleep(0.001)
        op, _, payload = await asyncio.wait_for(self.read_frame(reader), 5)
        self.record(cid, pong_op=op, pong=payload.decode())
        await self._expect_close(reader, cid)

    async def _raw_watch(self, reader, writer, q, cid) -> None:
        # Records every client frame; answers nothing (no pong): a dead-but-connected server.
        seen = []
        try:
            while True:
                op, _, data = await self.read_frame(reader)
                seen.append(op if op != 1 else data.decode())
                self.record(cid, seen=list(seen))
                if op == 8:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    # ------------------------------------------------------------ bootstrap stubs

    def _bootstrap(self, method: str, params: dict) -> tuple[dict | None, dict | None]:
        """(result, error) for a request; behaviour chosen by the target's session_id."""
        self.requests.append({"method": method, "params": params})
        target = params.get("target") or {}
        sid = target.get("session_id", "")
        if sid == "missing":
            return None, {"code": -32001, "message": "session not found: missing"}
        if sid == "notrealtime":
            return None, {"code": -32020, "message": "realtime bootstrap eligibility denied: session model 'x' does not support realtime"}
        if sid == "noexplicit" and params.get("turning_mode") == "explicit_commit":
            return None, {"code": -32020, "message": "turning mode 'explicit_commit' is not supported for this realtime target"}
        if sid == "badparams":
            return None, {"code": -32602, "message": "invalid params"}
        if sid == "internal":
            return None, {"code": -32603, "message": "internal error"}
        caps = {"input_kinds": ["text", "audio"], "output_kinds": ["text", "audio"],
                "turning_modes": ["provider_managed", "explicit_commit"], "interrupt_supported": True,
                "transcript_supported": True, "tool_lifecycle_events_supported": True, "video_supported": False,
                "audio_input_format": {"mime_type": "audio/pcm", "sample_rate_hz": 24000, "channels": 1},
                "audio_output_format": {"mime_type": "audio/pcm", "sample_rate_hz": 24000, "channels": 1}}
        if method == "realtime/status":
            return {"status": {"state": "ready"}}, None
        if method == "realtime/capabilities":
            return {"capabilities": caps}, None
        host = {"bind0": "0.0.0.0", "loop": "127.0.0.1", "lan": "192.168.1.50"}.get(sid, "0.0.0.0")
        info = {"ws_url": f"ws://{host}:4900/realtime/ws", "open_token": TOKEN,
                "expires_at": "2026-05-08T13:37:52.123456789+00:00", "target": target,
                "supported_protocol_versions": ["2"], "default_protocol_version": "2", "capabilities": caps}
        if sid == "badinfo":
            del info["ws_url"]
        if sid == "huge":  # a hostile or broken server: far more than any open_info
            info["padding"] = "x" * 20000
        return info, None

    async def _rpc(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            req = json.loads(line)
            sid = ((req.get("params") or {}).get("target") or {}).get("session_id")
            if sid == "slow":
                await reader.read()
                return
            if sid == "hangup":
                return
            if sid == "garbage":
                writer.write(b"this is not json\n")
                await writer.drain()
                return
            # a notification and an answer to another request first: the client must skip them
            writer.write(b'{"jsonrpc":"2.0","method":"session/event","params":{}}\n\n')
            writer.write(b'{"jsonrpc":"2.0","id":99,"result":{}}\n')
            result, error = self._bootstrap(req["method"], req["params"])
            reply = {"jsonrpc": "2.0", "id": req["id"]}
            reply.update({"error": error} if error else {"result": result})
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    _HTTP = {-32001: (404, "SESSION_NOT_FOUND"), -32020: (501, "CAPABILITY_UNAVAILABLE"),
             -32602: (400, "INVALID_PARAMS"), -32603: (500, "INTERNAL_ERROR")}

    async def _rest(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            request_line, *header_lines = head.split("\r\n")
            method, path, _ = request_line.split(" ")
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
            body = await reader.readexactly(int(headers["content-length"]))
            params = json.loads(body)
            sid = (params.get("target") or {}).get("session_id")
            if sid == "slow":
                await reader.read()
                return
            if sid == "hangup":
                return
            if method != "POST" or not path.startswith("/realtime/"):
                status, payload = "404 Not Found", b"no such route"
            else:
                result, error = self._bootstrap(path.lstrip("/"), params)
                if error:
                    code, name = self._HTTP[error["code"]]
                    status = f"{code} Error"
                    payload = json.dumps({"code": name, "category": "x", "message": error["message"]}).encode()
                else:
                    status, payload = "200 OK", json.dumps(result).encode()
            close_delimited = sid == "noclen"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n".encode())
            if not close_delimited:
                writer.write(f"Content-Length: {len(payload)}\r\n".encode())
            writer.write(b"Connection: close\r\n\r\n" + payload)
            await writer.drain()
        except (ConnectionError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port

