# meerkat_rt.turns, the turn and barge-in ledger, through the event orders real servers produce.
#
# Protocol v2 (Meerkat v0.6.2): after a cancel the server still forwards stale audio and text of
# the cancelled reply, then `interrupted` when the provider's response.done(cancelled) arrives,
# possibly after the next turn's turn_committed; explicit_commit text turns get no
# turn_committed at all; a response that finished before the cancel gets its turn_completed and
# no `interrupted`. The live surface tags audio with response ids, its audio lane may trail
# turn_completed, and a cancelled response ends with turn_completed{cancelled}.
# Whatever the order: no audio of an interrupted reply is taken after the barge-in, and the
# next reply is taken whole and reaches the app.
from meerkat_rt import turns as T

MP_HEAP = "160K"

V2 = True  # strict_order
LIVE = False


class Player:
    def __init__(self):
        self.item = None
        self.heard = 0
        self.playing = False
        self.done = False
        self.stops = 0

    def current_item(self):
        return self.item

    def heard_ms(self, item):
        return self.heard

    def finished(self, item):
        return self.done

    def stop_now(self):
        self.stops += 1
        self.playing = False

    def idle(self):
        return not self.playing

    def abort_chunk(self):
        pass


class Backend:
    def __init__(self, accept_truncate=True):
        self.calls = []
        self.accept = accept_truncate

    def interrupt(self):
        self.calls.append("interrupt")

    def commit(self):
        self.calls.append("commit")

    def truncate(self, item, index, ms):
        self.calls.append(("truncate", item, index, ms))
        return self.accept


class Link:
    def __init__(self, backend):
        self.backend = backend
        self.events = []
        self.open = True

    def emit(self, name, data):
        self.events.append((name, data))


class Ring:
    def __init__(self):
        self.held = False
        self.released = []
        self.captured = 0

    def peek(self):
        return -1

    def hold(self):
        self.held = True

    def release(self, preroll_ms=0):
        if self.held:
            self.released.append(preroll_ms)
        self.held = False


class Clock:
    def __init__(self):
        self.now = 1000

    def __call__(self):
        return self.now


def _turns(strict, mode="provider_managed", backend=None, duplex="half"):
    cfg = {"role": "primary", "turning_mode": mode, "tool_idle_ms": 60000, "audio": {"duplex": duplex, "preroll_ms": 300, "frame_ms": 40}}
    player = Player()
    ring = Ring()
    link = Link(backend or Backend())
    t = T.Turns(cfg, player, None, ring, link, strict)
    return t, player, ring, link


class _clock:
    # The ledger's clock, replaced for a test (module globals are looked up at call time).
    def __enter__(self):
        self.clock = Clock()
        self.real = T.ticks_ms
        T.ticks_ms = self.clock
        return self.clock

    def __exit__(self, *exc):
        T.ticks_ms = self.real


def _reply(t, player, item=None, resp=None, n=3):
    # n audio chunks of a reply, accepted and playing
    for _ in range(n):
        assert t.on_audio(item, 0, resp)
    player.item = item
    player.playing = True
    player.heard = 1500


def _end_reply(t, player, clock):
    player.playing = False
    clock.now += 1000
    t.check()
    return not t.reply


def test_v2_early_voice_barge_in_late_interrupted_after_the_next_commit():
    with _clock() as clock:
        t, player, ring, link = _turns(V2)
        t.turn_committed()
        assert ring.held  # half duplex: the mic is held for the reply
        _reply(t, player)
        t.vad_onset()  # the user says "no, stop" 300 ms in
        assert player.stops == 1 and link.backend.calls == ["interrupt"] and not ring.held
        assert ring.released == [300]  # the pre-roll goes out first
        # stale output of the cancelled reply, still forwarded by the server
        for _ in range(4):
            assert not t.on_audio(None, 0, None)
        assert not t.output()
        assert t.early() == 0  # DROP: not even decoded
        t.turn_committed()  # the user's new turn, before the server's `interrupted`
        assert not t.on_audio(None, 0, None)  # still the old reply's
        t.interrupted()  # late: the confirmation of our barge-in, not a new one
        assert player.stops == 1 and t.reply and ring.held
        assert t.early() == 1
        _reply(t, player)  # the next reply is taken whole
        assert t.output() and t.completed()
        assert _end_reply(t, player, clock)
        assert t.late_chunks == 5 and t.barge_ins == 1


