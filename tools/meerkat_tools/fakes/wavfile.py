# wavfile: read and write the header of a PCM WAV file, so the samples can be streamed from and
# to files in small blocks (a whole file never fits in a 110 KB heap). Used by the simulated
# board's fake I2S (simworld) and the host tools; the device package has no WAV files to read.
import struct


def open_wav(path):
    """Open a PCM WAV file; returns (file positioned at the first sample, rate, channels,
    bits, data bytes). Raises ValueError naming the file when it is not one."""
    f = open(path, "rb")
    fmt = None
    h = f.read(12)
    while len(h) == 12 and h[0:4] == b"RIFF" and h[8:12] == b"WAVE":
        c = f.read(8)
        if len(c) < 8:
            break
        size = struct.unpack("<I", c[4:8])[0]
        if c[0:4] == b"data":
            if fmt is None or fmt[0] != 1:
                break
            return f, fmt[2], fmt[1], fmt[5], size
        if c[0:4] == b"fmt " and size >= 16:
            fmt = struct.unpack("<HHIIHH", f.read(16))
            size -= 16
        f.seek(size + (size & 1), 1)
    f.close()
    raise ValueError("%s: not a PCM WAV file" % path)


def header(nbytes, rate=24000, channels=1, bits=16):
    """The 44-byte header of a PCM WAV file holding nbytes of samples."""
    block = channels * bits // 8
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + nbytes, b"WAVE", b"fmt ", 16, 1, channels, rate, rate * block, block, bits, b"data", nbytes
    )
