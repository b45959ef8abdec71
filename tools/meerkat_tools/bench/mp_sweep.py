# The barge-in sweep's runner: the firmware's capture path, VAD and player on the simulated
# board, in virtual time (faster than real time), one run per spec entry. Runs on the
# MicroPython unix port and on CPython alike (meerkat-sweep starts it; the results are the same
# on both, bit for bit, when the fast helpers agree):
#
#   micropython -X heapsize=220K mp_sweep.py spec.json      (MICROPYPATH: firmware, fakes, here)
#
# spec: {"fixtures": dir, "boards": dir, "runs": [run, ...]}; every run prints one JSON line.
# A run (all keys are set by meerkat_tools.bench.sweep):
#   board, speaker_mode, sensitivity, coupling_db (null: the board's echo_coupling_db)
#   reply, reply_db, reply_offset_ms, reply_ms   what the server sends (looped), how loud, how long
#   lead_ms                                       room sound before the reply starts
#   user, user_db, inject_at_ms, onset_ms          the interruption (null: none), when its file
#                                                  starts (after the reply's first sample) and
#                                                  where in the file the speech starts
#   echo_db, echo_delay_ms, echo_tail              speaker to microphone (simworld)
#   noise, noise_db, noise_offset_ms               background noise (simworld)
#   seed, step_ms, stalls                          the pump: a poll every 1..step_ms ms, and
#                                                  [every_ms, max_ms] stalls (GC, TLS, Wi-Fi)
#   window_ms                                      how long after the true onset a decision counts
#   cpu, no_vad                                    the CPU pass: time capture.poll (with the VAD,
#                                                  or without it), then the VAD alone on the
#                                                  levels it saw, and what that allocated
#   trace                                          print every block the VAD saw ("T ..." lines)
#
# The loop does what the channel's pump does, in its order: capture.poll, take the VAD event
# (an onset while the reply plays is a barge-in: heard_ms of the item, then stop_now), the
# speaker's poll, then the downlink (200 ms chunks, base64, as fast as the player takes them).
# Ground truth is the fakes': the world index of the interruption's first sample, the samples
# the fake speaker clocked out, the last non-zero sample it played.
import gc
import json
import sys
import time

import simworld
from meerkat_rt import board as boards
from meerkat_rt import fast, log
from meerkat_rt.capture import Capture
from meerkat_rt.compat import ticks_diff, ticks_us
from meerkat_rt.playback import Player
from meerkat_rt.ring import FrameRing
from meerkat_rt.vad import ONSET, VAD
from wavfile import open_wav

log.sink = lambda line: sys.stderr.write(line + "\n")  # stdout carries only the JSON lines

CHUNK = 4800  # bytes of PCM per downlink chunk: 100 ms
FRAME_MS = 40


class Rand:
    """A small LCG: the same sequence on both runtimes."""

    def __init__(self, seed):
        self.x = (seed * 2654435761 + 12345) & 0x7FFFFFFF

    def __call__(self, n):
        self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
        return (self.x >> 8) % n


