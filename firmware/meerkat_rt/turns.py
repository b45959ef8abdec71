# meerkat_rt.turns: the turn and barge-in ledger, the same on both server surfaces.
#
# It knows whose turn it is and what the user heard, and nothing about the wire: a backend tells
# it what the server said (a turn committed, output of a response, a response completed or
# interrupted, tool calls) and it asks the backend to interrupt, truncate or commit. It owns:
#   - the reply state and the half-duplex hold: the microphone is held from the moment a reply
#     is due (a committed user turn, or the first sign of output) until the reply has finished
#     playing or was interrupted; on protocol v2 any input after reply output began cancels the
#     reply, on the live surface the server's VAD would hear the speaker's echo as the user;
#   - barge-in: stop playback at once, interrupt, truncate with the honest cursor (what was
#     played and received, minus the margin) once per item, only for items whose ids the server
#     gave in the current provider session, never for an item that finished playing; then,
#     after a spoken barge-in, the microphone opens with the last preroll_ms of held audio, so
#     the server hears the start of the interrupting words (after a typed one, with none, once
#     the speaker's echo tail has passed);
#   - late output of an interrupted reply. The server confirms a cancel late: on protocol v2
#     `interrupted` comes only when the provider's cancelled response ends, after stale audio
#     and text deltas and possibly after the next turn's turn_committed; v2 keeps one strict
#     order, so everything before that confirmation (or the old reply's turn_completed, if it
#     finished first) is stale and everything after it is the next reply. The live surface
#     tags audio with response ids but its audio lane may trail its control events, so audio of
#     a stopped response is dropped by id, and a chunk is known to be new only by its ids or by
#     a new response announced on the control lane;
#   - push-to-talk (explicit_commit): nothing leaves the microphone while the button is up; on
#     release, what was captured is sent and then the turn committed;
#   - guards against lost end-of-turn events: a reply that goes quiet, a tool call that never
#     completes, a cancel that is never confirmed; none of them may hold the microphone forever.
from . import log
from .compat import const, ticks_diff, ticks_ms, ticks_us
from .playback import RETIRED

_REPLY_IDLE_MS = const(30000)  # a reply quiet this long without turn_completed is over
_STALE_MS = const(10000)  # a cancel not confirmed within this is taken as done
_TRAIL_MS = const(250)  # live: audio may trail turn_completed; the reply ends after this quiet
_MAX_ID = const(128)  # longer item ids are not kept (never truncated): memory stays bounded
_KEEP = const(8)
# After a barge-in the user did not speak (a typed turn, interrupt()), the speaker's last output
# still reaches the microphone: the echo path's delay (up to 110 ms, the detector's longest lag)
# plus the part of a frame captured before the stop. Streamed, that echo is a spoken turn to the
# server's VAD (40 ms above -40 dBFS is enough for the dev server's), which then cancels the
# reply to the typed one. The microphone stays held this long; what it captured is discarded.
ECHO_TAIL_MS = const(160)
# Two replies in a row cut by the VAD within their first second: most likely the device hears
# itself (an echo coupling learnt too low). Each such barge-in sends its pre-roll, the reply's
# echo, which the server takes for a turn, whose reply is cut again: a loop that never ends.
# The second one has the echo model learnt again from a coupling 6 dB above its last start
# (VAD.relearn()): a learnt coupling, or a board value, too low for this board's echo.
EARLY_MS = const(1000)

PENDING = "?"  # streamed audio whose item id has not arrived yet


