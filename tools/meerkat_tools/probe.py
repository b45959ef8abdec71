"""`meerkat-probe`: check a Meerkat server from the host before flashing a board.

    meerkat-probe --rpc 192.168.1.10:9001 --session-id 019e...             # bootstrap + open + close
    meerkat-probe --rpc 192.168.1.10:9001 --session-id 019e... --text "Hello?"
    meerkat-probe --config config.json --wav question.wav                   # what the board would do
    meerkat-probe --rpc 192.168.1.10:9001 --surface v2 --session-id 019e... --role observer --timeout 60
    meerkat-probe --rest http://192.168.1.10:8080 --session-id 019e...      # protocol v2's REST proxy

It does what the device does, with an independent implementation (websocket-client, plain
sockets, its own JSON-RPC and client frames written from the references); only the server's
answers and frames go through the firmware's codecs (meerkat_rt.v2.protocol,
meerkat_rt.live.protocol), so what the probe accepts is what the board will accept.

Two server surfaces (--surface, default auto: `live/open` first, protocol v2 when the server
answers it with -32601 Method not found; the probe says which one it found):

- live (Meerkat 0.6.5 and later): `live/open` (`mob/member_live_open` for a mob member) over
  JSON-RPC (TCP JSON lines), the WebSocket to its transport.url (`/live/ws?token=&channel=
  &format=pcm_24k_mono`), {"observation":"ready"}, then optionally one turn: a text
  ({"kind":"text"} text frame) or a WAV as raw PCM binary frames (40 ms, real time; in
  provider_managed mode 1.5 s of silence after it for the server's VAD; `live/commit_input`
  after it in explicit_commit mode); then `turn_completed` (not a tool_use one: its continuation
  follows), the audio that may trail it (until the server is quiet for 0.5 s), and `live/close`
  (also on the ways out that fail after live/open: a channel whose WebSocket never got in stays
  open on the server, holding the session, until it is closed). The server drops
  the WebSocket without a frame after live/close, and (from Meerkat 0.7.0) also when a terminal
  error ends the channel: the probe says which it was.
- v2 (Meerkat 0.6.0 to 0.6.4): `realtime/open_info` over JSON-RPC or the REST proxy, the
  WebSocket, `channel.open` as its first frame (protocol "2"), then optionally one turn (a text,
  or a WAV in 40 ms frames in real time; `channel.commit_turn` after it in explicit_commit
  mode), `turn_completed` or `interrupted`, and `channel.close`. An observer (v2 only) prints
  what it sees until --timeout.

Every server frame is printed as one line as it arrives (--json: verbatim on stdout, the rest on
stderr). Exit status: 0 ok; 2 usage or input file; 3 bootstrap failed (realtime/open_info or
live/open); 4 the channel did not open (WebSocket refused, token refused, no channel.opened or
ready); 5 the channel failed after opening (an error or a drop that ended it, no reply in time).
The open token is a bearer secret: only its first 8 characters are ever printed, also inside
the live URL that carries it.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import http.client
import json
import select
import socket
import ssl
import sys
import time
import uuid
import wave
from pathlib import Path

import websocket

from . import paths

if str(paths.FIRMWARE) not in sys.path:
    sys.path.insert(0, str(paths.FIRMWARE))

# The firmware's codecs run on CPython; they only parse and validate what the server sends.
from meerkat_rt.live import protocol as live  # noqa: E402
from meerkat_rt.rpc import RpcError  # noqa: E402
from meerkat_rt.shapes import ProtocolError, loads  # noqa: E402
from meerkat_rt.v2 import protocol as v2  # noqa: E402

EXIT_OK, EXIT_USAGE, EXIT_BOOTSTRAP, EXIT_OPEN, EXIT_CHANNEL = 0, 2, 3, 4, 5
SURFACES = ("auto", "live", "v2")
ROLES = ("primary", "observer")
TURNING_MODES = ("provider_managed", "explicit_commit")
FRAME_MS = 40
RATE = 24000  # both surfaces: PCM16 little-endian, 24 kHz, mono
BYTES_PER_MS = RATE * 2 // 1000
TAIL_SILENCE_MS = 1500  # provider_managed: silence after the WAV, for the server's VAD to commit
CLOSE_WAIT_S = 5.0
# live: turn_completed travels on the reliable lane and can overtake its response's audio, which
# live/close would discard: read on until the server has been quiet this long (capped).
DRAIN_IDLE_S = 0.5
DRAIN_MAX_S = 5.0
_LOOPBACK = ("0.0.0.0", "127.0.0.1", "localhost", "::", "::1")

# JSON-RPC error codes the hints look at (meerkat-contracts' error numbers).
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
SESSION_NOT_FOUND = -32001
CAPABILITY_UNAVAILABLE = -32020


class ProbeError(Exception):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class NoSuchMethod(Exception):
    """The server answered -32601: it does not serve this surface."""

    def __init__(self, method: str, message: str):
        super().__init__(message)
        self.method = method
        self.message = message


# -- output ------------------------------------------------------------------------------------


class Console:
    """Where lines go (stdout, or stderr with --json) and the one secret that must never appear
    whole: the open token, shown by its first 8 characters."""

    def __init__(self, as_json: bool):
        self.json = as_json
        self.out = sys.stderr if as_json else sys.stdout
        self.t0 = time.monotonic()
        self.secrets: list[str] = []

    def secret(self, token: str) -> None:
        if token and token not in self.secrets:
            self.secrets.append(token)

    def scrub(self, text: str) -> str:
        for token in self.secrets:
            text = text.replace(token, shown_token(token))
        return text

    def line(self, text: str) -> None:
        print(self.scrub(text), file=self.out, flush=True)

    def say(self, text: str) -> None:
        """A line of the channel's life, with the time since the WebSocket was opened."""
        self.line(f"[{time.monotonic() - self.t0:7.3f}] {text}")

    def frame(self, text: str) -> None:
        """--json: a server frame, verbatim."""
        print(text, flush=True)


def shown_token(token: str) -> str:
    return f"{token[:8]}…"


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _yn(v) -> str:
    return "?" if v is None else "yes" if v else "no"


# -- JSON-RPC over TCP JSON lines (plain sockets) ------------------------------------------------


def _hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(value)
    return host.strip("[]"), int(port)


def _is_loopback(host: str) -> bool:
    return host in _LOOPBACK or host.startswith("127.")


class Rpc:
    """JSON-RPC 2.0 as JSON lines over one TCP connection (rkat-rpc --tcp), one call at a time.
    Answers are matched by id; server notifications are skipped; an error answered with
    "id": null (the live handlers do that for bad params) is the answer to the call waiting."""

    def __init__(self, host: str, port: int):
        self.host = host
        self.port = port
        self.sock: socket.socket | None = None
        self.reader = None
        self.next_id = 1

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = self.reader = None

    def call(self, method: str, params: dict, timeout: float) -> dict:
        """The result; RpcError for an error answer, ProtocolError for an answer that is not
        JSON-RPC, OSError (socket.timeout included) for the network."""
        if self.sock is None:
            self.sock = socket.create_connection((self.host, self.port), timeout=timeout)
            self.reader = self.sock.makefile("rb")
        rid = self.next_id
        self.next_id += 1
        request = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}
        try:
            self.sock.settimeout(timeout)
            self.sock.sendall(json.dumps(request, separators=(",", ":")).encode() + b"\n")
            return self._answer(rid)
        except BaseException:
            self.close()  # a timed-out or broken connection is not reused
            raise

    def _answer(self, rid: int) -> dict:
        assert self.reader is not None
        while True:
            line = self.reader.readline(1 << 20)
            if not line:
                raise ProtocolError("it closed the connection without answering")
            if not line.strip():
                continue
            try:
                msg = loads(line, "JSON-RPC answer")
                if type(msg) is not dict:
                    raise ProtocolError("JSON-RPC answer is not an object")
            except ProtocolError as e:
                shown = line[:40].decode("utf-8", "replace").strip()
                raise ProtocolError(f"{e.reason} (it sent '{shown}')") from None
            if "method" in msg and "id" not in msg:
                continue  # a notification
            if msg.get("id") != rid and not (msg.get("id") is None and "error" in msg):
                continue  # not ours
            err = msg.get("error")
            if err is not None:
                if type(err) is not dict or type(err.get("code")) is not int:
                    raise ProtocolError("malformed JSON-RPC error")
                raise RpcError(err["code"], str(err.get("message", "")), err.get("data"))
            if "result" not in msg:
                raise ProtocolError("JSON-RPC answer has neither result nor error")
            result = msg["result"]
            if type(result) is not dict:
                raise ProtocolError("JSON-RPC result is not an object")
            return result


