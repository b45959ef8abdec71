"""The send path under memory pressure: 30 s of 40 ms audio frames through the client on the
unix port at -X heapsize=110K, every frame checked by the server; and the bytes allocated per
sent and per received frame in steady state (printed, and required to be zero)."""

from __future__ import annotations


FRAMES = 750  # 30 s of 40 ms frames


def test_30s_of_audio_frames_arrive_intact(client, peers):
    cid = client.cid("mem")
    r = client.run("sc_mem", "stream", n=FRAMES, url=peers.url("ws", f"/mem?id={cid}"), timeout=120)
    assert r["reply"] == {"frames": FRAMES, "bad": 0, "first_bad": None}, r
    assert r["frames_out"] == FRAMES + 2  # the audio, "done", the close
    print(f"\n{client.runtime}: {FRAMES} frames in {r['ms']} ms; heap free before "
          f"{r['mem_free_before']}, after {r['mem_free_after']}")


def test_30s_of_audio_frames_over_tls(client, peers):
    # Partial TLS writes: a write that returned "try again" is retried with the same data.
    cid = client.cid("memtls")
    r = client.run("sc_mem", "stream", n=FRAMES, ca=peers.certs["ca_der"],
                   url=peers.url("wss", f"/mem?id={cid}"), timeout=120)
    assert r["reply"] == {"frames": FRAMES, "bad": 0, "first_bad": None}, r
    print(f"\n{client.runtime} over TLS: {FRAMES} frames in {r['ms']} ms; heap free before "
          f"{r['mem_free_before']}, after {r['mem_free_after']}")


def test_no_allocation_per_frame_on_the_unix_port(mp_client, peers):
    r = mp_client.run("sc_mem", "alloc", n=200, sink_url=peers.url("ws", "/sink"),
                      flood_url=peers.url("ws", "/flood?n=220&size=2620"), timeout=120)
    print(f"\nunix port, steady state: {r['send_bytes']} bytes allocated for {r['sent_frames']} sent frames, "
          f"{r['recv_bytes']} bytes for {r['received_frames']} received frames")
    assert r["received_frames"] == 200
    assert r["send_bytes"] == 0, r
    assert r["recv_bytes"] == 0, r
