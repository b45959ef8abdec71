"""`meerkat-probe`: check a Meerkat realtime server from the host before flashing a board.

    meerkat-probe --rpc 192.168.1.10:9001 --session-id 019e...             # bootstrap + open + close
    meerkat-probe --rpc 192.168.1.10:9001 --session-id 019e... --text "Hello?"
    meerkat-probe --config config.json --wav question.wav                   # what the board would do
    meerkat-probe --rest http://192.168.1.10:8080 --session-id 019e... --role observer --timeout 60

It does what the device does, with an independent implementation (websocket-client, plain
sockets): `realtime/open_info` over JSON-RPC (TCP JSON lines) or the REST proxy, the WebSocket,
`channel.open` as the first frame (protocol "2"), then optionally one turn (a text, or a WAV
streamed in 40 ms frames in real time; `channel.commit_turn` after it in explicit_commit mode),
and waits for `turn_completed` or `interrupted` before `channel.close`. Every server frame is
printed as one line as it arrives (`--json`: verbatim). Without input a primary closes as soon as
the channel is open; an observer prints what it sees until --timeout.

Exit status: 0 ok; 2 usage or input file; 3 bootstrap failed; 4 the channel did not open;
5 the channel failed after opening (an error that ended it, a lost connection, no reply in time).
The open token is a bearer secret: only its first 8 characters are ever printed.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import select
import socket
import ssl
import sys
import time
import wave
from pathlib import Path

import websocket

from . import paths

if str(paths.FIRMWARE) not in sys.path:
    sys.path.insert(0, str(paths.FIRMWARE))

from meerkat_rt import protocol  # noqa: E402  (the firmware's codec runs on CPython)

EXIT_OK, EXIT_USAGE, EXIT_BOOTSTRAP, EXIT_OPEN, EXIT_CHANNEL = 0, 2, 3, 4, 5
FRAME_MS = 40
RATE = protocol.SAMPLE_RATE_HZ
BYTES_PER_MS = RATE * 2 // 1000
TAIL_SILENCE_MS = 1500  # provider_managed: silence after the WAV until the server's VAD commits
CLOSE_WAIT_S = 5.0
_LOOPBACK = ("0.0.0.0", "127.0.0.1", "localhost", "::", "::1")


class ProbeError(Exception):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


# -- bootstrap -------------------------------------------------------------------------------


def _hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(value)
    return host.strip("[]"), int(port)


def _is_loopback(host: str) -> bool:
    return host in _LOOPBACK or host.startswith("127.")


def _reach_hint(kind: str, where: str, host: str) -> str:
    if kind == "rest":
        return f"is rkat-rest running at {where} (started with --realtime-rpc-tcp pointing at rkat-rpc)?"
    remote = "" if _is_loopback(host) else " --allow-remote"
    return f"is rkat-rpc running with --tcp {where}{remote} (and --realtime-ws)?"


def _rpc_call(host: str, port: int, method: str, params: dict, timeout: float) -> dict:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(protocol.rpc_request(1, method, params).encode())
        f = sock.makefile("rb")
        while True:
            line = f.readline(1 << 20)
            if not line:
                raise protocol.ProtocolError("it closed the connection without answering")
            if not line.strip():
                continue
            try:
                result = protocol.parse_rpc_response(line, 1)
            except protocol.ProtocolError as e:
                shown = line[:40].decode("utf-8", "replace").strip()
                raise protocol.ProtocolError(f"{e.reason} (it sent '{shown}')") from None
            if result is not None:
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
        return protocol.loads(body, "bootstrap response")
    err = protocol.parse_wire_error(body)
    if err is not None:
        raise err
    raise protocol.ProtocolError(f"HTTP {resp.status} {resp.reason} without a Meerkat error body")


def _bootstrap_hint(err: protocol.RpcError, args: argparse.Namespace) -> str:
    msg = err.message
    if err.code in (protocol.RPC_SESSION_NOT_FOUND, "SESSION_NOT_FOUND"):
        return (
            "sessions live in the rkat-rpc process that created them: pass the id of a live session "
            "in that process with --session-id"
        )
    if err.code in (protocol.RPC_CAPABILITY_UNAVAILABLE, "CAPABILITY_UNAVAILABLE"):
        if "turning mode" in msg:
            other = "provider_managed" if args.turning_mode == "explicit_commit" else "explicit_commit"
            return f"this target does not offer turning mode {args.turning_mode}: try --turning-mode {other}"
        if "websocket host" in msg:
            return "start rkat-rpc with --realtime-ws ADDR (the realtime WebSocket listener)"
        if err.code == "CAPABILITY_UNAVAILABLE" and "rpc" in msg.lower():  # rkat-rest without rkat-rpc
            return "start rkat-rest with --realtime-rpc-tcp pointing at rkat-rpc's --tcp address"
        return "the session's model must support realtime (e.g. gpt-realtime-1.5)"
    if err.code == "PROVIDER_ERROR":
        return "rkat-rest cannot reach rkat-rpc: check its --realtime-rpc-tcp address"
    if err.code in (protocol.RPC_INVALID_PARAMS, "INVALID_PARAMS"):
        return "check the target (--session-id, or --mob-id with --agent-identity)"
    return "see the server's log"


def bootstrap(args: argparse.Namespace, params: dict) -> tuple[dict, str]:
    """realtime/open_info -> (validated open_info, host reached). Raises ProbeError."""
    timeout = args.open_timeout
    if args.rpc:
        kind, where = "rpc", args.rpc
        host, port = _hostport(args.rpc)
    else:
        kind, where = "rest", args.rest
        host, port, _ = _rest_parts(args.rest)
    try:
        if kind == "rpc":
            info = _rpc_call(host, port, "realtime/open_info", params, timeout)
        else:
            info = _rest_call(args.rest, "realtime/open_info", params, timeout)
        protocol.check_open_info(info)
    except (socket.timeout, TimeoutError):
        extra = " (the --realtime-ws port does not answer JSON-RPC)" if kind == "rpc" else ""
        raise ProbeError(f"no answer from {where} within {timeout:g} s: is it the right port{extra}?", EXIT_BOOTSTRAP) from None
    except socket.gaierror as e:
        raise ProbeError(f"cannot resolve {host}: {e.strerror}: check the host name or use its IP address", EXIT_BOOTSTRAP) from None
    except OSError as e:
        reason = e.strerror or str(e) or type(e).__name__
        raise ProbeError(f"cannot reach {where}: {reason}: {_reach_hint(kind, where, host)}", EXIT_BOOTSTRAP) from None
    except protocol.RpcError as e:
        raise ProbeError(
            f"realtime/open_info refused by {where}: {e.message} ({e.code}): {_bootstrap_hint(e, args)}", EXIT_BOOTSTRAP
        ) from None
    except (protocol.ProtocolError, http.client.HTTPException) as e:
        what = "the rkat-rpc --tcp port (not --realtime-ws)" if kind == "rpc" else "the rkat-rest URL"
        reason = getattr(e, "reason", None) or str(e) or type(e).__name__
        raise ProbeError(f"{where} did not answer like Meerkat ({reason}): is it {what}?", EXIT_BOOTSTRAP) from None
    return info, host


def rewrite_ws_host(url: str, reached: str) -> str:
    """The server builds ws_url from its bind address (0.0.0.0, 127.0.0.1): use the host we
    reached it on instead, as the device does."""
    scheme, sep, rest = url.partition("://")
    hostport, slash, path = rest.partition("/")
    host, colon, port = hostport.rpartition(":") if not hostport.endswith("]") else (hostport, "", "")
    if host.strip("[]") not in _LOOPBACK or host.strip("[]") == reached:
        return url
    shown = f"[{reached}]" if ":" in reached else reached
    return f"{scheme}{sep}{shown}{colon}{port}{slash}{path}"


# -- output ----------------------------------------------------------------------------------


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _yn(v) -> str:
    return "yes" if v else "no"


def describe_capabilities(caps: dict) -> str:
    parts = [
        "input " + ",".join(caps.get("input_kinds", [])) or "-",
        "output " + ",".join(caps.get("output_kinds", [])) or "-",
        "turning " + ",".join(caps.get("turning_modes", [])) or "-",
        f"interrupt {_yn(caps.get('interrupt_supported'))}",
        f"transcript {_yn(caps.get('transcript_supported'))}",
        f"tool events {_yn(caps.get('tool_lifecycle_events_supported'))}",
        f"video {_yn(caps.get('video_supported'))}",
        f"audio in {protocol.describe_format(caps.get('audio_input_format'))}",
        f"audio out {protocol.describe_format(caps.get('audio_output_format'))}",
    ]
    return "; ".join(parts)


def describe_status(st: dict) -> str:
    s = f"{st.get('state')} (attempt {st.get('attempt_count', 0)})"
    for key in ("reason", "next_retry_at", "deadline_at"):
        if key in st:
            s += f" {key}={_q(st[key]) if key == 'reason' else st[key]}"
    return s


class Reply:
    """What came back for the turn: audio per item, text, timings."""

    def __init__(self) -> None:
        self.audio: dict[str, int] = {}  # item -> bytes of PCM
        self.chunks = 0
        self.pcm = bytearray()
        self.text = ""
        self.first_audio: float | None = None


def describe_event(ev: dict, reply: Reply, now: float) -> str:
    kind = ev.get("type", "?")
    if kind in ("input_transcript_partial", "input_transcript_final"):
        return f"{kind} {_q(ev.get('text', ''))}"
    if kind == "output_text_delta":
        reply.text += ev.get("delta", "")
        return f"{kind} {_q(ev.get('delta', ''))}"
    if kind == "output_audio_chunk":
        chunk = ev.get("chunk", {})
        try:
            pcm = base64.b64decode(chunk.get("data", ""), validate=True)
        except ValueError:
            return f"{kind} with data that is not base64 ({len(chunk.get('data', ''))} characters)"
        item = ev.get("item_id", "(no item_id)")
        if not protocol.format_matches(chunk):
            return f"{kind} {item}: unexpected format {protocol.describe_format(chunk)}, {len(pcm)} bytes"
        reply.audio[item] = reply.audio.get(item, 0) + len(pcm)
        reply.chunks += 1
        reply.pcm += pcm
        if reply.first_audio is None:
            reply.first_audio = now
        return f"{kind} {item} {len(pcm) // BYTES_PER_MS} ms (item total {reply.audio[item] // BYTES_PER_MS} ms)"
    if kind == "status_changed":
        return f"{kind} {describe_status(ev.get('status', {}))}"
    rest = " ".join(f"{k}={_q(v) if isinstance(v, str) else v}" for k, v in ev.items() if k != "type")
    return f"{kind} {rest}".rstrip()


# -- the channel -----------------------------------------------------------------------------


class Lost(Exception):
    pass


class Channel:
    """The WebSocket after the upgrade: frames in (parsed, printed), frames out."""

    def __init__(self, ws: websocket.WebSocket, url: str, args: argparse.Namespace, t0: float):
        self.ws = ws
        self.url = url
        self.args = args
        self.t0 = t0
        self.reply = Reply()
        self.seen: list[str] = []  # event types, in order
        self.errors: list[dict] = []
        self.closed_reason: str | None = None
        self.opened: dict | None = None

    def say(self, text: str) -> None:
        line = f"[{time.monotonic() - self.t0:7.3f}] {text}"
        print(line, file=sys.stderr if self.args.json else sys.stdout, flush=True)

    def send(self, text: str, show: str | None = None) -> None:
        try:
            self.ws.send(text)
        except (OSError, websocket.WebSocketException) as e:
            raise Lost(f"sending failed: {e or type(e).__name__}") from None
        if show:
            self.say(show)

    def _readable(self, timeout: float) -> bool:
        sock = self.ws.sock
        if sock is None:
            raise Lost("the connection is closed")
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        ready, _, _ = select.select([sock], [], [], max(0.0, timeout))
        return bool(ready)

    def poll(self, timeout: float) -> dict | None:
        """Wait up to timeout for one server frame; handle and return it (None: nothing)."""
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
            raise Lost(f"the server closed the WebSocket ({code or 'no code'}{' ' + why if why else ''})")
        if opcode != websocket.ABNF.OPCODE_TEXT:
            self.say(f"unexpected {len(data)}-byte binary message (the server sends text only)")
            return None
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        if self.args.json:
            print(text, flush=True)
        try:
            frame = protocol.parse_server_frame(text)
        except protocol.ProtocolError as e:
            self.say(f"invalid frame from the server: {e.reason}: {text[:120]}")
            return None
        self._handle(frame)
        return frame

    def _handle(self, frame: dict) -> None:
        kind = frame["type"]
        now = time.monotonic()
        if kind == "channel.event":
            ev = frame["event"]
            self.seen.append(ev["type"])
            line = describe_event(ev, self.reply, now)
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
            self.say(line)
        if kind == "channel.opened":
            self.say("capabilities: " + describe_capabilities(frame["capabilities"]))

    def wait(self, until, deadline: float) -> bool:
        """Poll frames until until() is true (True) or the deadline passes (False)."""
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.poll(left)
        return True


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


def stream_wav(ch: Channel, pcm: bytes, explicit: bool, speed: float) -> None:
    """Send pcm in FRAME_MS frames paced at speed x real time, reading frames in between. In
    provider_managed mode stop at turn_committed (any input after the reply starts would cancel
    it) and add silence after the WAV until the server's VAD commits."""
    step = FRAME_MS * BYTES_PER_MS
    what = f"{len(pcm) / BYTES_PER_MS / 1000:.2f} s of audio"
    if not explicit:
        pcm = pcm + bytes(TAIL_SILENCE_MS * BYTES_PER_MS)
        what += f" then up to {TAIL_SILENCE_MS} ms of silence"
    frames = [pcm[i : i + step] for i in range(0, len(pcm), step)]
    start = time.monotonic()
    sent = 0
    ch.say(f"sending {what} in {FRAME_MS} ms frames ({speed:g}x real time)")
    while sent < len(frames):
        if ch.closed_reason is not None:
            return
        if not explicit and "turn_committed" in ch.seen:
            ch.say(f"stopped sending at turn_committed ({sent * FRAME_MS} ms sent)")
            return
        due = start + sent * FRAME_MS / 1000 / speed
        now = time.monotonic()
        if now < due:
            ch.poll(due - now)
            continue
        data = base64.b64encode(frames[sent]).decode("ascii")
        ch.send(protocol.audio_input_frame(data))
        sent += 1
    ch.say(f"sent {sent * FRAME_MS} ms of audio")


