# meerkat_rt._fast_viper: the hot-path byte and sample loops as viper code.
#
# Each function has a pure-Python twin with the same signature in _fast_py.py; meerkat_rt.fast
# picks this module where the viper emitter exists (ESP32, the unix port) and the twin elsewhere.
# Rules that keep these correct on every port:
#   - no allocation: callers pass buffers and offsets, never slices;
#   - 16-bit loads only: ptr32 loads are zero-extended machine words, which breaks signed
#     samples on the 64-bit unix port (reference/micropython-notes.md 1.10);
#   - the int16 sign is restored by hand (viper ints are machine words).
import micropython

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _decode_table():
    # 0..63 for alphabet bytes, 0x81 for '=', 0x80 for everything else (rejected).
    t = bytearray(b"\x80" * 256)
    for i in range(64):
        t[_B64_ALPHABET[i]] = i
    t[61] = 0x81
    return t


_B64_DECODE = _decode_table()


@micropython.viper
def copy(dst, doff: int, src, soff: int, n: int):
    d = ptr8(dst)
    s = ptr8(src)
    if doff > soff and src is dst:  # overlapping move to the right: copy backwards
        i = n - 1
        while i >= 0:
            d[doff + i] = s[soff + i]
            i -= 1
        return
    i = 0
    while i < n:
        d[doff + i] = s[soff + i]
        i += 1


@micropython.viper
def mask_copy(dst, doff: int, src, soff: int, n: int, key, phase: int):
    # WebSocket masking (RFC 6455 5.3): octet i of the payload is XORed with key[i % 4];
    # `phase` is the payload offset of src[soff], so a payload may be masked in pieces.
    d = ptr8(dst)
    s = ptr8(src)
    k = ptr8(key)
    i = 0
    while i < n:
        d[doff + i] = s[soff + i] ^ k[(phase + i) & 3]
        i += 1


@micropython.viper
def equal(a, aoff: int, b, boff: int, n: int) -> bool:
    p = ptr8(a)
    q = ptr8(b)
    i = 0
    while i < n:
        if p[aoff + i] != q[boff + i]:
            return False
        i += 1
    return True


@micropython.viper
def b64_encode(dst, doff: int, src, soff: int, n: int) -> int:
    # Standard alphabet with '=' padding; returns the number of characters written.
    d = ptr8(dst)
    s = ptr8(src)
    t = ptr8(_B64_ALPHABET)
    i = soff
    j = doff
    end = soff + n - (n % 3)
    while i < end:
        a = s[i]
        b = s[i + 1]
        c = s[i + 2]
        d[j] = t[a >> 2]
        d[j + 1] = t[((a & 3) << 4) | (b >> 4)]
        d[j + 2] = t[((b & 15) << 2) | (c >> 6)]
        d[j + 3] = t[c & 63]
        i += 3
        j += 4
    rest = n % 3
    if rest == 1:
        a = s[i]
        d[j] = t[a >> 2]
        d[j + 1] = t[(a & 3) << 4]
        d[j + 2] = 61
        d[j + 3] = 61
        j += 4
    elif rest == 2:
        a = s[i]
        b = s[i + 1]
        d[j] = t[a >> 2]
        d[j + 1] = t[((a & 3) << 4) | (b >> 4)]
        d[j + 2] = t[(b & 15) << 2]
        d[j + 3] = 61
        j += 4
    return j - doff


@micropython.viper
def b64_decode(dst, dcap: int, dpos: int, src, soff: int, n: int) -> int:
    # Decode src[soff:soff+n] into the ring dst (capacity dcap) starting at dpos, wrapping at
    # dcap. Returns the number of bytes written, or -1 if the text is not canonical base64
    # (bad character, bad length, padding not at the end). Nothing is written past what is
    # returned only when the text is valid; callers must treat -1 as "discard what was written".
    d = ptr8(dst)
    s = ptr8(src)
    t = ptr8(_B64_DECODE)
    if n % 4 != 0:
        return -1
    i = soff
    end = soff + n
    j = dpos
    out = 0
    while i < end:
        c0 = t[s[i]]
        c1 = t[s[i + 1]]
        c2 = t[s[i + 2]]
        c3 = t[s[i + 3]]
        if (c0 | c1 | c2 | c3) & 0x80:
            if i + 4 != end or (c0 | c1) & 0x80:
                return -1
            if c2 == 0x81 and c3 == 0x81:
                d[j] = (c0 << 2) | (c1 >> 4)
                return out + 1
            if (c2 & 0x80) == 0 and c3 == 0x81:
                d[j] = (c0 << 2) | (c1 >> 4)
                j += 1
                if j >= dcap:
                    j = 0
                d[j] = ((c1 & 15) << 4) | (c2 >> 2)
                return out + 2
            return -1
        d[j] = (c0 << 2) | (c1 >> 4)
        j += 1
        if j >= dcap:
            j = 0
        d[j] = ((c1 & 15) << 4) | (c2 >> 2)
        j += 1
        if j >= dcap:
            j = 0
        d[j] = ((c2 & 3) << 6) | c3
        j += 1
        if j >= dcap:
            j = 0
        out += 3
        i += 4
    return out