def _rest_parts(url: str) -> tuple[str, int, str]:
    """http://host[:port][/prefix] -> (host, port, prefix without slashes)."""
    hostport, _, prefix = url[len("http://") :].partition("/")
    host, colon, port = hostport.rpartition(":")
    if not colon or hostport.endswith("]"):
        host, port = hostport, "80"
    if not host or not port.isdigit():
        raise ValueError(url)
    return host.strip("[]"), int(port), prefix.strip("/")


def _rest_call(url: str, method: str, params: dict, timeout: float) -> dict:
    host, port, prefix = _rest_parts(url)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        path = "/" + "/".join(p for p in (prefix, method) if p)
        conn.request("POST", path, body=json.dumps(params), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if 200 <= resp.status < 300:
        return loads(body, "bootstrap response")
    err = v2.parse_wire_error(body)
    if err is not None:
        raise RpcError(err[0], err[1])  # WireError codes are names: SESSION_NOT_FOUND, ...
    raise ProtocolError(f"HTTP {resp.status} {resp.reason} without a Meerkat error body")


# -- bootstrap (both surfaces) ------------------------------------------------------------------


def _reach_hint(kind: str, where: str, host: str) -> str:
    if kind == "rest":
        return f"is rkat-rest running at {where} (started with --realtime-rpc-tcp pointing at rkat-rpc)?"
    remote = "" if _is_loopback(host) else " --allow-remote"
    return f"is rkat-rpc running with --tcp {where}{remote} (and --live-ws, or --realtime-ws before 0.6.5)?"


def _bootstrap_hint(err: RpcError, args: argparse.Namespace) -> str:
    msg = err.message
    low = msg.lower()
    if err.code in (SESSION_NOT_FOUND, "SESSION_NOT_FOUND") or (err.code == INVALID_PARAMS and "session" in low and "not found" in low):
        return (
            "sessions live in the rkat-rpc process that created them: pass the id of a live session "
            "in that process with --session-id"
        )
    if "invalid session_id" in low or (err.code in (INVALID_PARAMS, "INVALID_PARAMS") and args.session_id and not _is_uuid(args.session_id)):
        return "a session id is a UUID (019e...-...): check --session-id"
    if "already has an active live channel" in low:
        return (
            "one live channel per session: another client (a board?) holds it, or a channel whose token was "
            "never used or was refused is still open: close it with live/close, or restart rkat-rpc"
        )
    if "does not support realtime" in low:
        return "the session's model must support realtime (gpt-realtime-2; gpt-realtime-1.5 for protocol v2)"
    if "live transport" in low and "not configured" in low:
        return "start rkat-rpc with --live-ws ADDR (the live WebSocket listener)"
    if "failed to open provider session" in low:
        return "the server could not open its OpenAI realtime session: check its OpenAI credentials and its log"
    if "mob" in low and ("not found" in low or "has no member" in low):
        return "check --mob-id and --agent-identity"
    if err.code in (CAPABILITY_UNAVAILABLE, "CAPABILITY_UNAVAILABLE"):
        if "turning mode" in msg:
            other = "provider_managed" if args.turning_mode == "explicit_commit" else "explicit_commit"
            return f"this target does not offer turning mode {args.turning_mode}: try --turning-mode {other}"
        if "websocket host" in msg:
            return "start rkat-rpc with --realtime-ws ADDR (the realtime WebSocket listener)"
        if err.code == "CAPABILITY_UNAVAILABLE" and "rpc" in low:  # rkat-rest without rkat-rpc
            return "start rkat-rest with --realtime-rpc-tcp pointing at rkat-rpc's --tcp address"
        return "the session's model must support realtime (e.g. gpt-realtime-1.5)"
    if err.code == "PROVIDER_ERROR":
        return "rkat-rest cannot reach rkat-rpc: check its --realtime-rpc-tcp address"
    if err.code in (INVALID_PARAMS, "INVALID_PARAMS"):
        return "check the target (--session-id, or --mob-id with --agent-identity)"
    return "see the server's log"


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def bootstrap_call(args: argparse.Namespace, rpc: Rpc | None, method: str, params: dict) -> dict:
    """One bootstrap request (realtime/open_info or live/open) over JSON-RPC, or the REST proxy
    when rpc is None; every failure becomes a ProbeError with a hint, -32601 a NoSuchMethod."""
    timeout = args.open_timeout
    if rpc is not None:
        kind, where, host = "rpc", args.rpc, rpc.host
    else:
        kind, where = "rest", args.rest
        host = _rest_parts(args.rest)[0]
    try:
        if rpc is not None:
            return rpc.call(method, params, timeout)
        return _rest_call(args.rest, method, params, timeout)
    except (socket.timeout, TimeoutError):
        extra = " (a WebSocket port, --live-ws or --realtime-ws, does not answer JSON-RPC)" if kind == "rpc" else ""
        slow = ""
        if method != "realtime/open_info":
            # live/open connects and seeds the provider session before it answers.
            slow = (f"; {method} opens the provider session before answering, which can take seconds: try a longer "
                    "--open-timeout (a late answer leaves a channel holding the session until live/close)")
        raise ProbeError(
            f"no answer to {method} from {where} within {timeout:g} s: is it the right port{extra}{slow}?", EXIT_BOOTSTRAP
        ) from None
    except socket.gaierror as e:
        raise ProbeError(f"cannot resolve {host}: {e.strerror}: check the host name or use its IP address", EXIT_BOOTSTRAP) from None
    except OSError as e:
        reason = e.strerror or str(e) or type(e).__name__
        raise ProbeError(f"cannot reach {where}: {reason}: {_reach_hint(kind, where, host)}", EXIT_BOOTSTRAP) from None
    except RpcError as e:
        if e.code == METHOD_NOT_FOUND:
            raise NoSuchMethod(method, e.message) from None
        raise ProbeError(f"{method} refused by {where}: {e.message} ({e.code}): {_bootstrap_hint(e, args)}", EXIT_BOOTSTRAP) from None
    except (ProtocolError, http.client.HTTPException) as e:
        what = "the rkat-rpc --tcp port (not --live-ws or --realtime-ws)" if kind == "rpc" else "the rkat-rest URL"
        reason = getattr(e, "reason", None) or str(e) or type(e).__name__
        raise ProbeError(f"{where} did not answer like Meerkat ({reason}): is it {what}?", EXIT_BOOTSTRAP) from None


def rewrite_ws_host(url: str, reached: str) -> str:
    """The server builds its WebSocket URL from its bind address (0.0.0.0, 127.0.0.1): use the
    host we reached it on instead, as the device does."""
    scheme, sep, rest = url.partition("://")
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    hostport, tail = rest[:end], rest[end:]
    host, colon, port = hostport.rpartition(":") if not hostport.endswith("]") else (hostport, "", "")
    if host.strip("[]") not in _LOOPBACK or host.strip("[]") == reached:
        return url
    shown = f"[{reached}]" if ":" in reached else reached
    return f"{scheme}{sep}{shown}{colon}{port}{tail}"


def _target(args: argparse.Namespace) -> dict:
    if args.session_id:
        return {"type": "session_target", "session_id": args.session_id}
    return {"type": "mob_member", "mob_id": args.mob_id, "agent_identity": args.agent_identity}


def _who(target: dict) -> str:
    return target.get("session_id") or f"{target.get('mob_id')}/{target.get('agent_identity')}"


# -- the WebSocket -------------------------------------------------------------------------------


class Lost(Exception):
    """The WebSocket ended: the server's Close frame (code, reason) or a drop (code None)."""

    def __init__(self, message: str, code: int | None = None, reason: str = ""):
        super().__init__(message)
        self.code = code
        self.reason = reason


def connect_ws(url: str, console: Console, args: argparse.Namespace, listener: str) -> websocket.WebSocket:
    """The upgrade; ProbeError (channel did not open) with a hint when it fails. listener names
    the server option and path, e.g. "--live-ws listener (path /live/ws)"."""
    shown = console.scrub(url)
    try:
        return websocket.create_connection(url, timeout=args.open_timeout, enable_multithread=False)
    except websocket.WebSocketBadStatusException as e:
        hint = f"is it the server's {listener}?"
        if e.status_code == 503:
            hint = "the server refuses more WebSockets (a live server takes 32 at most): close some"
        elif e.status_code == 400:
            hint = f"the server refused the request itself: is it the {listener}?"
        raise ProbeError(f"{shown} refused the WebSocket upgrade (HTTP {e.status_code}): {hint}", EXIT_OPEN) from None
    except (socket.timeout, websocket.WebSocketTimeoutException):
        raise ProbeError(f"no WebSocket answer from {shown} within {args.open_timeout:g} s", EXIT_OPEN) from None
    except (OSError, websocket.WebSocketException) as e:
        reason = console.scrub(getattr(e, "strerror", None) or str(e) or type(e).__name__)
        raise ProbeError(
            f"cannot open {shown}: {reason}: is the {listener} reachable from here "
            "(bound to a LAN address, with --allow-remote)?",
            EXIT_OPEN,
        ) from None


class Wire:
    """The WebSocket after the upgrade: text frames in with a deadline, frames out. The
    server's Close frame and a dropped connection raise Lost."""

    def __init__(self, ws: websocket.WebSocket, console: Console, args: argparse.Namespace):
        self.ws = ws
        self.console = console
        self.args = args

    def send(self, data: str | bytes) -> None:
        try:
            if isinstance(data, bytes):
                self.ws.send_binary(data)
            else:
                self.ws.send(data)
        except (OSError, websocket.WebSocketException) as e:
            raise Lost(f"sending failed ({e or type(e).__name__})") from None

    def _readable(self, timeout: float) -> bool:
        sock = self.ws.sock
        if sock is None:
            raise Lost("the connection is closed")
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        ready, _, _ = select.select([sock], [], [], max(0.0, timeout))
        return bool(ready)

    def recv(self, timeout: float) -> str | None:
        """One text frame within timeout, else None (binary frames are reported and skipped)."""
        if not self._readable(timeout):
            return None
        try:
            self.ws.settimeout(max(1.0, self.args.open_timeout))
            opcode, data = self.ws.recv_data()
        except websocket.WebSocketTimeoutException:
            return None
        except (OSError, websocket.WebSocketException) as e:
            raise Lost(f"connection lost ({e or type(e).__name__})") from None
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
            why = data[2:].decode("utf-8", "replace")
            raise Lost(f"the server closed the WebSocket ({code or 'no code'}{' ' + why if why else ''})", code, why)
        if opcode != websocket.ABNF.OPCODE_TEXT:
            self.console.say(f"unexpected {len(data)}-byte binary message (the server sends text only)")
            return None
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else data

    def close(self) -> None:
        try:
            self.ws.close(timeout=0.2)
        except (OSError, websocket.WebSocketException):
            pass


class Reply:
    """What came back for the turn: audio per item, text, timings."""

    def __init__(self) -> None:
        self.audio: dict[str, int] = {}  # item -> bytes of PCM
        self.chunks = 0
        self.pcm = bytearray()
        self.text = ""
        self.first_audio: float | None = None

    def add_audio(self, item: str, pcm: bytes, now: float) -> int:
        self.audio[item] = self.audio.get(item, 0) + len(pcm)
        self.chunks += 1
        self.pcm += pcm
        if self.first_audio is None:
            self.first_audio = now
        return self.audio[item]

    def summary(self, input_done: float) -> str:
        s = f"reply: {len(self.pcm) // BYTES_PER_MS} ms of audio in {self.chunks} chunks"
        if self.first_audio is not None:
            s += f", first audio {1000 * (self.first_audio - input_done):.0f} ms after the input ended"
        if self.text:
            s += f", text {_q(self.text)}"
        return s


def _decode_pcm(data: str) -> bytes | None:
    try:
        return base64.b64decode(data, validate=True)
    except (ValueError, binascii.Error):
        return None


def read_wav(path: Path) -> bytes:
    """The PCM of a 24 kHz mono 16-bit WAV file; ProbeError otherwise."""
    try:
        with wave.open(str(path), "rb") as w:
            rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            if (rate, channels, width) != (RATE, 1, 2):
                raise ProbeError(
                    f"{path} is {rate} Hz, {channels} channel(s), {8 * width}-bit; the probe sends what the "
                    f"server accepts, 24 kHz mono 16-bit PCM: convert it, e.g. "
                    f"ffmpeg -i {path} -ar 24000 -ac 1 -sample_fmt s16 out.wav",
                    EXIT_USAGE,
                )
            return w.readframes(w.getnframes())
    except FileNotFoundError:
        raise ProbeError(f"{path}: no such file", EXIT_USAGE) from None
    except (wave.Error, EOFError) as e:
        raise ProbeError(f"{path} is not a PCM WAV file ({e})", EXIT_USAGE) from None


def save_wav(path: Path, pcm: bytes) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm)