def open_params(args: argparse.Namespace) -> dict:
    target = (
        protocol.session_target(args.session_id)
        if args.session_id
        else protocol.mob_member_target(args.mob_id, args.agent_identity)
    )
    return protocol.open_request_params(
        target, args.role, args.turning_mode, args.reconnect_policy, args.channel_config
    )


def probe(args: argparse.Namespace) -> int:
    pcm = read_wav(args.wav) if args.wav else None
    out = sys.stderr if args.json else sys.stdout
    params = open_params(args)
    via = f"rpc {args.rpc}" if args.rpc else f"rest {args.rest}"
    target = params["target"]
    who = target.get("session_id") or f"{target.get('mob_id')}/{target.get('agent_identity')}"
    print(f"bootstrap: realtime/open_info via {via} for {target['type']} {who} ({args.role}, {args.turning_mode})", file=out)
    info, reached = bootstrap(args, params)
    token = info["open_token"]
    ws_url = rewrite_ws_host(info["ws_url"], reached)
    versions = ",".join(info.get("supported_protocol_versions", [])) or "?"
    print(
        f"open_info: ws_url {info['ws_url']}, token {token[:8]}…, expires {info['expires_at']}, "
        f"protocol {versions} (default {info['default_protocol_version']})",
        file=out,
    )
    if ws_url != info["ws_url"]:
        print(f"open_info: ws_url names the server's bind address; using {ws_url}", file=out)
    if protocol.PROTOCOL_VERSION not in info.get("supported_protocol_versions", [protocol.PROTOCOL_VERSION]):
        raise ProbeError(f"the server does not offer protocol {protocol.PROTOCOL_VERSION} (it offers {versions})", EXIT_OPEN)

    t0 = time.monotonic()
    try:
        ws = websocket.create_connection(ws_url, timeout=args.open_timeout, enable_multithread=False)
    except websocket.WebSocketBadStatusException as e:
        raise ProbeError(
            f"{ws_url} refused the WebSocket upgrade (HTTP {e.status_code}): is it the server's --realtime-ws "
            "listener (path /realtime/ws)?",
            EXIT_OPEN,
        ) from None
    except (socket.timeout, websocket.WebSocketTimeoutException):
        raise ProbeError(f"no WebSocket answer from {ws_url} within {args.open_timeout:g} s", EXIT_OPEN) from None
    except (OSError, websocket.WebSocketException) as e:
        reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise ProbeError(
            f"cannot open {ws_url}: {reason}: is the --realtime-ws listener reachable from here "
            "(bound to a LAN address, with --allow-remote)?",
            EXIT_OPEN,
        ) from None
    ch = Channel(ws, ws_url, args, t0)
    try:
        return run_channel(ch, token, pcm, info)
    except Lost as e:
        raise ProbeError(str(e), EXIT_OPEN if ch.opened is None else EXIT_CHANNEL) from None
    finally:
        ws.close(timeout=0.2)