@micropython.viper
def s32_to_s16(dst, doff: int, src, soff: int, nsamples: int, shift: int):
    # 32-bit little-endian I2S slots to int16 with an arithmetic right shift and clamping.
    # A shift below 16 is digital gain (an INMP441 is quiet in the top 16 bits).
    d = ptr16(dst)
    s = ptr16(src)
    di = doff >> 1
    si = soff >> 1
    i = 0
    while i < nsamples:
        hi = int(s[si + 2 * i + 1])
        if hi & 0x8000:
            hi -= 0x10000
        v = ((hi << 16) | int(s[si + 2 * i])) >> shift
        if v > 32767:
            v = 32767
        elif v < -32768:
            v = -32768
        d[di + i] = v
        i += 1


@micropython.viper
def mean_abs(buf, off: int, nsamples: int) -> int:
    # Mean absolute amplitude of int16 samples: the VAD's energy measure. Sums stay below
    # 2**31 for frames up to 65536 samples, so this is exact on a 32-bit port.
    p = ptr16(buf)
    base = off >> 1
    total = 0
    i = 0
    while i < nsamples:
        v = int(p[base + i])
        if v & 0x8000:
            v = 0x10000 - v
        total += v
        i += 1
    if nsamples <= 0:
        return 0
    return total // nsamples


@micropython.viper
def highpass(buf, off: int, nsamples: int, state):
    # One-pole DC blocker y[n] = x[n] - x[n-1] + a*y[n-1] with a = 32440/32768 (about 40 Hz at
    # 24 kHz), in place on int16 samples. `state` is a 4-byte buffer holding x[n-1], y[n-1].
    p = ptr16(buf)
    st = ptr16(state)
    base = off >> 1
    x1 = int(st[0])
    if x1 & 0x8000:
        x1 -= 0x10000
    y1 = int(st[1])
    if y1 & 0x8000:
        y1 -= 0x10000
    i = 0
    while i < nsamples:
        x = int(p[base + i])
        if x & 0x8000:
            x -= 0x10000
        t = 32440 * y1  # rounded towards zero: a floor (>>) would hold a small negative y for ever
        if t >= 0:
            y = x - x1 + (t >> 15)
        else:
            y = x - x1 - ((0 - t) >> 15)
        if y > 32767:
            y = 32767
        elif y < -32768:
            y = -32768
        p[base + i] = y
        x1 = x
        y1 = y
        i += 1
    st[0] = x1
    st[1] = y1


@micropython.viper
def scale(buf, off: int, nsamples: int, gain_q8: int):
    # In-place gain on int16 samples, gain_q8/256, clamped (I2S.shift wraps instead).
    p = ptr16(buf)
    base = off >> 1
    i = 0
    while i < nsamples:
        v = int(p[base + i])
        if v & 0x8000:
            v -= 0x10000
        v = (v * gain_q8) >> 8
        if v > 32767:
            v = 32767
        elif v < -32768:
            v = -32768
        p[base + i] = v
        i += 1


@micropython.viper
def mix(dst, doff: int, src, soff: int, nsamples: int, gain_q8: int):
    # dst += src * gain_q8/256 on int16 samples, clamped: sums two signals (the simulator's
    # microphone: a WAV plus the speaker's echo) without a temporary buffer.
    d = ptr16(dst)
    s = ptr16(src)
    di = doff >> 1
    si = soff >> 1
    i = 0
    while i < nsamples:
        a = int(d[di + i])
        if a & 0x8000:
            a -= 0x10000
        b = int(s[si + i])
        if b & 0x8000:
            b -= 0x10000
        v = a + ((b * gain_q8) >> 8)
        if v > 32767:
            v = 32767
        elif v < -32768:
            v = -32768
        d[di + i] = v
        i += 1
