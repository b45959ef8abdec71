# meerkat_rt.ring: the uplink ring, fixed slots of encoded frames with a send cursor.
#
# Capture puts each PCM frame straight into the next slot, in the form the server surface sends
# it (the slot codec): base64 text for protocol v2 (audio inside JSON), raw PCM for the live
# surface (binary WebSocket frames). The uplink sends slots in order from slot_buffer (no copy,
# no per-frame object). Slot metadata lives in preallocated arrays. A frame of N PCM bytes is
# 4N/3 base64 characters; N must be a multiple of 6 (whole samples and whole base64 quads, so no
# '=' padding and consecutive frames concatenate cleanly).
#
# Counting, exact at every moment: captured == sent + dropped + discarded + pending.
#   dropped:   overwritten while due to be sent (the network fell behind; capture never waits)
#   discarded: thrown away on purpose (overwritten while held, release(), discard_pending())
#   pending:   in the ring, not sent yet (held or due)
# The uplink must copy a slot out (ws.put) and call mark_sent() in the same poll: a push in
# between may overwrite the oldest slot.
from array import array

from . import fast


B64 = "base64"
PCM = "pcm"


def slot_bytes(frame_bytes, codec):
    """Bytes one slot takes for frames of frame_bytes PCM bytes."""
    return frame_bytes * 4 // 3 if codec == B64 else frame_bytes


class FrameRing:
    def __init__(self, slots, frame_bytes, buf=None, codec=B64):
        # buf: optionally the slot storage, preallocated (slots * slot_bytes(...)) by a caller
        # that allocates its big buffers first, before the heap fragments. A ring allocated
        # for base64 is big enough for raw PCM too (set_codec switches before streaming).
        if frame_bytes % 6 or slots < 2:
            raise ValueError("ring: frame_bytes must be a multiple of 6 and slots >= 2")
        self.slots = slots
        self.frame_bytes = frame_bytes
        self.frame_ms = frame_bytes // 48  # 24 kHz mono 16-bit: 48 bytes per ms
        self.codec = codec
        self.slot_len = slot_bytes(frame_bytes, codec)
        self.slot_buffer = buf if buf is not None else bytearray(slots * self.slot_len)
        if len(self.slot_buffer) < slots * self.slot_len:
            raise ValueError("ring: buf holds fewer than %d slots" % slots)
        self._seq = array("i", bytes(4 * slots))
        self._time = array("i", bytes(4 * slots))
        self._head = 0  # oldest pending slot
        self.held = False
        self.captured = self.sent = self.dropped = self.discarded = self.pending = 0

    def push_pcm(self, pcm, off, t_ms):
        """Encode one frame (frame_bytes of pcm from off) into the next slot; returns the slot."""
        if self.pending == self.slots:  # full: the oldest goes
            self._drop_oldest(1)
        i = (self._head + self.pending) % self.slots
        if self.codec == B64:
            fast.b64_encode(self.slot_buffer, i * self.slot_len, pcm, off, self.frame_bytes)
        else:
            fast.copy(self.slot_buffer, i * self.slot_len, pcm, off, self.frame_bytes)
        self._seq[i] = self.captured  # seq stays a small int for 2**31 frames (2.7 years)
        self._time[i] = t_ms
        self.captured += 1
        self.pending += 1
        return i

    def _drop_oldest(self, n):
        self._head = (self._head + n) % self.slots
        self.pending -= n
        if self.held:
            self.discarded += n
        else:
            self.dropped += n

    def set_codec(self, codec):
        """Switch the slot codec (the server surface became known). Pending frames, captured
        while it was being found, are re-encoded in place, in their slots: nothing is lost."""
        if codec == self.codec:
            return
        n = slot_bytes(self.frame_bytes, codec)
        if n * self.slots > len(self.slot_buffer):
            raise ValueError("ring: buffer too small for %s slots" % codec)
        old = self.slot_len
        buf = self.slot_buffer
        tmp = bytearray(old)  # one slot copied out first: a slot's new bytes overlap its old
        # Slot i moves from i * old to i * n. Growing, from the last slot down; shrinking, from
        # the first up: either way no slot is written over one not converted yet.
        order = range(self.slots - 1, -1, -1) if n > old else range(self.slots)
        for i in order:
            if (i - self._head) % self.slots >= self.pending:
                continue  # not pending: nothing to keep
            fast.copy(tmp, 0, buf, i * old, old)
            if codec == B64:
                fast.b64_encode(buf, i * n, tmp, 0, old)
            else:
                fast.b64_decode(buf, len(buf), i * n, tmp, 0, old)
        self.codec = codec
        self.slot_len = n

    def peek(self):
        """The slot to send next, or -1 (nothing pending, or held)."""
        return -1 if self.held or not self.pending else self._head

    def mark_sent(self):
        if self.pending and not self.held:
            self._head = (self._head + 1) % self.slots
            self.pending -= 1
            self.sent += 1

    def slot_offset(self, i):
        return i * self.slot_len

    def seq(self, i):
        return self._seq[i]

    def time(self, i):
        return self._time[i]

    def hold(self):
        """Gate the microphone: pending and new frames stay in the ring, unsent."""
        self.held = True

    def release(self, preroll_ms=0):
        """Ungate: keep the newest preroll_ms of held frames (rounded up to whole frames) for
        sending, discard the older ones. A no-op when not held."""
        keep = (preroll_ms + self.frame_ms - 1) // self.frame_ms
        if self.held and self.pending > keep:
            self._drop_oldest(self.pending - keep)  # counted as discarded: still held here
        self.held = False

    def discard_pending(self):
        held = self.held
        self.held = True
        self._drop_oldest(self.pending)
        self.held = held