def run_channel(ch: Channel, token: str, pcm: bytes | None, info: dict) -> int:
    args = ch.args
    ch.send(protocol.open_frame(token, args.role, args.turning_mode), f"channel.open sent (protocol {protocol.PROTOCOL_VERSION})")
    deadline = time.monotonic() + args.open_timeout
    try:
        ch.wait(lambda: ch.opened is not None or ch.closed_reason is not None, deadline)
    except Lost as e:
        if not ch.errors:
            raise
        ch.say(str(e))
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
        ch.say("note: the capabilities differ from open_info's")
    explicit = args.turning_mode == "explicit_commit"

    if args.text is None and pcm is None:
        if args.role == "observer":
            ch.say(f"observing for {args.timeout:g} s")
            ch.wait(lambda: ch.closed_reason is not None, time.monotonic() + args.timeout)
        return close(ch)

    if pcm is not None:
        stream_wav(ch, pcm, explicit, args.speed)
    else:
        text = str(args.text)
        ch.send(protocol.text_input_frame(text), f"text sent: {_q(text)}")
    if explicit and ch.closed_reason is None:
        ch.send(protocol.COMMIT_TURN_FRAME, "channel.commit_turn sent")
    input_done = time.monotonic()
    done = ch.wait(
        lambda: ch.closed_reason is not None or "turn_completed" in ch.seen or "interrupted" in ch.seen,
        input_done + args.timeout,
    )
    if ch.closed_reason is not None:
        raise ProbeError(f"the server ended the channel: {describe_end(ch)}", EXIT_CHANNEL)
    status = close(ch)
    r = ch.reply
    summary = f"reply: {len(r.pcm) // BYTES_PER_MS} ms of audio in {r.chunks} chunks"
    if r.first_audio is not None:
        summary += f", first audio {1000 * (r.first_audio - input_done):.0f} ms after the input ended"
    if r.text:
        summary += f", text {_q(r.text)}"
    print(summary, file=sys.stderr if args.json else sys.stdout)
    if args.save_reply:
        save_wav(args.save_reply, bytes(r.pcm))
        print(f"reply audio written to {args.save_reply}", file=sys.stderr if args.json else sys.stdout)
    if not done:
        raise ProbeError(f"no turn_completed (or interrupted) within {args.timeout:g} s of the input: is the agent working?", EXIT_CHANNEL)
    if "interrupted" in ch.seen and "turn_completed" not in ch.seen:
        ch.say("note: the reply was interrupted, not completed")
    return status