class Reply:
    """The server's reply: a WAV looped from an offset, scaled, sent as base64 chunks as fast
    as the player takes them; a new item every time the file wraps."""

    def __init__(self, player, path, db, offset_ms, total_ms):
        self.p = player
        self.f, _, _, _, self.size = open_wav(path)
        self.base = self.f.tell()
        self.pos = (offset_ms * 48) % self.size & ~1
        self.f.seek(self.base + self.pos)
        self.left = total_ms * 48
        self.gain = int(256 * 10 ** (db / 20) + 0.5)
        self.pcm = bytearray(CHUNK)
        self.b64 = bytearray(CHUNK * 4 // 3 + 4)
        self.item = 0
        self.fed = 0  # bytes committed so far
        self.starts = {"r0": 0}  # item id -> bytes committed before it (items follow each other)

    def item_id(self):
        return "r%d" % self.item

    def poll(self):
        p = self.p
        if not self.left or p.space() < CHUNK:
            return False
        want = min(CHUNK, self.left)
        n = 0
        wrapped = False
        while n < want:
            k = self.f.readinto(memoryview(self.pcm)[n:want]) or 0
            k = min(k, self.size - self.pos)
            n += k
            self.pos += k
            if self.pos >= self.size or not k:
                self.f.seek(self.base)
                self.pos = 0
                wrapped = True
        if self.gain != 256:
            fast.scale(self.pcm, 0, n >> 1, self.gain)
        k = fast.b64_encode(self.b64, 0, self.pcm, 0, n)
        p.begin_chunk()
        p.feed_b64(self.b64, 0, k)
        p.commit_chunk(self.item_id(), 0)
        self.left -= n
        self.fed += n
        if wrapped:
            self.item += 1
            self.starts[self.item_id()] = self.fed
        return True

    def truth_ms(self, item, played):
        # What the fake speaker clocked out of this item: items are contiguous in its stream.
        s = self.starts.get(item, 0)
        e = self.starts.get("r%d" % (int(item[1:]) + 1), self.fed)
        return (min(max(played - s, 0), e - s)) // 48

    def close(self):
        self.f.close()


def _wire(b, player, sensitivity, coupling_db, with_vad=True):
    # The app's construction (firmware/meerkat_rt/app.py), on the fakes.
    mic = b["mic"]
    ring = FrameRing(b["ring_ms"] // FRAME_MS, FRAME_MS * 48)
    vad = None
    if with_vad:
        vad = VAD(sensitivity=sensitivity, coupling_db=b["echo_coupling_db"] if coupling_db is None else coupling_db)
    if hasattr(player, "level"):  # the speaker's history by wall time (issue 15 onwards)
        cap = Capture(boards.make_mic(b), ring, vad, bits=mic["bits"], shift=mic["shift"], highpass=mic["highpass"],
                      speaker=player)
    else:
        cap = Capture(boards.make_mic(b), ring, vad, bits=mic["bits"], shift=mic["shift"], highpass=mic["highpass"],
                      speaker_level=player.level_now)
    return ring, vad, cap


def run(fix, bdir, r):
    b = boards.load(bdir + "/" + r["board"] + ".json")
    mic = b["mic"]
    spk_cfg = b["speaker"]
    user = r.get("user")
    w = simworld.configure(
        clock="virtual", track_sound=True, mic_dma_frames=256,
        raw_shift=mic["shift"] if mic["bits"] == 32 else 16,  # 0 dB net: echo_db means what it says
        echo_db=r["echo_db"], echo_delay_ms=r["echo_delay_ms"], echo_tail=r.get("echo_tail"),
        inject_wav=fix + "/" + user if user else None, inject_at_ms=r.get("inject_at_ms", 0),
        inject_db=r.get("user_db", 0),
        noise_wav=fix + "/" + r["noise"] if r.get("noise") else None, noise_db=r.get("noise_db", 0),
        noise_offset_ms=r.get("noise_offset_ms", 0),
    )
    spk = boards.make_speaker(b)
    p = Player(spk, bytearray(b["playback_ms"] * 48), ibuf=spk_cfg["ibuf"], mode=r["speaker_mode"],
               block_ms=spk_cfg["block_ms"], gain_db=spk_cfg["gain_db"], margin_ms=0,
               reinit=boards.speaker_kwargs(b) if spk_cfg["flush"] else None)
    p.clock = simworld.ticks_ms
    ring, vad, cap = _wire(b, p, r["sensitivity"], r.get("coupling_db"), not r.get("no_vad"))
    timing = r.get("cpu")  # the CPU pass: "poll" times capture.poll, "replay" records the
    poll_us = 0  # levels the VAD saw and times VAD.update alone on them
    if timing == "replay":
        from array import array

        rec_mic = array("H", bytes(2 * (r["reply_ms"] // 10 + 600)))
        rec_spk = array("H", bytes(len(rec_mic) * 2))
        nrec = [0]
        if vad is not None:
            update = vad.update

            def recorded(mic, speaker):
                i = nrec[0]
                if i < len(rec_mic):
                    rec_mic[i] = mic
                    rec_spk[i] = speaker
                    nrec[0] = i + 1
                return update(mic, speaker)

            vad.update = recorded
    trace = None
    if r.get("trace"):
        # Every block the VAD saw, as a line "T ms mic speaker threshold evidence coupling env
        # floor event lag" (ms: the block's end, after the reply's first sample), for tuning.
        trace = True
        update = vad.update

        def traced(mic, speaker):
            ev = update(mic, speaker)
            print("T", (w.now() - w.spk_start) // 24 if w.spk_start >= 0 else -1, mic, speaker, vad.threshold,
                  getattr(vad, "evidence", 0), vad.coupling, getattr(vad, "env", 0), vad.floor, ev, getattr(vad, "lag", -1))
            return ev

        vad.update = traced
    reply = Reply(p, fix + "/" + r["reply"], r["reply_db"], r["reply_offset_ms"], r["reply_ms"])
    rnd = Rand(r["seed"])
    step_max = r["step_ms"]
    every, stall_max = r["stalls"]
    next_stall = rnd(2 * every) if every else -1
    lead = r["lead_ms"]
    window = r["window_ms"]
    out = {"id": r["id"], "detected": False, "false_onsets": [], "latency_ms": None}
    truth_g = -1
    started = False  # the reply's first chunk is in
    playing = False  # the channel's _reply: from the first chunk until it has played out
    stopped = False
    t_stop = -1
    t = 0
    t_end = -1
    while True:
        step = 1 + rnd(step_max)
        if next_stall >= 0 and t >= next_stall:
            step += 1 + rnd(stall_max)
            next_stall = t + every // 2 + rnd(every)
        simworld.advance_ms(step)
        t += step
        now = simworld.ticks_ms()
        if truth_g < 0 and w.spk_start >= 0 and user:
            truth_g = w.spk_start + r["inject_at_ms"] * 24 + int(r["onset_ms"] * 24 + 0.5)
        if timing == "poll":
            t_us = ticks_us()
            cap.poll(now)
            poll_us += ticks_diff(ticks_us(), t_us)
        else:
            cap.poll(now)
        ev = cap.take_vad_event()
        if ev == ONSET and playing and not stopped:
            rel = None if w.spk_start < 0 else (w.now() - w.spk_start) // 24
            if truth_g >= 0 and w.now() >= truth_g:
                simworld.service()
                item = p.current_item()
                truth = reply.truth_ms(item, spk.played)
                heard = p.heard_ms(item)
                p.stop_now()
                stopped = True
                t_stop = t
                out["detected"] = w.now() - truth_g <= window * 24
                out["latency_ms"] = (w.now() - truth_g) * 10 // 24 / 10
                out["cursor_ms"] = heard
                out["truth_ms"] = truth
                out["threshold"] = vad.threshold
                out["mic_level"] = cap.level
                out["speaker_level"] = vad.speaker
            else:
                out["false_onsets"].append(rel)
                if user:  # the reply would stop here: the interruption never gets its chance
                    p.stop_now()
                    stopped = True
                    t_stop = t
        p.poll()
        if t >= lead and reply.poll():
            started = playing = True
        if playing and not reply.left and p.idle():
            playing = False
        if stopped and t - t_stop >= 200:
            break
        if user and truth_g >= 0 and not stopped and w.now() >= truth_g + (window + 100) * 24:
            break
        if not user and started and not playing:
            if t_end < 0:
                t_end = t
            if t - t_end >= 300:  # the echo and the VAD's hangover are over
                break
        if t > lead + r["reply_ms"] + window + 5000:
            out["error"] = "run did not end"
            break
    simworld.service()
    if truth_g >= 0 and out["detected"]:
        out["silence_ms"] = max(0, w.last_sound - truth_g) * 10 // 24 / 10
    out["reply_played_ms"] = (spk.played // 48) if not user else (
        max(0, min(truth_g, w.now()) - w.spk_start) // 24 if truth_g >= 0 else 0)
    out["coupling"] = getattr(vad, "coupling", None)
    if hasattr(vad, "lag"):
        out["lag"] = vad.lag
        out["lag_dev"] = [v >> 4 for v in vad._ldev]  # per lag, log units (see vad._lags)
    if timing:
        out["poll_us"] = poll_us
        out["blocks"] = cap.blocks
        if timing == "replay" and vad is not None:
            # The detector alone: the same levels through a fresh VAD, timed in a tight loop.
            v = VAD(sensitivity=r["sensitivity"], coupling_db=b["echo_coupling_db"] if r.get("coupling_db") is None else r["coupling_db"])
            n = nrec[0]
            best = 1 << 30
            for _ in range(3):  # a fresh VAD each time, the fastest pass counts
                u = VAD(sensitivity=r["sensitivity"], coupling_db=b["echo_coupling_db"] if r.get("coupling_db") is None else r["coupling_db"]).update
                gc.collect()
                t_us = ticks_us()
                for i in range(n):
                    u(rec_mic[i], rec_spk[i])
                best = min(best, ticks_diff(ticks_us(), t_us))
            out["vad_us"] = best
            out["vad_blocks"] = n
            if hasattr(p, "level"):  # the speaker history lookup Capture makes per block
                now = simworld.ticks_ms()
                best = 1 << 30
                for _ in range(3):
                    t_us = ticks_us()
                    for i in range(n):
                        p.level(now - 10 - (i % 16) * 10, 10)
                    best = min(best, ticks_diff(ticks_us(), t_us))
                out["level_us"] = best
            if hasattr(gc, "mem_alloc"):
                gc.collect()
                gc.disable()
                a = gc.mem_alloc()  # type: ignore[attr-defined]
                for i in range(n):
                    u(rec_mic[i], rec_spk[i])
                out["vad_alloc_bytes"] = gc.mem_alloc() - a  # type: ignore[attr-defined]
                gc.enable()
    out["underruns"] = p.underruns
    out["overruns"] = cap.i2s.overruns
    reply.close()
    w.close()
    return out


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    fix = spec["fixtures"]
    bdir = spec["boards"]
    for r in spec["runs"]:
        t0 = time.ticks_us() if hasattr(time, "ticks_us") else 0  # type: ignore[attr-defined]
        res = run(fix, bdir, r)
        if hasattr(time, "ticks_us"):
            res["wall_ms"] = time.ticks_diff(time.ticks_us(), t0) // 1000  # type: ignore[attr-defined]
        print(json.dumps(res))
        gc.collect()


main()