def test_v2_late_interrupted_before_the_next_commit():
    t, player, ring, link = _turns(V2)
    t.turn_committed()
    _reply(t, player)
    t.vad_onset()
    assert not t.on_audio(None, 0, None)
    t.interrupted()
    t.turn_committed()
    assert t.on_audio(None, 0, None) and t.completed()


def test_v2_typed_barge_in_in_explicit_commit():
    # send_text during a reply: no turn_committed for text turns in explicit_commit, so nothing
    # but the server's `interrupted` separates the old reply's audio from the new one's.
    with _clock() as clock:
        t, player, ring, link = _turns(V2, "explicit_commit")
        t.start_talking()
        t.stop_talking()  # nothing was sent: too short, no commit
        t.text_committed()  # a first typed turn
        _reply(t, player)
        t.user_text()  # typed over the reply
        t.text_committed()
        assert link.backend.calls == ["interrupt"] and player.stops == 1
        assert not t.on_audio(None, 0, None) and not t.output()
        t.interrupted()
        _reply(t, player)
        assert t.output() and t.completed()
        assert _end_reply(t, player, clock)
        assert [n for n, d in link.events].count("reply_done") == 1


def test_after_a_barge_in_nobody_spoke_the_mic_waits_for_the_echo_tail():
    for why in ("text", "api"):
        with _clock() as clock:
            t, player, ring, link = _turns(V2)
            t.turn_committed()
            _reply(t, player)
            t.user_text() if why == "text" else t.interrupt()
            clock.now += T.ECHO_TAIL_MS - 1
            t.check()
            assert ring.held and ring.released == [], why  # still the speaker's echo
            clock.now += 1
            t.check()
            assert not ring.held and ring.released == [0], why  # no pre-roll: it was echo too
    # A spoken barge-in opens at once, with the pre-roll: the user's first words.
    t, player, ring, link = _turns(V2)
    t.turn_committed()
    _reply(t, player)
    t.vad_onset()
    assert ring.released == [300]


class Vad:
    threshold = speaker = 0

    def __init__(self):
        self.relearns = 0

    def relearn(self):
        self.relearns += 1


class Capture:
    level = 0

    def __init__(self):
        self.vad = Vad()


def test_two_replies_cut_at_their_start_reset_the_echo_model():
    # A device that hears itself: each false barge-in's pre-roll (the reply's echo) is a turn for
    # the server, whose reply is cut again at its start. The second such cut in a row sends the
    # echo model to learn again from a more conservative coupling; a reply heard out, or cut late, does not.
    with _clock() as clock:
        t, player, ring, link = _turns(V2)
        cap = t.capture = Capture()
        # ms from the reply's first audio to the barge-in; relearns after it
        for ms, relearns in ((300, 0), (250, 1), (400, 2), (2500, 2), (300, 2)):
            t.turn_committed()
            _reply(t, player)
            clock.now += ms
            t.vad_onset()
            assert cap.vad.relearns == relearns, (ms, cap.vad.relearns)
            t.interrupted()  # the server confirms the cancel
        t.turn_committed()
        _reply(t, player)
        t.completed()
        assert _end_reply(t, player, clock)  # heard out: the next early cut is the first again
        t.turn_committed()
        _reply(t, player)
        clock.now += 200
        t.vad_onset()
        assert cap.vad.relearns == 2 and t.vad_resets == 2


def test_v2_typed_barge_in_in_provider_managed():
    # The synthetic turn events of a text turn go out before the stale deltas.
    t, player, ring, link = _turns(V2)
    t.turn_committed()
    _reply(t, player)
    t.user_text()
    # Nothing the mic held during the reply goes out, nor its echo tail: the server's VAD would
    # take it for a spoken turn and cancel the typed one's reply.
    assert ring.held and ring.released == []
    t.turn_committed()  # synthetic: turn_started, partial, final, turn_committed
    assert not t.on_audio(None, 0, None) and not t.output()
    t.interrupted()
    assert t.on_audio(None, 0, None) and t.completed()


