# meerkat_rt.fast against straightforward reference computations. On the unix port this checks
# the viper versions, on CPython the pure-Python twins; both must give the same answers.
import binascii
import struct

from meerkat_rt import fast


def _pseudo_random_bytes(n, seed=12345):
    out = bytearray(n)
    x = seed
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out[i] = (x >> 16) & 0xFF
    return out


def test_implementation_matches_runtime():
    try:
        import micropython  # noqa: F401

        assert fast.IMPLEMENTATION == "viper"
    except ImportError:
        assert fast.IMPLEMENTATION == "python"


def test_b64_encode_matches_binascii_for_all_tail_lengths():
    for n in (0, 1, 2, 3, 4, 5, 6, 7, 960, 1920):
        src = _pseudo_random_bytes(n, n + 1)
        dst = bytearray(4 * (n // 3 + 1) + 6)
        k = fast.b64_encode(dst, 3, src, 0, n)
        assert bytes(dst[3 : 3 + k]) == binascii.b2a_base64(bytes(src), newline=False), n


def test_b64_decode_into_ring_wraps_and_validates():
    for n in (1, 2, 3, 4, 5, 6, 300):
        src = _pseudo_random_bytes(n, 7 * n)
        text = binascii.b2a_base64(bytes(src), newline=False)
        for cap, pos in ((n + 5, 0), (n + 5, n + 2), (7 + n, 6 + n)):
            ring = bytearray(cap)
            got = fast.b64_decode(ring, cap, pos, text, 0, len(text))
            assert got == n, (n, cap, pos, got)
            assert bytes(ring[(pos + i) % cap] for i in range(n)) == bytes(src), (n, cap, pos)
    bad = [b"abc", b"ab=c", b"a==b", b"a\\/b", b"ab c", b"====", b"A===", b"AB=\n"]
    for text in bad:
        assert fast.b64_decode(bytearray(8), 8, 0, text, 0, len(text)) == -1, text


def test_mask_copy_is_an_involution_with_phase():
    key = bytearray(b"\x8a\x01\xff\x37")
    src = _pseudo_random_bytes(103)
    masked = bytearray(110)
    # mask in three pieces with the running phase, as the uplink does
    fast.mask_copy(masked, 0, src, 0, 10, key, 0)
    fast.mask_copy(masked, 10, src, 10, 50, key, 10)
    fast.mask_copy(masked, 60, src, 60, 43, key, 60)
    for i in range(103):
        assert masked[i] == src[i] ^ key[i % 4], i
    back = bytearray(103)
    fast.mask_copy(back, 0, masked, 0, 103, key, 0)
    assert back == src


def test_copy_and_equal():
    buf = bytearray(b"0123456789")
    fast.copy(buf, 3, buf, 0, 5)  # overlapping move to the right
    assert buf == bytearray(b"0120123489")
    buf = bytearray(b"0123456789")
    fast.copy(buf, 0, buf, 3, 5)  # overlapping move to the left
    assert buf == bytearray(b"3456756789")
    assert fast.equal(b"xxabc", 2, b"abc", 0, 3)
    assert not fast.equal(b"abc", 0, b"abd", 0, 3)
    assert fast.equal(b"", 0, b"", 0, 0)


def _clamp(v):
    return max(-32768, min(32767, v))


def test_s32_to_s16_shift_and_clamp():
    values = [-(1 << 31), (1 << 31) - 1, 0, -1, 1, 5 << 16, -5 << 16, 123456789, -123456789]
    raw = struct.pack("<%di" % len(values), *values)
    for shift in (8, 12, 14, 16):
        out = bytearray(2 * len(values) + 4)
        fast.s32_to_s16(out, 4, raw, 0, len(values), shift)
        got = struct.unpack("<%dh" % len(values), bytes(out[4:]))
        assert list(got) == [_clamp(v >> shift) for v in values], shift


def test_mean_abs_highpass_and_scale():
    samples = [-32768, 32767, -1, 1, 100, -100, 2000, -2000]
    pcm = struct.pack("<%dh" % len(samples), *samples)
    assert fast.mean_abs(pcm, 0, len(samples)) == sum(abs(s) for s in samples) // len(samples)
    assert fast.mean_abs(pcm, 4, 2) == 1
    assert fast.mean_abs(pcm, 0, 0) == 0
    buf = bytearray(pcm)
    fast.scale(buf, 0, len(samples), 512)  # x2 with clamping
    assert list(struct.unpack("<%dh" % len(samples), bytes(buf))) == [_clamp(2 * s) for s in samples]
    # DC blocker: a constant input decays towards zero, state carries across calls.
    dc = bytearray(struct.pack("<480h", *([8000] * 480)))
    state = bytearray(4)
    fast.highpass(dc, 0, 240, state)
    fast.highpass(dc, 480, 240, state)
    out = struct.unpack("<480h", bytes(dc))
    assert out[0] == 8000 and abs(out[-1]) < 800, (out[0], out[-1])
    # After a sound, silence decays to exactly 0 on either side of zero (no stuck DC offset).
    for level in (-3000, 3000):
        buf = bytearray(struct.pack("<960h", *([level] * 10 + [0] * 950)))
        state = bytearray(4)
        fast.highpass(buf, 0, 960, state)
        assert struct.unpack("<960h", bytes(buf))[-1] == 0, level


def test_mix_adds_scaled_and_clamps():
    a = [0, 100, -100, 30000, -30000, 7]
    b = [256, -512, 1000, 20000, -20000, -7]
    for gain in (0, 26, 256, 512):
        dst = bytearray(struct.pack("<%dh" % len(a), *a))
        src = struct.pack("<2h%dh" % len(b), 9, 9, *b)
        fast.mix(dst, 0, src, 4, len(a), gain)
        got = list(struct.unpack("<%dh" % len(a), bytes(dst)))
        assert got == [_clamp(x + ((y * gain) >> 8)) for x, y in zip(a, b)], gain
