# meerkat_rt._fast_py: pure-Python twins of _fast_viper, same signatures, same results.
#
# Used on CPython (host tests, the simulator's cpython runtime, tools) and on any MicroPython
# build without the viper emitter. Correctness over speed, but nothing quadratic: CPython runs
# the audio path in real time through these.
import binascii
import struct

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_CHARS = frozenset(_B64_ALPHABET)


def copy(dst, doff, src, soff, n):
    dst[doff : doff + n] = bytes(src[soff : soff + n])


def mask_copy(dst, doff, src, soff, n, key, phase):
    if n <= 0:
        return
    k = bytes(key[(phase + i) & 3] for i in range(4))
    reps = n // 4 + 1
    data = int.from_bytes(bytes(src[soff : soff + n]), "little")
    mask = int.from_bytes((k * reps)[:n], "little")
    dst[doff : doff + n] = (data ^ mask).to_bytes(n, "little")


def equal(a, aoff, b, boff, n):
    return bytes(a[aoff : aoff + n]) == bytes(b[boff : boff + n])


def b64_encode(dst, doff, src, soff, n):
    out = binascii.b2a_base64(bytes(src[soff : soff + n]), newline=False)
    dst[doff : doff + len(out)] = out
    return len(out)


def _canonical_b64(text):
    n = len(text)
    if n % 4:
        return False
    pad = 0
    if n and text[n - 1] == 61:
        pad = 2 if text[n - 2] == 61 else 1
    for i in range(n - pad):
        if text[i] not in _B64_CHARS:
            return False
    return True


def b64_decode(dst, dcap, dpos, src, soff, n):
    text = bytes(src[soff : soff + n])
    if not _canonical_b64(text):
        return -1
    raw = binascii.a2b_base64(text)
    k = len(raw)
    first = min(k, dcap - dpos)
    dst[dpos : dpos + first] = raw[:first]
    if first < k:
        dst[0 : k - first] = raw[first:]
    return k


def _samples(buf, off, nsamples):
    return struct.unpack_from("<%dh" % nsamples, buf, off)


def _clamp(v):
    return 32767 if v > 32767 else (-32768 if v < -32768 else v)


def s32_to_s16(dst, doff, src, soff, nsamples, shift):
    vals = struct.unpack_from("<%di" % nsamples, src, soff)
    struct.pack_into("<%dh" % nsamples, dst, doff, *[_clamp(v >> shift) for v in vals])


def mean_abs(buf, off, nsamples):
    if nsamples <= 0:
        return 0
    return sum(abs(v) for v in _samples(buf, off, nsamples)) // nsamples


def highpass(buf, off, nsamples, state):
    x1, y1 = struct.unpack_from("<hh", state, 0)
    out = []
    for x in _samples(buf, off, nsamples):
        t = 32440 * y1  # a*y[n-1] rounded towards zero: a floor would hold a negative y for ever
        y = _clamp(x - x1 + (t >> 15 if t >= 0 else -(-t >> 15)))
        out.append(y)
        x1 = x
        y1 = y
    struct.pack_into("<%dh" % nsamples, buf, off, *out)
    struct.pack_into("<hh", state, 0, x1, y1)


def scale(buf, off, nsamples, gain_q8):
    vals = [_clamp((v * gain_q8) >> 8) for v in _samples(buf, off, nsamples)]
    struct.pack_into("<%dh" % nsamples, buf, off, *vals)


def mix(dst, doff, src, soff, nsamples, gain_q8):
    a = _samples(dst, doff, nsamples)
    b = _samples(src, soff, nsamples)
    vals = [_clamp(x + ((y * gain_q8) >> 8)) for x, y in zip(a, b)]
    struct.pack_into("<%dh" % nsamples, dst, doff, *vals)