def test_v2_barge_in_after_the_server_finished_expects_no_confirmation():
    t, player, ring, link = _turns(V2)
    t.turn_committed()
    _reply(t, player)
    assert t.completed()  # the server generated it all; the speaker is still playing
    t.vad_onset()
    assert not t.stale
    t.turn_committed()
    assert t.on_audio(None, 0, None) and t.completed()  # no `interrupted` will ever come


def test_v2_reply_that_finished_just_before_the_cancel_arrived():
    t, player, ring, link = _turns(V2)
    t.turn_committed()
    _reply(t, player)
    t.vad_onset()
    assert not t.completed()  # the old reply's own end: swallowed, and the window closes
    t.turn_committed()
    assert t.on_audio(None, 0, None) and t.completed()


def test_v2_server_interruption_stops_playback_without_a_window():
    t, player, ring, link = _turns(V2)
    t.turn_committed()
    _reply(t, player, "item_1")  # (the item_id extension)
    t._session.append("item_1")
    t.interrupted()  # the server cancelled it (preemption, server VAD)
    assert player.stops == 1 and not t.stale
    assert link.backend.calls == [("truncate", "item_1", 0, 1500)]  # the cursor, no interrupt
    assert not t.on_audio("item_1", 0, None)  # its late audio, by id
    assert t.on_audio("item_2", 0, None)  # audio after `interrupted` is the next reply's


def test_v2_with_item_ids_truncates_once_with_the_heard_cursor():
    t, player, ring, link = _turns(V2)
    t.turn_committed()
    _reply(t, player, "item_1", "resp_1")
    t.vad_onset()
    assert link.backend.calls == ["interrupt", ("truncate", "item_1", 0, 1500)]
    assert t.truncates == [("item_1", 1500)] and t.truncate_count == 1
    assert not t.on_audio("item_1", 0, "resp_1")
    t.interrupted()
    t.turn_committed()
    _reply(t, player, "item_2", "resp_2")
    player.item = "item_1"  # never twice for the same item
    t.interrupt()
    assert link.backend.calls.count(("truncate", "item_1", 0, 1500)) == 1


def test_a_truncate_the_backend_refuses_is_not_reported_as_sent():
    t, player, ring, link = _turns(V2, backend=Backend(accept_truncate=False))
    t.turn_committed()
    _reply(t, player, "item_1", "resp_1")
    t.vad_onset()
    assert t.truncates == [] and [d["audio_played_ms"] for n, d in link.events if n == "barge_in"] == [-1]


def test_live_barge_in_drops_the_stopped_response_by_id_even_after_its_completion():
    with _clock() as clock:
        t, player, ring, link = _turns(LIVE)
        assert t.output("resp_1", "item_1")  # announced on the control lane: the mic is held
        assert ring.held
        _reply(t, player, "item_1", "resp_1")
        t._session.append("item_1")
        t.vad_onset()
        assert link.backend.calls == ["interrupt", ("truncate", "item_1", 0, 1500)]
        assert t.early() == -1  # WAIT: a chunk is known only by the ids after its data
        t.interrupted("resp_1")  # turn_interrupted: our own
        assert not t.on_audio("item_1", 0, "resp_1")
        assert not t.completed("resp_1", True)  # turn_completed{cancelled}: not for the app
        assert not t.on_audio("item_1", 0, "resp_1")  # the lossy lane trails the control lane
        assert t.output("resp_2", "item_2")  # the next response, announced
        assert t.early() == 1 and t.assumed() == "item_2"
        _reply(t, player, "item_2", "resp_2")
        assert t.completed("resp_2")
        assert _end_reply(t, player, clock)
        assert t.late_chunks == 2


def test_live_audio_that_trails_its_turn_completed_does_not_hold_the_mic():
    with _clock() as clock:
        t, player, ring, link = _turns(LIVE)
        _reply(t, player, "item_1", "resp_1")
        assert t.completed("resp_1")
        assert _end_reply(t, player, clock)
        assert t.on_audio("item_1", 0, "resp_1")  # trailing audio of the completed response
        player.playing = True
        assert t.reply and t.reply_done  # held while it plays, not until a 30 s guard
        assert _end_reply(t, player, clock)


