"""The assistant's reply: its audio (a WAV file or a generated voice-like signal), its text, and
the deterministic cut of the audio into output chunks of varying duration."""

from __future__ import annotations

import math
import random
import struct
import wave
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from . import wire

DEFAULT_REPLY_WAV = paths.FIXTURES / "assistant_reply.wav"
# The sentence spoken in the fixture (tools/meerkat_tools/fixtures/make_fixtures.sh).
FIXTURE_REPLY_TEXT = (
    "It is sunny in Lisbon today, with a high of twenty four degrees and a light breeze "
    "from the Atlantic. The evening will be clear and mild."
)
GENERIC_REPLY_TEXT = (
    "This is the Meerkat development server. I heard you, and this is my scripted reply."
)


@dataclass(frozen=True)
class ReplyAudio:
    pcm: bytes  # PCM16 little-endian, mono, 24 kHz
    text: str
    source: str

    @property
    def duration_ms(self) -> int:
        return len(self.pcm) // wire.BYTES_PER_MS


def read_pcm_wav(path: str | Path) -> bytes:
    """PCM frames of a 24 kHz mono 16-bit WAV; anything else is refused with a clear error."""
    try:
        with wave.open(str(path), "rb") as wav:
            rate, width, channels = wav.getframerate(), wav.getsampwidth(), wav.getnchannels()
            if (rate, width, channels) != (wire.SAMPLE_RATE_HZ, 2, wire.CHANNELS):
                raise ValueError(
                    f"{path}: reply audio must be 24000 Hz, mono, 16-bit PCM WAV; got {rate} Hz, "
                    f"{channels} channel(s), {8 * width}-bit (convert it, e.g. "
                    f"`sox in.wav -r 24000 -c 1 -b 16 out.wav`)"
                )
            return wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{path}: not a PCM WAV file ({exc})") from None


def generated_voice(seconds: float = 3.0, rate: int = wire.SAMPLE_RATE_HZ) -> bytes:
    """A speech-like signal: a gliding harmonic tone in syllable-rate bursts with short gaps."""
    out = bytearray()
    phase = 0.0
    for n in range(int(seconds * rate)):
        t = n / rate
        pitch = 140.0 + 30.0 * math.sin(2 * math.pi * 0.7 * t)
        phase += 2 * math.pi * pitch / rate
        syllable = max(0.0, math.sin(2 * math.pi * 4.0 * t)) ** 0.6
        if int(t / 0.9) % 3 == 2 and (t % 0.9) > 0.6:
            syllable = 0.0  # a pause between "words"
        voice = 0.6 * math.sin(phase) + 0.3 * math.sin(2 * phase) + 0.1 * math.sin(3 * phase)
        out += struct.pack("<h", int(9000 * syllable * voice))
    return bytes(out)


def load_reply(wav_path: str | Path | None, text: str | None) -> ReplyAudio:
    if wav_path is not None:
        return ReplyAudio(read_pcm_wav(wav_path), text or GENERIC_REPLY_TEXT, str(wav_path))
    if DEFAULT_REPLY_WAV.is_file():
        pcm = read_pcm_wav(DEFAULT_REPLY_WAV)
        return ReplyAudio(pcm, text or FIXTURE_REPLY_TEXT, str(DEFAULT_REPLY_WAV))
    return ReplyAudio(generated_voice(), text or GENERIC_REPLY_TEXT, "generated")


# The default cut of assistant audio into output chunks. OpenAI's `response.output_audio.delta`
# sizes are not documented and Meerkat forwards each delta unchanged (reference: corrections 5),
# so a client must take any size: most chunks are short, but a good share are 0.5-2 s long
# (48-192 KB of PCM, 64-256 KB of base64), well beyond a "200 ms at most" assumption.
DEFAULT_CHUNK_PROFILE = "40-240:0.6,500-2000:0.4"


@dataclass(frozen=True)
class ChunkBand:
    min_ms: int
    max_ms: int
    weight: float


def parse_chunk_profile(text: str) -> tuple[ChunkBand, ...]:
    """"MIN-MAX[:WEIGHT],..." (ms, relative weights, default 1) -> bands; ValueError if bad."""
    bands = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        span, _, weight = part.partition(":")
        lo, _, hi = span.partition("-")
        try:
            band = ChunkBand(int(lo), int(hi or lo), float(weight) if weight else 1.0)
        except ValueError:
            raise ValueError(f"chunk profile {text!r}: use MIN-MAX[:WEIGHT],... in ms") from None
        if not 1 <= band.min_ms <= band.max_ms or band.weight <= 0:
            raise ValueError(f"chunk profile {text!r}: need 1 <= MIN <= MAX and WEIGHT > 0")
        bands.append(band)
    if not bands:
        raise ValueError("chunk profile is empty")
    return tuple(bands)


def chunk_plan(total_bytes: int, bands: tuple[ChunkBand, ...], seed: int) -> list[tuple[int, int]]:
    """[(offset, length)] byte slices of the reply: each chunk's band is drawn by weight, its
    duration uniformly within the band, from a seeded generator (the same seed gives the same
    cut); the last piece is what remains."""
    rng = random.Random(seed)
    weights = [b.weight for b in bands]
    plan = []
    offset = 0
    while offset < total_bytes:
        band = rng.choices(bands, weights)[0]
        length = min(rng.randint(band.min_ms, band.max_ms) * wire.BYTES_PER_MS, total_bytes - offset)
        plan.append((offset, length))
        offset += length
    return plan


def text_deltas(text: str) -> list[str]:
    """Word-sized transcript deltas that join back to `text` exactly."""
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + [words[-1]] if words else []
