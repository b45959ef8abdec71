"""The MicroPython WebSocket clients on PyPI that the uplink is compared with: fetched with
`pip download --no-deps` into a temporary directory, unpacked, and put on MICROPYPATH.

Each peer is driven through its own send function (see mp_uplink.py and docs/benchmarks.md):
  chumicro-websockets                  WebSocketClient.send_text() + handle() (needs its
                                       runtime deps chumicro-sockets and chumicro-timing)
  micropython-async-websocket-client   await AsyncWebsocketClient.send()
  micropython-websocket                WebSocket.send()
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

# distribution -> the extra distributions it needs at run time
PEERS: dict[str, tuple[str, ...]] = {
    "chumicro-websockets": ("chumicro-sockets", "chumicro-timing"),
    "micropython-async-websocket-client": (),
    "micropython-websocket": (),
}


@dataclass
class Peer:
    name: str
    version: str | None = None
    path: list[Path] = field(default_factory=list)  # directories for MICROPYPATH
    error: str | None = None  # why it is not available


def _version(wheel: Path) -> str:
    # name-version-pyX-none-any.whl
    parts = wheel.name.split("-")
    return parts[1] if len(parts) > 1 else "?"


def fetch(dest: Path, timeout: float = 120) -> dict[str, Peer]:
    """Download and unpack every peer (and its run-time deps) into dest. Never raises: a peer
    that could not be fetched carries the reason in .error (no network, no pip, ...)."""
    dest.mkdir(parents=True, exist_ok=True)
    wheels = dest / "wheels"
    wheels.mkdir(exist_ok=True)
    wanted = list(PEERS) + sorted({d for deps in PEERS.values() for d in deps})
    peers = {name: Peer(name) for name in PEERS}
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q"]
    cmd += ["--retries", "1", "--timeout", "15", "-d", str(wheels), *wanted]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        failed = proc.returncode != 0
        why = (proc.stderr.strip().splitlines() or ["pip download failed"])[-1]
    except (OSError, subprocess.TimeoutExpired) as exc:
        failed, why = True, f"pip download: {exc}"
    unpacked: dict[str, Path] = {}
    versions: dict[str, str] = {}
    for wheel in sorted(wheels.glob("*.whl")):
        dist = wheel.name.split("-")[0].replace("_", "-").lower()
        target = dest / dist
        try:
            with zipfile.ZipFile(wheel) as z:
                z.extractall(target)
        except zipfile.BadZipFile:
            continue
        unpacked[dist] = target
        versions[dist] = _version(wheel)
    for name, peer in peers.items():
        need = [name, *PEERS[name]]
        missing = [d for d in need if d not in unpacked]
        if missing:
            peer.error = f"pip download failed: {why}" if failed else f"no wheel for {', '.join(missing)}"
            continue
        peer.version = versions[name]
        peer.path = [unpacked[d] for d in need]
    return peers
