"""Non-audio messages up to max_message are parsed and delivered (issue 11: "Non-audio messages
over 3072 bytes are dropped") also while a reply is playing, when the player, the downlink and
the reply's audio are all in the heap: on the simulated board at 110 KB, both surfaces."""

from __future__ import annotations

import pytest
from rig import device, max_message, opened, send_text, stats

from hostile import Hostile, audio_ev, ev, live_audio, obs, pcm, split


def _transcript(surface, text):
    return ev("input_transcript_final", text=text) if surface == "v2" else obs("user_transcript_final", text=text)


@pytest.mark.parametrize("surface", [
    "v2",
    pytest.param("live", marks=pytest.mark.xfail(strict=True, reason=(
        "firmware: on the live surface at 110 KB a non-audio message of about 3 KB or more that arrives while "
        "a reply plays is dropped as malformed, 'frame does not fit in memory when decoded' (json.loads "
        "raises MemoryError), although max_message is 4096; alone (no reply playing) it is delivered"))),
])
def test_a_message_just_under_max_message_is_delivered_while_a_reply_plays(tmp_path, surface):
    reply = pcm(3000, seed=91)

    async def script(c):
        await c.accept()
        await c.send_json(_transcript(surface, "x" * 40000))  # oversized: the board logs its max_message
        fits = await c.signalled("fits")
        f = await c.recv_text()
        await c.user_turn(f.text_input)
        rid, item = c.next_ids()
        if surface == "live":
            await c.send_json(obs("realtime_transcript", event={"type": "item_observed", "item_id": item,
                                                                "previous_item_id": None, "role": "assistant", "response_id": rid}))
        for i, chunk in enumerate(split(reply, 100)):
            await c.send_json(audio_ev(chunk) if surface == "v2" else live_audio(chunk, rid, item))
            if i == 10:  # a second into the reply
                await c.send_json(_transcript(surface, "y" * fits))

    with Hostile.running(surface) as srv:
        srv.scripts = [script]
        with device(srv, tmp_path) as (dev, rec):
            limit = max_message(dev)
            srv.signal("fits", limit - 100)  # (the JSON around the text is under 100 bytes)
            opened(dev)
            send_text(dev, srv, "tell me a story")
            dev.wait_for(lambda: [e for e in dev.events("input_transcript_final") if e["text"] == "y" * (limit - 100)]
                         or [line for line in dev.logs() if "dropped (malformed)" in line], 20, "the big transcript")
            s = stats(dev)
    assert {k: v for k, v in s["drops"].items() if v} == {"oversized": 1}, s["drops"]
