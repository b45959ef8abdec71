"""Non-audio messages up to max_message are parsed and delivered (issue 11: "Non-audio messages
over 3072 bytes are dropped") also while a reply is playing, when the player, the downlink and
the reply's audio are all in the heap: on the simulated board at 110 KB, both surfaces, with
max_message 4096 (the no-PSRAM default today, set here so that the test does not move with it).
The heap is fragmented then (its largest free block about 2.5 KB): json.loads alone cannot
decode it, the firmware's leanjson path must."""

from __future__ import annotations

import json

import pytest
from rig import device, opened, send_text, stats

from hostile import Hostile, audio_ev, ev, live_audio, obs, pcm, split

MAX_MESSAGE = 4096
FITS = MAX_MESSAGE - 100  # (the JSON around the text is under 100 bytes)


@pytest.mark.parametrize("surface", ["v2", "live"])
def test_a_message_just_under_max_message_is_delivered_while_a_reply_plays(tmp_path, surface):
    reply = pcm(3000, seed=91)
    unit = "y" * 50 + '\u00e9 "q"\n'  # escapes and \u sequences on the wire (json.dumps)
    big = unit * (FITS // (len(json.dumps(unit)) - 2))
    big += "y" * (FITS - len(json.dumps(big)))
    assert len(json.dumps(big)) == FITS

    async def script(c):
        await c.accept()
        f = await c.recv_text()
        await c.user_turn(f.text_input)
        rid, item = c.next_ids()
        if surface == "live":
            await c.send_json(obs("realtime_transcript", event={"type": "item_observed", "item_id": item,
                                                                "previous_item_id": None, "role": "assistant", "response_id": rid}))
        for i, chunk in enumerate(split(reply, 100)):
            await c.send_json(audio_ev(chunk) if surface == "v2" else live_audio(chunk, rid, item))
            if i == 10:  # a second into the reply
                await c.send_json(ev("input_transcript_final", text=big) if surface == "v2" else obs("user_transcript_final", text=big))

    def outcome():
        if [e for e in dev.events("input_transcript_final") if e["text"] == big]:
            return "delivered"
        if [line for line in dev.logs() if "dropped" in line]:
            return "dropped"
        return None

    with Hostile.running(surface) as srv:
        srv.scripts = [script]
        with device(srv, tmp_path, max_message=MAX_MESSAGE) as (dev, rec):
            opened(dev)
            send_text(dev, srv, "tell me a story")
            got = dev.wait_for(outcome, 20, "the big transcript")
            s = stats(dev)
    print("outcome:", got)
    assert got == "delivered" and set(s["drops"].values()) == {0}, s["drops"]