def test_live_server_interruption_truncates_without_asking_to_interrupt():
    t, player, ring, link = _turns(LIVE)
    _reply(t, player, "item_1", "resp_1")
    t._session.append("item_1")
    t.interrupted("resp_1")
    assert link.backend.calls == [("truncate", "item_1", 0, 1500)] and player.stops == 1
    assert not t.on_audio("item_1", 0, "resp_1") and t.on_audio("item_2", 0, "resp_2")


def test_full_duplex_never_holds_the_mic_for_a_reply():
    t, player, ring, link = _turns(LIVE, duplex="full")
    _reply(t, player, "item_1", "resp_1")
    assert t.reply and not ring.held


def test_a_reply_that_goes_quiet_releases_the_mic_after_30_s():
    with _clock() as clock:
        t, player, ring, link = _turns(V2)
        t.turn_committed()
        _reply(t, player)
        player.playing = False
        clock.now += 29000
        t.check()
        assert t.reply
        clock.now += 2000
        t.check()
        assert not t.reply and ring.released


def test_a_tool_call_that_never_completes_releases_the_mic():
    with _clock() as clock:
        t, player, ring, link = _turns(V2)
        t.turn_committed()
        _reply(t, player)
        t.tool_requested()
        player.playing = False
        clock.now += 45000
        t.check()
        assert t.reply  # tools get longer than plain silence
        clock.now += 16000
        t.check()
        assert not t.reply and ("error", {"code": "tool_timeout", "message": "no tool result within 60 s"}) in link.events


def test_a_cancel_the_server_never_confirms_ends_the_window():
    with _clock() as clock:
        t, player, ring, link = _turns(V2)
        t.turn_committed()
        _reply(t, player)
        t.vad_onset()
        clock.now += 9000
        t.check()
        assert not t.on_audio(None, 0, None)
        clock.now += 2000
        t.check()
        assert t.on_audio(None, 0, None)


def test_provider_reset_and_link_loss_forget_ids_and_windows():
    t, player, ring, link = _turns(LIVE)
    _reply(t, player, "item_1", "resp_1")
    t.vad_onset()
    t.provider_reset()
    assert not t.stale and t.on_audio("item_9", 0, "resp_9")
    t.link_lost()
    player.item = "item_9"
    t.interrupt()
    assert ("truncate", "item_9", 0, 1500) not in link.backend.calls  # not this session's item


def test_id_lists_are_bounded():
    t, player, ring, link = _turns(LIVE)
    for i in range(50):
        t.on_audio("item_%d" % i, 0, "resp_%d" % i)
        t._key = "resp_%d" % i
        t.reply = True
        t.barge_in("api")
    assert len(t._stopped) <= 8 and len(t._session) <= 8 and len(t._truncated) <= 8 and len(t.truncates) <= 4
    t.on_audio("x" * 500, 0, None)
    assert "x" * 500 not in t._session


def test_live_observations_naming_only_the_item_of_a_stopped_reply_are_late():
    t, player, ring, link = _turns(LIVE)
    assert t.output("resp_1", "item_1")
    _reply(t, player, "item_1", "resp_1")
    t.vad_onset()
    assert not t.output(None, "item_1")  # e.g. an item event without its response id
    assert t.stale and not ring.held  # the microphone stays open for the user


def test_the_guess_for_audio_that_streams_before_its_ids():
    # A big chunk streams into the player before its ids arrive: the guess must never be an
    # item that has ended (the new reply's audio would count as the old item's, and a
    # rename would give the new item the old one's audio: a cursor above what was heard).
    t, player, ring, link = _turns(V2)
    assert t.assumed() is T.PENDING  # the first reply: no item yet
    t.turn_committed()
    _reply(t, player, "item_1", "resp_1")
    assert t.assumed() == "item_1"  # the reply goes on: most likely its next chunk
    assert t.completed("resp_1")
    assert t.assumed() is T.PENDING  # item_1 is over: the next audio is someone else's
    t.turn_committed()
    _reply(t, player, "item_3", "resp_2")
    t.vad_onset()
    assert t.assumed() is T.PENDING  # stopped
    # A server without item ids (protocol v2 as Meerkat 0.6.2): anonymous, never PENDING
    # once its audio has shown it has none.
    t, player, ring, link = _turns(V2)
    t.turn_committed()
    _reply(t, player)
    assert t.assumed() is None