def stream_pcm(ch, pcm: bytes, speed: float, send, stop=lambda: False, speech: int | None = None) -> tuple[int, float]:
    """Send pcm in FRAME_MS frames paced at speed x real time, reading frames in between, until
    it is all sent, the channel ended or stop() is true. Returns the bytes sent and when the
    first `speech` bytes (default all: what follows is silence) had gone out."""
    step = FRAME_MS * BYTES_PER_MS
    speech = len(pcm) if speech is None else speech
    start = time.monotonic()
    sent = 0
    speech_done = start
    while sent < len(pcm):
        if ch.ended or stop():
            break
        due = start + (sent // step) * FRAME_MS / 1000 / speed
        now = time.monotonic()
        if now < due:
            ch.poll(due - now)
            continue
        send(pcm[sent : sent + step])
        sent += step
        if sent - step < speech:
            speech_done = time.monotonic()
    return min(sent, len(pcm)), speech_done


# -- protocol v2 (Meerkat 0.6.0 to 0.6.4) --------------------------------------------------------


def v2_open_params(args: argparse.Namespace) -> dict:
    """RealtimeOpenRequest (meerkat-realtime-v2.md 1.2)."""
    params: dict = {"target": _target(args), "role": args.role, "turning_mode": args.turning_mode}
    if args.reconnect_policy is not None:
        params["reconnect_policy"] = args.reconnect_policy
    if args.channel_config is not None:
        params["channel_config"] = args.channel_config
    return params


def _v2_frame(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def v2_open_frame(token: str, role: str, turning_mode: str) -> str:
    return _v2_frame({"type": "channel.open", "protocol_version": "2", "open_token": token, "role": role, "turning_mode": turning_mode})


def v2_text_frame(text: str) -> str:
    return _v2_frame({"type": "channel.input", "chunk": {"kind": "text_chunk", "text": text}})


def v2_audio_frame(pcm: bytes) -> str:
    chunk = {"kind": "audio_chunk", "mime_type": "audio/pcm", "sample_rate_hz": RATE, "channels": 1,
             "data": base64.b64encode(pcm).decode("ascii")}
    return _v2_frame({"type": "channel.input", "chunk": chunk})


V2_COMMIT_FRAME = '{"type":"channel.commit_turn"}'
V2_CLOSE_FRAME = '{"type":"channel.close"}'


def describe_capabilities(caps: dict) -> str:
    """v2 RealtimeCapabilities."""
    parts = [
        "input " + (",".join(caps.get("input_kinds", [])) or "-"),
        "output " + (",".join(caps.get("output_kinds", [])) or "-"),
        "turning " + (",".join(caps.get("turning_modes", [])) or "-"),
        f"interrupt {_yn(caps.get('interrupt_supported'))}",
        f"transcript {_yn(caps.get('transcript_supported'))}",
        f"tool events {_yn(caps.get('tool_lifecycle_events_supported'))}",
        f"video {_yn(caps.get('video_supported'))}",
        f"audio in {v2.describe_format(caps.get('audio_input_format'))}",
        f"audio out {v2.describe_format(caps.get('audio_output_format'))}",
    ]
    return "; ".join(parts)


def describe_status(st: dict) -> str:
    s = f"{st.get('state')} (attempt {st.get('attempt_count', 0)})"
    for key in ("reason", "next_retry_at", "deadline_at"):
        if key in st:
            s += f" {key}={_q(st[key]) if key == 'reason' else st[key]}"
    return s


def describe_event(ev: dict, reply: Reply, now: float) -> str:
    kind = ev.get("type", "?")
    if kind in ("input_transcript_partial", "input_transcript_final"):
        return f"{kind} {_q(ev.get('text', ''))}"
    if kind == "output_text_delta":
        reply.text += ev.get("delta", "")
        return f"{kind} {_q(ev.get('delta', ''))}"
    if kind == "output_audio_chunk":
        chunk = ev.get("chunk", {})
        pcm = _decode_pcm(chunk.get("data", ""))
        if pcm is None:
            return f"{kind} with data that is not base64 ({len(chunk.get('data', ''))} characters)"
        item = ev.get("item_id", "(no item_id)")
        if not v2.format_matches(chunk):
            return f"{kind} {item}: unexpected format {v2.describe_format(chunk)}, {len(pcm)} bytes"
        total = reply.add_audio(item, pcm, now)
        return f"{kind} {item} {len(pcm) // BYTES_PER_MS} ms (item total {total // BYTES_PER_MS} ms)"
    if kind == "status_changed":
        return f"{kind} {describe_status(ev.get('status', {}))}"
    rest = " ".join(f"{k}={_q(v) if isinstance(v, str) else v}" for k, v in ev.items() if k != "type")
    return f"{kind} {rest}".rstrip()


OPEN_HINTS = {
    "invalid_open_token": "tokens are single-use and live in the server process that minted them: "
    "does ws_url lead to the same rkat-rpc as the bootstrap?",
    "open_token_expired": "the token lives 60 s: the open came too late after the bootstrap",
    "target_busy": "another primary channel (a board?) is open on this session: close it, or probe with --role observer",
    "unauthorized_realm": "the token was minted in another realm",
    "unsupported_turning_mode": "try the other --turning-mode",
    "role_mismatch": "the open frame disagreed with the token (a client bug)",
    "turning_mode_mismatch": "the open frame disagreed with the token (a client bug)",
}


class V2Channel:
    """A protocol v2 channel: frames in (parsed by the firmware's codec, printed), frames out."""

    def __init__(self, wire: Wire, url: str, console: Console, args: argparse.Namespace):
        self.wire = wire
        self.url = url
        self.console = console
        self.args = args
        self.reply = Reply()
        self.seen: list[str] = []  # event types, in order
        self.errors: list[dict] = []
        self.closed_reason: str | None = None
        self.opened: dict | None = None

    @property
    def ended(self) -> bool:
        return self.closed_reason is not None

    def send(self, text: str, show: str | None = None) -> None:
        self.wire.send(text)
        if show:
            self.console.say(show)

    def poll(self, timeout: float) -> None:
        """Wait up to timeout for one server frame and handle it; Lost when the socket ends."""
        text = self.wire.recv(timeout)
        if text is None:
            return
        if self.args.json:
            self.console.frame(text)
        try:
            frame = v2.parse_server_frame(text)
        except ProtocolError as e:
            self.console.say(f"invalid frame from the server: {e.reason}: {text[:120]}")
            return
        self._handle(frame)

    def _handle(self, frame: dict) -> None:
        kind = frame["type"]
        if kind == "channel.event":
            ev = frame["event"]
            self.seen.append(ev["type"])
            line = describe_event(ev, self.reply, time.monotonic())
        elif kind == "channel.opened":
            self.opened = frame
            line = f"channel.opened role {frame['role']}, protocol {frame['protocol_version']}, status {describe_status(frame['status'])}"
        elif kind == "channel.status":
            line = f"channel.status {describe_status(frame['status'])}"
        elif kind == "channel.error":
            self.errors.append(frame)
            details = f" details={json.dumps(frame['details'])}" if "details" in frame else ""
            line = f"channel.error {frame['code']}: {frame['message']}{details}"
        else:  # channel.closed
            self.closed_reason = frame.get("reason", "(no reason)")
            line = f"channel.closed {self.closed_reason}"
        if not self.args.json:
            self.console.say(line)
        if kind == "channel.opened":
            self.console.say("capabilities: " + describe_capabilities(frame["capabilities"]))

    def wait(self, until, deadline: float) -> bool:
        """Poll frames until until() is true (True) or the deadline passes (False)."""
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.poll(left)
        return True

    def describe_end(self) -> str:
        if self.errors:
            e = self.errors[-1]
            return f"{e['code']}: {e['message']} (channel.closed {self.closed_reason})"
        return f"channel.closed {self.closed_reason}"

    def close(self) -> int:
        """channel.close, then wait for channel.closed (the server drops the socket after it)."""
        if self.closed_reason is not None:
            raise ProbeError(f"the server ended the channel: {self.describe_end()}", EXIT_CHANNEL)
        self.send(V2_CLOSE_FRAME, "channel.close sent")
        try:
            if not self.wait(lambda: self.closed_reason is not None, time.monotonic() + CLOSE_WAIT_S):
                self.console.say(f"note: no channel.closed within {CLOSE_WAIT_S:g} s of channel.close")
        except Lost as e:
            self.console.say(f"note: {e}, without channel.closed")
        if self.closed_reason not in (None, "client_closed"):
            raise ProbeError(f"channel.close answered with {self.describe_end()}", EXIT_CHANNEL)
        return EXIT_OK


def probe_v2(args: argparse.Namespace, console: Console, pcm: bytes | None, rpc: Rpc | None, fell_back: bool) -> int:
    params = v2_open_params(args)
    via = f"rpc {args.rpc}" if rpc is not None else f"rest {args.rest}"
    target = params["target"]
    console.line(f"bootstrap: realtime/open_info via {via} for {target['type']} {_who(target)} ({args.role}, {args.turning_mode})")
    try:
        info = bootstrap_call(args, rpc, "realtime/open_info", params)
        v2.check_open_info(info)
    except NoSuchMethod as e:
        where = args.rpc or args.rest
        if fell_back:
            raise ProbeError(
                f"{where} answers neither live/open nor realtime/open_info ({e.message}, -32601): start rkat-rpc "
                "with --live-ws ADDR (Meerkat 0.6.5 and later) or --realtime-ws ADDR (0.6.0 to 0.6.4)",
                EXIT_BOOTSTRAP,
            ) from None
        raise ProbeError(
            f"{where} has no realtime/open_info ({e.message}, -32601): it does not speak protocol v2; "
            "Meerkat 0.6.5 and later speak the live surface: use --surface live (or auto)",
            EXIT_BOOTSTRAP,
        ) from None
    except ProtocolError as e:
        raise ProbeError(f"{args.rpc or args.rest} did not answer like Meerkat's realtime/open_info ({e.reason})", EXIT_BOOTSTRAP) from None
    reached = rpc.host if rpc is not None else _rest_parts(args.rest)[0]
    if rpc is not None:
        rpc.close()  # protocol v2 needs no more JSON-RPC
    token = info["open_token"]
    console.secret(token)
    ws_url = rewrite_ws_host(info["ws_url"], reached)
    versions = ",".join(info.get("supported_protocol_versions", [])) or "?"
    console.line(
        f"open_info: ws_url {info['ws_url']}, token {shown_token(token)}, expires {info['expires_at']}, "
        f"protocol {versions} (default {info['default_protocol_version']})"
    )
    console.line("surface: v2 (protocol 2: Meerkat 0.6.0 to 0.6.4" + ("; live/open is not served" if fell_back else "") + ")")
    if ws_url != info["ws_url"]:
        console.line(f"open_info: ws_url names the server's bind address; using {ws_url}")
    if v2.PROTOCOL_VERSION not in info.get("supported_protocol_versions", [v2.PROTOCOL_VERSION]):
        raise ProbeError(f"the server does not offer protocol {v2.PROTOCOL_VERSION} (it offers {versions})", EXIT_OPEN)

    console.t0 = time.monotonic()
    ws = connect_ws(ws_url, console, args, "--realtime-ws listener (path /realtime/ws)")
    wire = Wire(ws, console, args)
    ch = V2Channel(wire, ws_url, console, args)
    try:
        return run_v2(ch, token, pcm, info)
    except Lost as e:
        raise ProbeError(str(e), EXIT_OPEN if ch.opened is None else EXIT_CHANNEL) from None
    finally:
        wire.close()


def run_v2(ch: V2Channel, token: str, pcm: bytes | None, info: dict) -> int:
    args, console = ch.args, ch.console
    ch.send(v2_open_frame(token, args.role, args.turning_mode), f"channel.open sent (protocol {v2.PROTOCOL_VERSION})")
    deadline = time.monotonic() + args.open_timeout
    try:
        ch.wait(lambda: ch.opened is not None or ch.closed_reason is not None, deadline)
    except Lost as e:
        if not ch.errors:
            raise
        console.say(str(e))
    if ch.opened is None:
        if ch.errors:
            err = ch.errors[0]
            hint = OPEN_HINTS.get(err["code"], "see the server's log")
            raise ProbeError(f"channel.open refused: {err['code']}: {err['message']}: {hint}", EXIT_OPEN)
        raise ProbeError(
            f"no channel.opened within {args.open_timeout:g} s of channel.open: is {ch.url} a Meerkat realtime host?",
            EXIT_OPEN,
        )
    if ch.opened["capabilities"] != info["capabilities"]:
        console.say("note: the capabilities differ from open_info's")
    explicit = args.turning_mode == "explicit_commit"

    if args.text is None and pcm is None:
        if args.role == "observer":
            console.say(f"observing for {args.timeout:g} s")
            ch.wait(lambda: ch.closed_reason is not None, time.monotonic() + args.timeout)
        return ch.close()

    if pcm is not None:
        # In provider_managed mode stop at turn_committed: any input after the reply starts
        # would cancel it (v2 preempts on input); silence after the WAV lets the VAD commit.
        what = f"{len(pcm) / BYTES_PER_MS / 1000:.2f} s of audio"
        if not explicit:
            pcm = pcm + bytes(TAIL_SILENCE_MS * BYTES_PER_MS)
            what += f" then up to {TAIL_SILENCE_MS} ms of silence"
        console.say(f"sending {what} in {FRAME_MS} ms frames ({args.speed:g}x real time)")
        committed = (lambda: "turn_committed" in ch.seen) if not explicit else (lambda: False)
        sent, _ = stream_pcm(ch, pcm, args.speed, lambda frame: ch.send(v2_audio_frame(frame)), committed)
        if committed() and sent < len(pcm):
            console.say(f"stopped sending at turn_committed ({sent // BYTES_PER_MS} ms sent)")
        elif not ch.ended:
            console.say(f"sent {sent // BYTES_PER_MS} ms of audio")
    else:
        text = str(args.text)
        ch.send(v2_text_frame(text), f"text sent: {_q(text)}")
    if explicit and ch.closed_reason is None:
        ch.send(V2_COMMIT_FRAME, "channel.commit_turn sent")
    input_done = time.monotonic()
    done = ch.wait(
        lambda: ch.closed_reason is not None or "turn_completed" in ch.seen or "interrupted" in ch.seen,
        input_done + args.timeout,
    )
    if ch.closed_reason is not None:
        raise ProbeError(f"the server ended the channel: {ch.describe_end()}", EXIT_CHANNEL)
    status = ch.close()
    console.line(ch.reply.summary(input_done))
    if args.save_reply:
        save_wav(args.save_reply, bytes(ch.reply.pcm))
        console.line(f"reply audio written to {args.save_reply}")
    if not done:
        raise ProbeError(f"no turn_completed (or interrupted) within {args.timeout:g} s of the input: is the agent working?", EXIT_CHANNEL)
    if "interrupted" in ch.seen and "turn_completed" not in ch.seen:
        console.say("note: the reply was interrupted, not completed")
    return status


# -- the live surface (Meerkat 0.6.5 and later) ---------------------------------------------------


def live_open_request(args: argparse.Namespace) -> tuple[str, dict]:
    """live/open (meerkat-live.md 2.3) or mob/member_live_open, WebSocket transport."""
    if args.session_id:
        return "live/open", {"session_id": args.session_id, "turning_mode": args.turning_mode, "transport": "websocket"}
    return "mob/member_live_open", {
        "mob_id": args.mob_id,
        "agent_identity": args.agent_identity,
        "turning_mode": args.turning_mode,
        "transport": "websocket",
    }


def live_channel_request(args: argparse.Namespace, channel_id: str, verb: str) -> tuple[str, dict]:
    """A channel verb (close, commit_input, status) for a session or a mob member (5.1, 2.3)."""
    if args.session_id:
        return "live/" + verb, {"channel_id": channel_id}
    member = {"mob_id": args.mob_id, "agent_identity": args.agent_identity, "channel_id": channel_id}
    if verb in ("close", "status"):
        return "mob/member_live_" + verb, member
    return "mob/member_live_control", dict(member, verb={"verb": verb})


LIVE_CAPABILITIES = (
    ("audio_in", "audio in"),
    ("audio_out", "audio out"),
    ("text_in", "text in"),
    ("text_out", "text out"),
    ("image_in", "image in"),
    ("video_in", "video in"),
    ("transcript_supported", "transcript"),
    ("barge_in_supported", "barge-in"),
    ("provider_native_resume", "provider resume"),
)

# The reasons of {"error":"invalid_token","reason":...} (meerkat-live.md 2.6).
TOKEN_HINTS = {
    "token expired": "the token lives 60 s from live/open: the WebSocket came too late",
    "token already consumed": "tokens are single use: something else (another client with this URL?) used it first",
    "token bound to a different channel": "the URL's channel does not match the token's (an edited URL?)",
    "token not found": "tokens live in the rkat-rpc process that minted them: does transport.url lead to the same "
    "process as --rpc?",
    "channel not bound": "the channel is closed or never existed (closed by live/close, or the server restarted)",
}

DROP_EXPLAINED = (
    "the server dropped the WebSocket without a reason: since Meerkat 0.7.0 that is how a terminal error ends "
    "a live channel (the provider session failed, a refused live/commit_input or live/truncate, a frame it "
    "would not take); the server's log says which"
)


def describe_observation(ob: dict, reply: Reply, now: float) -> str:
    name = ob["observation"]
    item = ob.get("provider_item_id", "-")
    if name == "status_changed":
        st = ob["status"]
        rest = {k: v for k, v in st.items() if k != "status"}
        return f"status_changed {st['status']}" + (f" {json.dumps(rest)}" if rest else "")
    if name == "user_transcript_final":
        return f"user_transcript_final {item} {_q(ob['text'])}"
    if name in ("assistant_transcript_delta", "assistant_text_delta"):
        reply.text += ob["delta"]
        return f"{name} {item} {_q(ob['delta'])}"
    if name == "assistant_transcript_final":
        return f"{name} {item} {_q(ob['text'])}"
    if name == "assistant_audio_chunk":
        pcm = _decode_pcm(ob["data"])
        if pcm is None:
            return f"{name} with data that is not base64 ({len(ob['data'])} characters)"
        audio_item = ob.get("item_id", "(no item_id)")
        if ob["sample_rate_hz"] != RATE or ob["channels"] != 1:
            return f"{name} {audio_item}: unexpected format {ob['sample_rate_hz']} Hz / {ob['channels']} ch, {len(pcm)} bytes"
        total = reply.add_audio(audio_item, pcm, now)
        return f"{name} {audio_item} {len(pcm) // BYTES_PER_MS} ms (item total {total // BYTES_PER_MS} ms)"
    if name == "turn_completed":
        line = f"turn_completed {ob.get('response_id', '-')} {ob.get('stop_reason', '(no stop_reason)')}"
        usage = ob.get("usage")
        if isinstance(usage, dict) and "input_tokens" in usage:
            line += f" (tokens in {usage.get('input_tokens')}, out {usage.get('output_tokens')})"
        return line
    if name == "turn_interrupted":
        return f"turn_interrupted {ob.get('response_id', '-')}"
    if name == "assistant_transcript_truncated":
        return f"{name} {item}" + (f" {_q(ob['text'])}" if "text" in ob else "")
    if name == "tool_call_requested":
        return f"tool_call_requested {ob['tool_name']} {json.dumps(ob.get('arguments'))} ({ob['provider_call_id']})"
    if name == "realtime_transcript":
        ev = ob["event"]
        line = f"realtime_transcript {ev['type']} {ev.get('item_id')}"
        if ev.get("role") is not None:
            line += f" role {ev['role']}"
        if ev.get("response_id") is not None:
            line += f" response {ev['response_id']}"
        return line
    if name in ("command_rejected", "error"):
        return f"{name} {live.code_of(ob)}: {ob.get('message', '')}"
    if name == "ready":
        return "ready"
    rest = " ".join(f"{k}={_q(v) if isinstance(v, str) else json.dumps(v)}" for k, v in ob.items() if k != "observation")
    return f"{name} {rest}".rstrip()


class LiveControl:
    """The channel's JSON-RPC verbs on the probe's connection (live/close, live/commit_input,
    live/status, or their mob/member_live_* forms)."""

    def __init__(self, rpc: Rpc, args: argparse.Namespace, console: Console, channel_id: str):
        self.rpc = rpc
        self.args = args
        self.console = console
        self.channel_id = channel_id

    def method(self, verb: str) -> str:
        return live_channel_request(self.args, self.channel_id, verb)[0]

    def call(self, verb: str) -> dict:
        """A verb's result; RpcError, ProtocolError or OSError."""
        method, params = live_channel_request(self.args, self.channel_id, verb)
        return self.rpc.call(method, params, self.args.open_timeout)

    def checked(self, verb: str) -> dict:
        """A verb that must succeed: its result, else ProbeError (the channel failed)."""
        try:
            result = self.call(verb)
        except RpcError as e:
            raise ProbeError(f"{self.method(verb)} refused: {e.message} ({e.code})", EXIT_CHANNEL) from None
        except (OSError, ProtocolError) as e:
            raise ProbeError(f"{self.method(verb)} failed: {_why(e)}", EXIT_CHANNEL) from None
        self.console.say(f"{self.method(verb)}: {result.get('status')}")
        return result

    def close_quietly(self, why: str) -> None:
        """live/close on a way out that failed: the server keeps a channel whose socket never got
        in (a refused token, no WebSocket) open, and its session bound, until it is closed."""
        method = self.method("close")
        try:
            result = self.call("close")
        except RpcError as e:
            self.console.say(f"{method}: {e.message} ({e.code}): the server had already ended the channel")
            return
        except (OSError, ProtocolError) as e:
            self.console.say(f"{method} failed ({_why(e)}): the channel may still be open on the server")
            return
        self.console.say(f"{method}: {result.get('status')} ({why})")

    def status(self) -> str:
        """live/status for an error message: "live/status: closed", or why it failed."""
        method = self.method("status")
        try:
            result = self.call("status")
        except RpcError as e:
            return f"{method}: {e.message}"
        except (OSError, ProtocolError) as e:
            return f"{method} failed: {_why(e)}"
        st = result.get("status")
        return f"{method}: {st.get('status') if isinstance(st, dict) else st}"


def _why(e: Exception) -> str:
    return getattr(e, "reason", None) or str(e) or type(e).__name__


class LiveChannel:
    """A live channel's WebSocket: observations in (parsed by the firmware's codec, printed),
    binary PCM and text frames out. The socket's end is recorded, not raised: on this surface a
    drop is how the server says most things."""

    def __init__(self, wire: Wire, console: Console, args: argparse.Namespace, ctl: LiveControl):
        self.wire = wire
        self.console = console
        self.args = args
        self.ctl = ctl
        self.reply = Reply()
        self.seen: list[str] = []  # observation names, in order
        self.ready = False
        self.refusal: dict | None = None  # {"error","reason"} before ready
        self.terminal: dict | None = None  # the `error` observation (published by 0.6.5 to 0.6.x)
        self.provider_closed = False  # status_changed{closed}: the provider's stream ended
        self.completed: dict | None = None  # the turn_completed that ended the turn
        self.lost: Lost | None = None  # how the socket ended
        self.frames_in = 0
        self.unknown: dict[str, None] = {}  # what the firmware's codec reported, in order

    @property
    def ended(self) -> bool:
        """The socket ended."""
        return self.lost is not None

    @property
    def over(self) -> bool:
        """The channel ended: the socket, or the server said so (its socket drop follows)."""
        return self.ended or self.provider_closed or self.terminal is not None

    def send(self, data: str | bytes, show: str | None = None) -> None:
        try:
            self.wire.send(data)
        except Lost as e:
            self.lost = e
            return
        if show:
            self.console.say(show)

    def poll(self, timeout: float) -> None:
        try:
            text = self.wire.recv(timeout)
        except Lost as e:
            self.lost = e
            return
        if text is None:
            return
        self.frames_in += 1
        if self.args.json:
            self.console.frame(text)
        report: list[str] = []
        try:
            frame = live.parse_server_frame(text, report)
        except ProtocolError as e:
            self.console.say(f"invalid frame from the server: {e.reason}: {text[:120]}")
            return
        self.unknown.update(dict.fromkeys(report))
        self._handle(frame)

    def _handle(self, frame: dict) -> None:
        name = frame.get("observation")
        if name is None:  # the error frame
            line = f"error frame: {frame['error']}" + (f" ({frame['reason']})" if "reason" in frame else "")
            if not self.ready and self.refusal is None:
                self.refusal = frame
        else:
            self.seen.append(name)
            line = describe_observation(frame, self.reply, time.monotonic())
            if name == "ready":
                self.ready = True
            elif name == "status_changed" and frame["status"]["status"] == "closed":
                self.provider_closed = True
            elif name == "error":
                self.terminal = frame
            elif name == "turn_completed" and frame.get("stop_reason") != "tool_use":
                self.completed = frame  # a tool_use response is followed by its continuation
            if name not in live.OBSERVATIONS:
                line += " (an observation this probe does not know)"
        if not self.args.json:
            self.console.say(line)

    def wait(self, until, deadline: float) -> bool:
        """Poll until until() is true (True), or the socket ended or the deadline passed."""
        while not until():
            left = deadline - time.monotonic()
            if left <= 0 or self.ended:
                return bool(until())
            self.poll(left)
        return True

    def drain(self) -> None:
        """Read until DRAIN_IDLE_S pass without a frame (at most DRAIN_MAX_S), or the socket ends."""
        end = time.monotonic() + DRAIN_MAX_S
        while not self.ended:
            seen, quiet = self.frames_in, min(time.monotonic() + DRAIN_IDLE_S, end)
            self.wait(lambda: self.frames_in != seen, quiet)
            if self.frames_in == seen or time.monotonic() >= end:
                return

    def note_unknown(self) -> None:
        if self.unknown:
            self.console.say("note: the firmware's codec reported (and will ignore) " + ", ".join(self.unknown))

    def describe_end(self) -> str:
        """Why the channel ended, from what the server sent before the socket went."""
        lost = self.lost
        if self.terminal is not None:
            t = self.terminal
            end = f" (close {lost.code} {lost.reason})" if lost is not None and lost.code else ""
            return f"{live.code_of(t)}: {t.get('message', '')}{end}"
        if self.provider_closed:
            return "the provider session ended (status_changed closed) and the server dropped the WebSocket"
        if lost is not None and lost.code is not None:
            return str(lost)
        return DROP_EXPLAINED

    def failed(self) -> ProbeError:
        """The channel ended under us: why, and what the server says of it now."""
        self.wait(lambda: False, time.monotonic() + CLOSE_WAIT_S)  # the drop (or Close) that follows
        self.console.say(f"the WebSocket ended: {self.lost}" if self.lost else "the channel ended")
        self.note_unknown()
        return ProbeError(f"the server ended the channel: {self.describe_end()} ({self.ctl.status()})", EXIT_CHANNEL)

    def close(self) -> int:
        """live/close, then read until the server drops the socket (it sends nothing first)."""
        if self.over:
            raise self.failed()
        method = self.ctl.method("close")
        self.ctl.checked("close")
        self.wait(lambda: False, time.monotonic() + CLOSE_WAIT_S)  # frames already sent, then the drop
        if self.lost is None:
            self.console.say(f"note: the server did not drop the WebSocket within {CLOSE_WAIT_S:g} s of {method}")
        elif self.lost.code is None:
            self.console.say(f"the server dropped the WebSocket, as it does after {method}")
        else:
            self.console.say(f"the server ended the WebSocket after {method}: {self.lost}")
        self.note_unknown()
        return EXIT_OK


def probe_live(args: argparse.Namespace, console: Console, pcm: bytes | None, rpc: Rpc) -> int:
    """live/open, the WebSocket, ready, one optional turn, live/close. NoSuchMethod when the
    server does not serve live/open (the caller may fall back to protocol v2)."""
    method, params = live_open_request(args)
    target = _target(args)
    console.line(f"bootstrap: {method} via rpc {args.rpc} for {target['type']} {_who(target)} ({args.turning_mode})")
    result = bootstrap_call(args, rpc, method, params)
    try:
        channel_id, url, token = live.check_open_result(result)
    except ProtocolError as e:
        raise ProbeError(f"{args.rpc} did not answer like Meerkat's {method} ({e.reason})", EXIT_BOOTSTRAP) from None
    console.secret(token)
    continuity = result.get("continuity")
    console.line(
        f"{method}: channel {channel_id}, token {shown_token(token)}, continuity "
        f"{continuity.get('mode', '?') if isinstance(continuity, dict) else '?'}"
    )
    console.line("surface: live (Meerkat 0.6.5 or later" + ("; auto: live/open answered" if args.surface == "auto" else "") + ")")
    caps = result.get("capabilities")
    caps = caps if isinstance(caps, dict) else {}
    console.line("capabilities: " + ", ".join(f"{label} {_yn(caps.get(key))}" for key, label in LIVE_CAPABILITIES))
    ws_url = rewrite_ws_host(url, rpc.host)
    console.line(f"{method}: url {url}")
    if ws_url != url:
        console.line(f"{method}: the url names the server's bind address; using {ws_url}")

    ctl = LiveControl(rpc, args, console, channel_id)
    console.t0 = time.monotonic()
    try:
        ws = connect_ws(ws_url, console, args, "--live-ws listener (path /live/ws)")
    except ProbeError:
        ctl.close_quietly("its WebSocket never got in")
        raise
    wire = Wire(ws, console, args)
    try:
        return run_live(LiveChannel(wire, console, args, ctl), pcm)
    finally:
        wire.close()


def live_text_frame(text: str) -> str:
    """A LiveInputChunkWire text chunk (meerkat-live.md 3.5)."""
    return json.dumps({"kind": "text", "text": text}, separators=(",", ":"), ensure_ascii=False)


def run_live(ch: LiveChannel, pcm: bytes | None) -> int:
    args, console, ctl = ch.args, ch.console, ch.ctl
    console.say("WebSocket open: waiting for the ready observation")
    ch.wait(lambda: ch.ready or ch.refusal is not None, time.monotonic() + args.open_timeout)
    if not ch.ready:
        if ch.refusal is not None:
            ch.wait(lambda: False, time.monotonic() + CLOSE_WAIT_S)  # the Close frame that follows
            ref = ch.refusal
            reason = ref.get("reason", "")
            close = f", then close {ch.lost.code} {ch.lost.reason}" if ch.lost is not None and ch.lost.code else ""
            hint = TOKEN_HINTS.get(reason, "see the server's log")
            ctl.close_quietly("a refused token leaves the channel open")
            raise ProbeError(f"the WebSocket refused the token: {ref['error']} ({reason}{close}): {hint}", EXIT_OPEN)
        if ch.ended:
            ctl.close_quietly("the WebSocket ended before ready")
            raise ProbeError(
                f"the WebSocket ended before the ready observation ({ch.lost}): the server checks the token after "
                "the upgrade and drops the socket when that check fails or times out: see its log",
                EXIT_OPEN,
            )
        ctl.close_quietly("no ready")
        raise ProbeError(
            f"no ready observation within {args.open_timeout:g} s of the WebSocket upgrade: the provider session did "
            "not start (see the server's log)",
            EXIT_OPEN,
        )
    explicit = args.turning_mode == "explicit_commit"
    if args.text is None and pcm is None:
        return ch.close()

    if pcm is not None:
        # Binary PCM frames. No input cancels a reply on this surface (only the server's VAD
        # hearing speech does), so the WAV goes out whole; in provider_managed mode silence
        # follows for the VAD to commit the turn.
        audio = pcm if explicit else pcm + bytes(TAIL_SILENCE_MS * BYTES_PER_MS)
        what = f"{len(pcm) / BYTES_PER_MS / 1000:.2f} s of audio" + ("" if explicit else f" then {TAIL_SILENCE_MS} ms of silence")
        console.say(f"sending {what} as binary PCM in {FRAME_MS} ms frames ({args.speed:g}x real time)")
        sent, input_done = stream_pcm(ch, audio, args.speed, ch.send, speech=len(pcm))
        if not ch.ended:
            console.say(f"sent {sent // BYTES_PER_MS} ms of audio")
    else:
        text = str(args.text)
        ch.send(live_text_frame(text), f"text sent: {_q(text)}")
        input_done = time.monotonic()
    if explicit and not ch.ended:
        ctl.checked("commit_input")
        input_done = time.monotonic()
    done = ch.wait(lambda: ch.completed is not None or ch.over, input_done + args.timeout)
    if done and not ch.over:
        ch.drain()
    status = ch.close()
    console.line(ch.reply.summary(input_done))
    if args.save_reply:
        save_wav(args.save_reply, bytes(ch.reply.pcm))
        console.line(f"reply audio written to {args.save_reply}")
    if not done:
        raise ProbeError(f"no turn_completed within {args.timeout:g} s of the input: is the agent working?", EXIT_CHANNEL)
    if ch.completed is not None and ch.completed.get("stop_reason") == "cancelled":
        console.say("note: the reply was cancelled (turn_interrupted), not completed")
    return status


# -- the probe ---------------------------------------------------------------------------------------


def probe(args: argparse.Namespace) -> int:
    pcm = read_wav(args.wav) if args.wav else None
    console = Console(args.json)
    rpc = Rpc(*_hostport(args.rpc)) if args.rpc else None
    try:
        return probe_surface(args, console, pcm, rpc)
    except ProbeError as e:
        raise ProbeError(console.scrub(str(e)), e.status) from None  # the token stays hidden
    finally:
        if rpc is not None:
            rpc.close()


def probe_surface(args: argparse.Namespace, console: Console, pcm: bytes | None, rpc: Rpc | None) -> int:
    """The surface asked for; auto: live/open, and protocol v2 if the server has no live/open."""
    if rpc is None or args.surface == "v2":  # REST is protocol v2 only
        return probe_v2(args, console, pcm, rpc, fell_back=False)
    try:
        return probe_live(args, console, pcm, rpc)
    except NoSuchMethod as e:
        if args.surface == "live":
            raise ProbeError(
                f"{args.rpc} has no {e.method} ({e.message}, -32601): start rkat-rpc with --live-ws ADDR "
                "(Meerkat 0.6.5 and later); a Meerkat 0.6.0 to 0.6.4 speaks protocol v2 instead: use --surface v2 (or auto)",
                EXIT_BOOTSTRAP,
            ) from None
        console.line(f"{e.method}: {e.message} (-32601): not the live surface; trying protocol v2")
        return probe_v2(args, console, pcm, rpc, fell_back=True)


# -- the command line ---------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="meerkat-probe",
        description="Check a Meerkat server (the live surface of Meerkat 0.6.5 and later, or protocol v2 of "
        "0.6.0 to 0.6.4) from this computer: bootstrap, open a channel, optionally run one turn, print everything.",
        epilog="Exit status: 0 ok, 2 usage or input file, 3 bootstrap failed (realtime/open_info or live/open), "
        "4 the channel did not open, 5 the channel failed after opening.",
    )
    srv = p.add_argument_group("server (one of --rpc, --rest, or --config)")
    srv.add_argument("--rpc", metavar="HOST:PORT", help="rkat-rpc's JSON-RPC TCP listener (--tcp)")
    srv.add_argument("--rest", metavar="URL", help="rkat-rest's base URL, e.g. http://192.168.1.10:8080 (protocol v2 only)")
    srv.add_argument("--config", type=Path, help="take server, surface, target and turning mode (and role) from a device config.json")
    srv.add_argument(
        "--surface",
        choices=SURFACES,
        help="live (Meerkat 0.6.5+), v2 (0.6.0-0.6.4) or auto: live/open first, protocol v2 if the server "
        "answers -32601 (default auto, or the config's server.surface)",
    )
    tgt = p.add_argument_group("target (one of --session-id, or --mob-id with --agent-identity)")
    tgt.add_argument("--session-id")
    tgt.add_argument("--mob-id")
    tgt.add_argument("--agent-identity")
    p.add_argument("--role", choices=ROLES, help="default primary; observer exists in protocol v2 only")
    p.add_argument("--turning-mode", choices=TURNING_MODES, help="default provider_managed")
    inp = p.add_mutually_exclusive_group()
    inp.add_argument("--text", help="send this text as the user's turn")
    inp.add_argument("--wav", type=Path, help="send this WAV (24 kHz mono 16-bit) as the user's turn, in real time")
    p.add_argument("--speed", type=float, default=1.0, help="pace the WAV at this multiple of real time (default 1)")
    p.add_argument("--save-reply", type=Path, metavar="WAV", help="write the reply audio to this WAV file")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the reply, or to observe (default 30)")
    p.add_argument(
        "--open-timeout",
        type=float,
        default=10.0,
        help="seconds for the bootstrap (live/open opens the provider session), the connection and "
        "channel.opened or ready (default 10)",
    )
    p.add_argument("--json", action="store_true", help="print the server's frames verbatim on stdout (everything else on stderr)")
    return p


def resolve(args: argparse.Namespace, p: argparse.ArgumentParser) -> argparse.Namespace:
    """Fill the options from --config and defaults; usage errors through p.error (exit 2)."""
    args.reconnect_policy = args.channel_config = None
    if args.config is not None:
        from meerkat_rt import config as configs

        try:
            cfg = configs.load(str(args.config))
        except configs.ConfigError as e:
            p.error(f"{args.config}: {str(e).removeprefix('config.json: ')}")
        server = cfg["server"]
        if not (args.rpc or args.rest):
            args.rpc, args.rest = server.get("rpc"), server.get("rest")
        args.surface = args.surface or server.get("surface")
        if not (args.session_id or args.mob_id):
            t = cfg["target"]
            args.session_id, args.mob_id, args.agent_identity = t.get("session_id"), t.get("mob_id"), t.get("agent_identity")
        args.role = args.role or cfg["role"]
        args.turning_mode = args.turning_mode or cfg["turning_mode"]
        args.reconnect_policy = cfg.get("server_reconnect_policy")
        args.channel_config = cfg.get("channel_config")
    args.surface = args.surface or "auto"
    args.role = args.role or "primary"
    args.turning_mode = args.turning_mode or "provider_managed"
    if bool(args.rpc) == bool(args.rest):
        p.error("give the server with exactly one of --rpc HOST:PORT or --rest URL (or --config)")
    if args.rpc:
        try:
            _hostport(args.rpc)
        except ValueError:
            p.error(f"--rpc {args.rpc}: use HOST:PORT, e.g. 192.168.1.10:9001")
    if args.rest:
        try:
            if not args.rest.startswith("http://"):
                raise ValueError(args.rest)
            _rest_parts(args.rest)
        except ValueError:
            p.error(f"--rest {args.rest}: use an http:// URL, e.g. http://192.168.1.10:8080 (the REST proxy has no TLS)")
        if args.surface == "live":
            p.error("--rest: the live surface has no REST routes: use --rpc HOST:PORT (rkat-rpc --tcp)")
        args.surface = "v2"  # only protocol v2 has a REST proxy
    if args.role == "observer":
        if args.surface == "live":
            p.error("--role observer: the live surface has no observer role (protocol v2 only: --surface v2)")
        args.surface = "v2"
    if bool(args.session_id) == bool(args.mob_id):
        p.error("give the target with exactly one of --session-id ID or --mob-id ID --agent-identity NAME")
    if args.mob_id and not args.agent_identity:
        p.error("--mob-id needs --agent-identity")
    if args.role == "observer" and (args.text is not None or args.wav):
        p.error("an observer may not send input: drop --text/--wav or use --role primary")
    if args.speed <= 0 or args.timeout <= 0 or args.open_timeout <= 0:
        p.error("--speed, --timeout and --open-timeout must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = resolve(p.parse_args(argv), p)
    try:
        status = probe(args)
    except ProbeError as e:
        print(f"meerkat-probe: error: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        print("meerkat-probe: interrupted", file=sys.stderr)
        return 130
    print("meerkat-probe: ok", file=sys.stderr if args.json else sys.stdout)
    return status


if __name__ == "__main__":
    sys.exit(main())