class Turns:
    def __init__(self, cfg, player, capture, ring, link, strict_order=True):
        self.player = player
        self.capture = capture
        self.ring = ring
        self.link = link  # emit(name, data), backend, open
        self.primary = cfg["role"] == "primary"
        self.explicit = cfg["turning_mode"] == "explicit_commit"
        self.half_duplex = cfg["audio"]["duplex"] == "half"
        self.preroll_ms = cfg["audio"]["preroll_ms"]
        self.tool_idle_ms = cfg["tool_idle_ms"]  # the reply-idle guard while a tool call is pending
        self.frame_ms = cfg["audio"]["frame_ms"]
        # v2: one order for every frame, so "before the cancel is confirmed" means "stale";
        # live: audio of a response may arrive after its turn_completed.
        self.strict_order = strict_order
        self.reply = False  # an assistant turn is in progress (mic held)
        self.reply_done = False  # the server finished it (or nothing more will come)
        self._t_reply = self._t_audio = self._t_stale = 0
        self._t_deaf = 0
        self.deaf = False  # the echo tail after a barge-in the user did not speak (see above)
        self._early = False  # the last reply was cut by the VAD within EARLY_MS (see above)
        self._t_first = 0  # when the reply's first audio arrived (it plays from about then)
        self.vad_resets = 0
        self.tools = 0  # tool calls requested and not finished
        self.stale = False  # an interrupted reply may still send output (see above)
        self._item = None  # newest assistant item with audio
        self._anonymous = False  # that audio came without an item id
        self._index = 0  # its content_index
        self._key = None  # response (live) or item (v2 extension) of the newest output
        self._next_item = None  # live: item of a response announced before its audio
        self._done = None  # the last response the server completed
        self._finished = []  # items whose audio is complete (a newer item started)
        # Items of the current provider session: only these may be truncated (after a new
        # channel or a provider reconnect the server knows no older id, and a truncate naming
        # one ends the channel).
        self._session = []
        self._truncated = []
        self._stopped = []  # responses (or items) interrupted: their late output is dropped
        self.talking = not self.explicit  # push-to-talk state (always on in provider_managed)
        if self.explicit and ring is not None:
            ring.hold()
        self.staged_ms = 0  # audio sent since start_talking (explicit_commit)
        self.commit_seq = -1  # send frames up to this capture seq, then commit
        # counters
        self.barge_ins = 0
        self.truncates = []  # the last few (item_id, audio_played_ms) sent
        self.truncate_count = 0
        self.audio_received = 0  # PCM bytes taken by the player
        self.late_chunks = 0
        self.late_events = 0

    ####################################################################
    # The app's requests (the link checked that the channel can take them)

    def user_text(self):
        """A text turn is about to be sent: it talks over a reply in progress."""
        if self.reply:
            self.barge_in("text")

    def text_committed(self):
        """explicit_commit: the text was sent and committed: the reply is due."""
        self._start_reply()

    def start_talking(self):
        if self.reply:
            self.barge_in("talk")
        if self.ring is not None:
            self.ring.release(0)
        self.talking = True
        self.staged_ms = 0
        self.commit_seq = -1

    def stop_talking(self):
        if not self.talking:
            return
        self.talking = False
        ring = self.ring
        # Frames captured up to now still go out; the uplink commits after the last of them
        # (and the mic is held from there).
        self.commit_seq = ring.captured - 1 if ring is not None else -1
        if self.commit_seq < 0 or ring is None or ring.peek() < 0:
            self.commit()

    def interrupt(self):
        if self.reply:
            self.barge_in("api")
        else:
            self.link.backend.interrupt()  # a no-op for the server when idle

    def commit(self):
        """Push-to-talk: every frame of the turn is sent; commit it (>= 100 ms of audio)."""
        self.commit_seq = -1
        if self.staged_ms < 100:
            if self.ring is not None:
                self.ring.hold()  # the button is up: the microphone closes either way
            self.link.emit("error", {"code": "turn_too_short", "message": "%d ms of audio; at least 100 ms needed" % self.staged_ms})
            log.warn("turns", "turn not committed: %d ms of audio, the server needs 100 ms", self.staged_ms)
            return
        self.link.backend.commit()
        self._start_reply()

    def sent_audio(self, seq):
        """The uplink sent frame `seq`; True when the push-to-talk turn is now complete."""
        if self.explicit:
            self.staged_ms += self.frame_ms
        return self.commit_seq >= 0 and seq >= self.commit_seq

    ####################################################################
    # What the server said (called by the backend)

    def turn_committed(self):
        # provider_managed: the server's VAD ended the user's turn; the reply is due.
        if self.primary and not self.explicit and self.talking:
            self._start_reply()

    def output(self, response_id=None, item_id=None):
        """Text or an announced item of a response. False: late output of an interrupted
        reply (not for the app)."""
        key = response_id if response_id is not None else item_id
        if key is not None and key in self._stopped:
            self.late_events += 1
            return False
        if self.stale:
            if self.strict_order or key is None:
                self.late_events += 1
                return False
            # live: a response we did not stop is under way; the stopped one's audio has long
            # drained (it was queued before the user even finished speaking)
            self.stale = False
        self._t_reply = ticks_ms()
        if key is not None and key != self._key:
            self._new_response(key)
            if item_id is not None:
                self._next_item = item_id
        if self.primary and not self.reply:
            self._start_reply()
        return True

    def early(self):
        """At the start of an audio chunk's data, before its ids: WANT, DROP or WAIT."""
        if not self.stale:
            return 1
        return 0 if self.strict_order else -1

    def assumed(self):
        """The item id to count streamed audio under until the chunk's own ids arrive: the
        item of a response announced before its audio, else the item of the last audio while
        it goes on; PENDING (to be renamed when the ids come) after that item was stopped or
        finished, and before the first; None (anonymous) on a server without item ids."""
        if self._next_item is not None:
            return self._next_item
        if self._key is not None and self._key in self._stopped:
            return PENDING
        item = self._item
        if item is None:
            return None if self._anonymous else PENDING
        return PENDING if item in self._finished else item

    def on_audio(self, item_id, content_index, response_id):
        """An audio chunk's ids arrived; False drops it (late audio of an interrupted reply)."""
        key = response_id if response_id is not None else item_id
        if key is not None and key in self._stopped:
            self.late_chunks += 1
            return False
        if self.stale:
            if self.strict_order or key is None:
                self.late_chunks += 1
                return False
            self.stale = False  # live: audio of a response we did not stop
        if self.primary and not self.reply:
            self._start_reply()  # reply audio is about to play: the mic must be held now
            if key is not None and key == self._done:
                self.reply_done = True  # audio that trailed its response's turn_completed
        now = ticks_ms()
        self._t_reply = self._t_audio = now
        if not self._t_first:
            self._t_first = now or 1
        if key is not None and key != self._key:
            self._new_response(key)
        self._next_item = None  # the newest response's audio is here: its ids are known
        self._anonymous = item_id is None  # (protocol v2 as Meerkat 0.6.2 sends it)
        if item_id != self._item:
            if self._item is not None:
                _remember(self._finished, self._item)
            self._item = item_id
            if item_id is not None and len(item_id) <= _MAX_ID:
                _remember(self._session, item_id)
            self._index = content_index
        return True

    def audio_done(self, nbytes):
        self.audio_received = (self.audio_received + nbytes) & 0x3FFFFFFF  # a small int on the ESP32

    def stale_played(self):
        # Streamed audio turned out to be late after all (its ids came at its end): silence.
        self.player.stop_now()

    def completed(self, response_id=None, cancelled=False):
        """The server ended a response. False: it was an interrupted one (not for the app)."""
        key = response_id
        if cancelled or (key is not None and key in self._stopped):
            if key is not None and key == self._key:
                self.reply_done = True
            self.late_events += 1
            return False
        if self.stale:
            if self.strict_order or key is None:
                # v2: the old reply finished before our cancel reached the server (nothing
                # was cancelled, no `interrupted` will come); what follows is the next reply
                self.stale = False
                self.late_events += 1
                return False
            self.stale = False
        self.reply_done = True
        self.tools = 0
        self._done = key
        if self._item is not None:
            _remember(self._finished, self._item)
        return True

    def interrupted(self, response_id=None):
        """The server says a response was cancelled (the app is told either way)."""
        key = response_id
        if key is not None and key in self._stopped:
            return  # the confirmation of our own barge-in
        if self.stale:
            # Ours too: on v2 this is the end of the stale output; on live the response that
            # was cancelled may be one whose output we had not seen yet.
            if key is not None:
                _remember(self._stopped, key)
            if self.strict_order:
                self.stale = False
            return
        if self.reply and self.primary:
            if key is not None and key != self._key:
                _remember(self._stopped, key)
            self.barge_in("server")

    def tool_requested(self):
        self.tools += 1
        self._t_reply = ticks_ms()
        if self._item is not None:
            _remember(self._finished, self._item)  # its response ended in a tool call

    def tool_finished(self):
        self._t_reply = ticks_ms()
        if self.tools:
            self.tools -= 1

    def provider_reset(self):
        """v2: the server's provider session is being re-established: the reply in progress
        dies with the old one, and so do its item ids."""
        self._session = []
        self._stopped = []
        self.stale = False
        self.reply_done = True

    def link_lost(self):
        # The socket is gone: whatever the server was doing for us is lost with it. Audio
        # already in the player keeps playing; mic frames stay in the ring for the next channel
        # if it is still the user's turn (the ring drops the oldest when full, counted).
        self._session = []
        self._stopped = []
        self.stale = False
        self._key = self._next_item = None
        self.player.abort_chunk()  # a chunk cut by the drop: its tentative audio is void
        if self.reply:
            self.reply_done = True
        if self.commit_seq >= 0:
            # Push-to-talk was committing: part of the turn went to the dead channel, and the
            # new one has none of it. Say so; the user speaks again.
            self.commit_seq = -1
            self.link.emit("error", {"code": "turn_lost", "message": "the link dropped before the turn was committed"})
        if self.explicit and not self.talking and self.ring is not None:
            self.ring.hold()

    ####################################################################
    # Local: the microphone's VAD and the passing of time (called by the pump)

    def vad_onset(self):
        if self.reply and self.primary and self.talking and self.link.open:
            self.barge_in("vad")

    def check(self):
        now = ticks_ms()
        if self.deaf and ticks_diff(now, self._t_deaf) >= ECHO_TAIL_MS:
            self.deaf = False
            if not self.reply:
                self._listen(0)
        if self.stale and not self.tools and ticks_diff(now, self._t_stale) > _STALE_MS:
            log.warn("turns", "the server never confirmed the interruption: taking it as done")
            self.stale = False
        # The reply is over when the server said so and the speaker has played everything.
        if not self.reply or not self.player.idle():
            return
        if not self.reply_done:
            limit = self.tool_idle_ms if self.tools else _REPLY_IDLE_MS
            if ticks_diff(now, self._t_reply) <= limit:
                return
            if self.tools:
                log.warn("turns", "a tool call did not complete within %d s: listening again", limit // 1000)
                self.link.emit("error", {"code": "tool_timeout", "message": "no tool result within %d s" % (limit // 1000)})
                self.tools = 0
            else:
                log.warn("turns", "the reply went quiet without turn_completed: listening again")
            self.reply_done = True
        if ticks_diff(now, self._t_audio) < _TRAIL_MS:
            return
        self.reply = False
        self._early = False
        self._listen(0)
        self.link.emit("reply_done", {"item_id": self._item})

    ####################################################################

    def _new_response(self, key):
        self._key = key
        self._next_item = None
        self.tools = 0  # a new response: the tool calls before it have ended

    def _start_reply(self):
        self.deaf = False  # held from now on anyway
        self._t_first = 0
        self.reply = True
        self.reply_done = False
        self._t_reply = ticks_ms()
        if self.ring is not None and self.half_duplex:
            self.ring.hold()

    def _listen(self, preroll_ms):
        if self.ring is not None and self.talking:
            self.ring.release(preroll_ms)

    def barge_in(self, why):
        """Stop the reply now: vad (the user spoke), text, talk (push-to-talk), api, or server
        (the server interrupted it: nothing to ask for, only the cursor to report)."""
        player = self.player
        item = player.current_item()
        if item is None or item is PENDING or item is RETIRED:
            item = self._item
        heard = -1
        if (
            item is not None
            and item in self._session
            and item not in self._truncated
            and not (item in self._finished and player.finished(item))
        ):
            heard = player.heard_ms(item)  # before the stop: it flushes what was queued
        player.stop_now()
        backend = self.link.backend
        if why != "server":
            backend.interrupt()
        if heard >= 0:
            if backend.truncate(item, self._index, heard):
                _remember(self._truncated, item)
                _remember(self.truncates, (item, heard), 4)
                self.truncate_count += 1
            else:
                heard = -1
        # Everything that names the stopped reply: its response (or item, v2) and its items,
        # since some observations carry only one of them.
        for key in (self._key, self._item, self._next_item):
            if key is not None:
                _remember(self._stopped, key)
        if why != "server" and not self.reply_done:
            # The server's response may still be running: its output is stale until the
            # server confirms the cancel (or finishes the response first).
            self.stale = True
            self._t_stale = ticks_ms()
        self.reply = False
        self.barge_ins += 1
        ev = {"reason": why, "item_id": item, "audio_played_ms": heard, "t_us": ticks_us()}
        cap = self.capture
        if why == "vad" and cap is not None and cap.vad is not None:
            # What the detector saw: for tuning vad_sensitivity and the echo coupling.
            ev["mic_level"] = cap.level
            ev["threshold"] = cap.vad.threshold
            ev["speaker_level"] = cap.vad.speaker
            early = not self._t_first or ticks_diff(ticks_ms(), self._t_first) < EARLY_MS
            if early and self._early:
                cap.vad.relearn()
                self.vad_resets += 1
                log.warn("turns", "two replies cut by the VAD at their start: the echo model starts again, 6 dB more conservative")
            self._early = early
        self.link.emit("barge_in", ev)
        log.info("turns", "barge-in (%s): item %s heard %d ms", why, log.esc(item) if item else "-", heard)
        # The pre-roll carries the start of the words that made the detector fire; for any
        # other reason what the mic held during the reply is only its echo, which the server's
        # VAD would take for a new spoken turn (and cancel the reply to the typed one).
        if why == "vad":
            self._listen(self.preroll_ms)
        elif why == "text" or why == "api":
            # Nobody is speaking: the echo tail goes too (check() opens the mic after it).
            if self.ring is not None and self.talking:
                self.ring.hold()
            self.deaf = True
            self._t_deaf = ticks_ms()
        else:
            self._listen(0)


def _remember(lst, item, keep=_KEEP):
    # A tiny bounded "set" of recent ids.
    if item not in lst:
        while len(lst) >= keep:
            lst.pop(0)
        lst.append(item)
