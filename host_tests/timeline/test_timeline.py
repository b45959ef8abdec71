"""The timeline picture: the data it is drawn from (parsed from trace lines) and the PNG, from a
hand-written trace, and from the simulated board's conversation with the speaker's truth.
(The picture itself was looked at by eye; these tests check what it is made of.)"""

from __future__ import annotations

import json

from harness import conversation

from meerkat_tools import timeline
from meerkat_tools.sim import cli

CAPTURE = """\
MicroPython v1.28.0 on 2026-04-06; ESP32 module with ESP32
>>> import meerkat_rt; meerkat_rt.run()
~tb 5 20 1
I app: channel open
~ts 20 100 300 0 0 0 1 1 0 0
~te 25 state open
~ts 40 2000 300 0 0 0 2 2 0 0
~te 41 turn_committed
~ts 60 50 900 700 8000 1 3 2 0 0
--> ~te 61 turn_started
~ts 80 50 900 700 8000 1 4 2 0 1
~ts garbage
~ts 100 5000 900 700 8000 0 5 3 1 1
~te 101 barge_in vad item_7 2444 5000 900 700
~tx 101 item_7 2560
~te 102 barge_in api item_8 -1 -1 -1 -1
~te 130 assistant_transcript_truncated item_7 2444
~tb 0 20 1
~ts 20 1 1 0 0 0 0 0 0 0
"""


def test_parse_picks_trace_lines_out_of_a_console_capture(tmp_path):
    runs = timeline.parse(CAPTURE.splitlines())
    assert len(runs) == 2  # a second ~tb: the board was reset
    run = runs[0]
    assert run.period_ms == 20 and run.n == 5 and run.bad_lines == 1
    assert run.samples["mic"] == [100, 2000, 50, 50, 5000]
    assert run.samples["dropped"][-1] == 1 and run.samples["held"] == [0, 0, 1, 1, 0]
    names = [name for _, name, _ in run.events]
    assert names == ["state", "turn_committed", "turn_started", "barge_in", "barge_in", "assistant_transcript_truncated"]
    (t,) = run.truncates()  # the api barge-in sent no truncate (cursor -1)
    assert (t.t_ms, t.item, t.cursor_ms, t.true_ms, t.reason) == (101, "item_7", 2444, 2560, "vad")
    assert [b["reason"] for b in run.barge_ins()] == ["vad", "api"]
    s = run.summary()
    assert s["frames"] == {"captured": 5, "sent": 3, "dropped": 1, "discarded": 1}
    assert s["held_ms"] == 40
    path = tmp_path / "c.log"
    path.write_text(CAPTURE)
    assert timeline.load(path).n == 1 and timeline.load(path, 0).n == 5


def test_ticks_wrap_is_undone():
    lines = ["~tb 536870000 20 1", "~ts 536870900 1 1 0 0 0 0 0 0 0", "~ts -536870900 1 1 0 0 0 1 0 0 0"]
    run = timeline.parse(lines)[0]
    t0, t1 = run.samples["t"]
    assert t1 - t0 == (1 << 30) - 2 * 536870900


def test_draw_writes_a_png_of_the_requested_size(tmp_path):
    run = timeline.parse(CAPTURE.splitlines())[0]
    out = timeline.draw(run, tmp_path / "t.png", width_px=1200, height_px=800)
    assert timeline.png_size(out) == (1200, 800)


def test_the_command_line(tmp_path, capsys):
    log = tmp_path / "capture.log"
    log.write_text(CAPTURE)
    assert timeline.main([str(log), str(tmp_path / "x.png"), "--run", "0", "--json", "--size", "800x600"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["truncates"][0]["true_ms"] == 2560
    assert timeline.png_size(tmp_path / "x.png") == (800, 600)
    (tmp_path / "none.log").write_text("I app: channel open\n")
    assert timeline.main([str(tmp_path / "none.log"), str(tmp_path / "y.png")]) == 1
    assert "trace_ms" in capsys.readouterr().err


def test_simulated_conversation_truncate_against_the_speakers_truth(tmp_path):
    """The board interrupts the reply after a few seconds of it (the app API: deterministic, no
    VAD involved); the trace's truncate point holds the cursor sent and what the fake speaker
    really played of the item, and the cursor never claims more than was played (the margin
    below it, in fact)."""
    with conversation(tmp_path, surface="live", server={"item_ids": True}, trace_ms=20) as (srv, dev, _rec):
        dev.wait_event("state", 30, where=lambda s: s == "open")
        dev.send("send_text", text="what is the weather in Lisbon?")
        dev.wait_event("output_text_delta", 30)

        def playing_ms():  # trace samples (20 ms each) with the speaker playing
            return 20 * sum(1 for l in list(dev.lines) if str(l.get("raw", "")).startswith("~ts") and l["raw"].split()[5] != "0")

        dev.wait_for(lambda: playing_ms() >= 2000, 30, "two seconds of the reply playing")
        dev.send("interrupt")
        bi = dev.wait_event("barge_in", 10)
        dev.wait_event("assistant_transcript_truncated", 10)
        summary = dev.stop()
    assert summary and summary["state"] == "closed"
    lines = [str(l["raw"]) for l in dev.lines if str(l.get("raw", "")).startswith("~t")]
    run = timeline.parse(lines)[-1]
    (tr,) = run.truncates()
    assert tr.reason == "api" and tr.item == bi["item_id"] and tr.cursor_ms == bi["audio_played_ms"] > 0
    assert tr.true_ms is not None
    assert tr.true_ms >= tr.cursor_ms + 100  # audio.margin_ms: the cursor errs low, never high
    names = {name for _, name, _ in run.events}
    assert {"state", "barge_in", "assistant_transcript_truncated"} <= names
    assert max(run.samples["spk"]) > 0 and max(run.samples["held"]) == 1
    out = timeline.draw(run, tmp_path / "conv.png")
    assert timeline.png_size(out) == (1600, 1000)


def test_meerkat_sim_timeline(tmp_path, capsys):
    """meerkat-sim --timeline: the demo without a barge-in, the picture and the trace written."""
    png, log = tmp_path / "demo.png", tmp_path / "demo.log"
    rc = cli.main(["--timeline", str(png), "--trace-out", str(log), "--barge-in-at-ms", "-1", "--json",
                   "--speaker-out", str(tmp_path / "spk.wav")])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert timeline.png_size(png) == (1600, 1000)
    run = timeline.load(log)
    names = [name for _, name, _ in run.events]
    assert "input_transcript_final" in names and "turn_completed" in names and "reply_done" in names
    assert names[-1] == "state" and run.events[-1][2] == ["closed"]
    assert run.summary()["frames"]["sent"] > 0 and not run.truncates()