def describe_end(ch: Channel) -> str:
    if ch.errors:
        e = ch.errors[-1]
        return f"{e['code']}: {e['message']} (channel.closed {ch.closed_reason})"
    return f"channel.closed {ch.closed_reason}"


def close(ch: Channel) -> int:
    """channel.close, then wait for channel.closed (the server drops the socket after it)."""
    if ch.closed_reason is not None:
        raise ProbeError(f"the server ended the channel: {describe_end(ch)}", EXIT_CHANNEL)
    ch.send(protocol.CLOSE_FRAME, "channel.close sent")
    try:
        if not ch.wait(lambda: ch.closed_reason is not None, time.monotonic() + CLOSE_WAIT_S):
            ch.say(f"note: no channel.closed within {CLOSE_WAIT_S:g} s of channel.close")
    except Lost as e:
        ch.say(f"note: {e}, without channel.closed")
    if ch.closed_reason not in (None, "client_closed"):
        raise ProbeError(f"channel.close answered with {describe_end(ch)}", EXIT_CHANNEL)
    return EXIT_OK


# -- the command line -----------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="meerkat-probe",
        description="Check a Meerkat realtime server (protocol v2) from this computer: bootstrap, open a "
        "channel, optionally run one turn, print everything.",
        epilog="Exit status: 0 ok, 2 usage or input file, 3 bootstrap failed, 4 the channel did not open, "
        "5 the channel failed after opening.",
    )
    srv = p.add_argument_group("server (one of --rpc, --rest, or --config)")
    srv.add_argument("--rpc", metavar="HOST:PORT", help="rkat-rpc's JSON-RPC TCP listener (--tcp)")
    srv.add_argument("--rest", metavar="URL", help="rkat-rest's base URL, e.g. http://192.168.1.10:8080")
    srv.add_argument("--config", type=Path, help="take server, target, role and turning mode from a device config.json")
    tgt = p.add_argument_group("target (one of --session-id, or --mob-id with --agent-identity)")
    tgt.add_argument("--session-id")
    tgt.add_argument("--mob-id")
    tgt.add_argument("--agent-identity")
    p.add_argument("--role", choices=protocol.ROLES, help="default primary")
    p.add_argument("--turning-mode", choices=protocol.TURNING_MODES, help="default provider_managed")
    inp = p.add_mutually_exclusive_group()
    inp.add_argument("--text", help="send this text as the user's turn")
    inp.add_argument("--wav", type=Path, help="send this WAV (24 kHz mono 16-bit) as the user's turn, in real time")
    p.add_argument("--speed", type=float, default=1.0, help="pace the WAV at this multiple of real time (default 1)")
    p.add_argument("--save-reply", type=Path, metavar="WAV", help="write the reply audio to this WAV file")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the reply, or to observe (default 30)")
    p.add_argument("--open-timeout", type=float, default=10.0, help="seconds for the bootstrap, the connection and channel.opened (default 10)")
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
        if not (args.session_id or args.mob_id):
            t = cfg["target"]
            args.session_id, args.mob_id, args.agent_identity = t.get("session_id"), t.get("mob_id"), t.get("agent_identity")
        args.role = args.role or cfg["role"]
        args.turning_mode = args.turning_mode or cfg["turning_mode"]
        args.reconnect_policy = cfg.get("server_reconnect_policy")
        args.channel_config = cfg.get("channel_config")
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
