"""When the agent's audio goes into the call: one file_string chain per reply, written just in time, never
starved, broken once its speech has played. Pure, with time passed in (FreeSWITCH's measured delays as the
defaults: 130 ms to start a broadcast, 250 ms of lead before a file_string's first file)."""

from __future__ import annotations

from controller.relay.talkback import (CHAIN_FILES, Break, Broadcast, DroppedAudio, EchoMarks, SendAudio, TalkBack,
                                       chain_names)

RATE = 8000
DIR = "/tmp/166eb301-3ca5-4fc5-9751-d8ca093577dd"


def ms(n: int, value: int = 1) -> bytes:
    """n milliseconds of agent audio at 8 kHz (not silence, so speech and padding can be told apart)."""
    return bytes([value, 0]) * (RATE * n // 1000)


class Module:
    """The module and the switch as the schedule sees them: each streamAudio becomes the next file (::play at
    once), a broadcast chain opens its files in order as the play position reaches them."""

    def __init__(self, talk: TalkBack) -> None:
        self.talk = talk
        self.n = 0
        self.sent: list = []  # every piece, in order
        self.broadcasts: list[str] = []
        self.breaks: list[float] = []
        self.marks: list[tuple[float, tuple]] = []
        self.dropped: list[float] = []

    def apply(self, actions, now: float) -> None:
        for action in actions:
            if isinstance(action, SendAudio):
                self.sent.append(action.piece)
                file = f"{DIR}_{self.n}.tmp.r8"
                self.n += 1
                self.apply(self.talk.file_ready(file, now), now)
            elif isinstance(action, Broadcast):
                self.broadcasts.append(action.target)
            elif isinstance(action, Break):
                self.breaks.append(now)
            elif isinstance(action, EchoMarks):
                self.marks.append((now, action.names))
            elif isinstance(action, DroppedAudio):
                self.dropped.append(action.seconds)

    def run(self, until: float, agent=(), step: float = 0.01) -> None:
        """Time passes to `until`: the agent's (time, pcm) messages arrive, the schedule's deadlines fire."""
        agent = sorted(agent, key=lambda item: item[0])
        now = 0.0 if not hasattr(self, "now") else self.now
        while now <= until + 1e-9:
            while agent and agent[0][0] <= now + 1e-9:
                _, what = agent.pop(0)
                self.apply(self.talk.mark(what, now) if isinstance(what, str) else self.talk.audio(what, now), now)
            self.apply(self.talk.due(now), now)
            now = round(now + step, 6)
        self.now = now


def real_time(seconds: float, start: float = 0.0, piece_ms: int = 40) -> list:
    """A stock Pipecat bot: 40 ms pieces paced in real time."""
    return [(start + i * piece_ms / 1000, ms(piece_ms)) for i in range(int(seconds * 1000 / piece_ms))]


def test_the_chain_names_the_modules_files_from_the_first_one_on():
    assert chain_names(f"{DIR}_7.tmp.r8", 3) == [f"{DIR}_7.tmp.r8", f"{DIR}_8.tmp.r8", f"{DIR}_9.tmp.r8"]
    assert chain_names("/tmp/other.wav", 3) is None


def test_a_real_time_reply_is_one_chain_its_first_audio_sent_at_once_and_never_starved():
    talk = TalkBack(RATE)
    module = Module(talk)
    module.run(0.0, real_time(0.04))
    [first] = module.sent
    assert first.seconds(RATE) == 0.04  # the reply's first audio goes at once: latency first
    [target] = module.broadcasts
    assert target == "file_string://" + "!".join(f"{DIR}_{n}.tmp.r8" for n in range(CHAIN_FILES))
    module.run(4.0, real_time(4.0)[1:])
    chain = talk.chain
    # Written ahead of the play position all the while: the chain never runs into a missing name.
    heard_at = chain.heard_at
    assert abs(heard_at - 0.38) < 1e-6  # 130 ms to start, 250 ms of lead
    played_to = heard_at
    for piece in chain.pieces:
        played_to += piece.seconds(RATE)
    assert played_to > 4.0
    assert all(p.seconds(RATE) >= 0.2 for p in chain.pieces[1:-1])  # pieces grow: 128 of them last 25 s
    assert module.breaks == [] and len(module.broadcasts) == 1


def test_a_pause_mid_reply_is_fed_silence_and_the_reply_goes_on_in_the_same_chain():
    talk = TalkBack(RATE)
    module = Module(talk)
    module.run(3.0, real_time(1.0) + real_time(1.0, start=1.5))  # half a second of thought between sentences
    pieces = talk.chain.pieces
    kinds = [p.speech for p in pieces]
    gap = kinds.index(False)
    assert True in kinds[gap:]  # silence in the gap, then speech again
    assert len(module.broadcasts) == 1 and module.breaks == []
    speech = b"".join(p.pcm for p in pieces if p.speech)
    assert speech == ms(40) * 50  # every byte the agent sent, in order


def test_a_reply_ends_with_a_break_once_its_last_speech_has_played():
    talk = TalkBack(RATE)
    module = Module(talk)
    module.run(1.0, [(0.0, ms(40))] + [(0.01, ms(2000))])  # a reply sent at once: it plays long after it came
    chain = talk.chain
    assert chain.ending and not chain.pieces[-1].speech  # padded with silence: the break never races the end
    assert module.breaks == []
    last_speech = [p for p in chain.pieces if p.speech][-1]
    for piece in chain.pieces:  # the switch plays the files in turn
        module.apply(talk.file_closed(piece.file, 2.0), 2.0)
        if piece is last_speech:
            break
    assert module.breaks == [2.0]
    module.apply(talk.playback_stopped(chain.target, 2.05), 2.05)
    assert talk.chain is None


def test_without_the_switchs_file_events_the_break_comes_on_the_estimated_end():
    talk = TalkBack(RATE)
    module = Module(talk)
    module.run(4.0, [(0.0, ms(40))] + [(0.01, ms(2000))])
    [when] = module.breaks
    speech_end = 0.38 + 2.04  # heard from 0.38 s, 2.04 s of speech
    assert speech_end <= when <= speech_end + 0.3


def test_marks_come_back_when_their_audio_has_played_and_at_once_with_nothing_to_play():
    talk = TalkBack(RATE)
    module = Module(talk)
    assert talk.mark("nothing-pending", now=0.0) == [EchoMarks(("nothing-pending",))]
    module.run(0.5, real_time(0.4) + [(0.41, "end-of-sentence")])
    marked = [p for p in talk.chain.pieces if p.marks]
    assert [p.marks for p in marked] == [["end-of-sentence"]] and module.marks == []
    for piece in talk.chain.pieces:
        module.apply(talk.file_closed(piece.file, 1.0), 1.0)
        if piece is marked[0]:
            break
    assert module.marks == [(1.0, ("end-of-sentence",))]


def test_clear_breaks_at_once_gives_back_the_marks_and_nothing_cleared_ever_plays():
    talk = TalkBack(RATE)
    module = Module(talk)
    module.run(1.0, real_time(1.0) + [(0.5, "first-reply")])
    assert talk.clear(now=1.0) == [Break(), EchoMarks(("first-reply",))]
    # A piece the module had not named yet when the clear came: its ::play is consumed, not played.
    talk.audio(ms(300), now=1.1)
    [new_first] = [a.piece for a in talk.audio(b"", now=1.1) if isinstance(a, SendAudio)] or [talk.chain.pieces[0]]
    stale = talk.unnamed[0]
    assert stale is new_first
    module.apply(talk.file_ready(f"{DIR}_{module.n}.tmp.r8", 1.12), 1.12)
    assert len(module.broadcasts) == 2 and module.broadcasts[1].startswith(f"file_string://{DIR}_{module.n}.tmp")


def test_a_piece_cleared_before_its_play_is_never_broadcast():
    talk = TalkBack(RATE)
    [send] = talk.audio(ms(100), now=0.0)  # sent to the module; its ::play not back yet
    talk.mark("gone", now=0.01)
    assert talk.clear(now=0.02) == [EchoMarks(("gone",))]  # nothing broadcast yet: nothing to break
    assert talk.file_ready(f"{DIR}_0.tmp.r8", now=0.03) == []  # its ::play: not played
    [again] = talk.audio(ms(100), now=0.1)
    assert [type(a) for a in talk.file_ready(f"{DIR}_1.tmp.r8", now=0.11)] == [Broadcast]
    assert again.piece is talk.chain.pieces[0] and send.piece is not again.piece


def test_a_reply_sent_all_at_once_goes_in_few_large_pieces():
    talk = TalkBack(RATE)
    module = Module(talk)
    module.run(12.0, [(0.001 * i, ms(40)) for i in range(250)])  # 10 s within a quarter second
    speech = [p for p in talk.chain.pieces if p.speech] if talk.chain else [p for p in module.sent if p.speech]
    assert b"".join(p.pcm for p in speech) == ms(40) * 250
    assert len(speech) <= 12 and len(module.broadcasts) == 1


def test_a_chain_that_is_full_ends_and_what_is_left_starts_the_next():
    talk = TalkBack(RATE, chain_files=4)
    module = Module(talk)
    module.run(3.0, real_time(3.0))
    first = talk.chain
    assert first.ending and len(first.pieces) == 4
    module.apply(talk.playback_stopped(first.target, 3.0), 3.0)
    assert talk.chain is not first and len(module.broadcasts) == 2


def test_a_restarted_stream_breaks_the_chain_its_names_no_longer_match():
    talk = TalkBack(RATE)
    talk.audio(ms(40), now=0.0)
    assert [type(a) for a in talk.file_ready(f"{DIR}_5.tmp.r8", now=0.01)] == [Broadcast]
    talk.audio(ms(400), now=0.02)
    actions = talk.file_ready(f"{DIR}_0.tmp.r8", now=0.03)  # the module counts from 0 again
    assert Break() in actions


def test_a_piece_the_module_never_got_ends_its_chain_and_its_marks_come_back():
    talk = TalkBack(RATE)
    [send] = talk.audio(ms(100), now=0.0)
    talk.file_ready(f"{DIR}_0.tmp.r8", now=0.01)
    [second] = talk.audio(ms(300), now=0.05)  # written ahead at once
    talk.mark("lost", now=0.06)
    assert talk.unsent(second.piece) == [Break(), EchoMarks(("lost",))]  # its stream was down
    assert talk.chain is None


def test_the_agents_audio_waiting_to_be_played_is_bounded_and_the_rest_counted():
    talk = TalkBack(RATE, max_pending_s=2.0, chain_files=1)
    talk.audio(ms(40), now=0.0)  # the first piece fills its (one-file) chain: the rest waits for the next
    actions = []
    for _ in range(75):  # 3 s more at once: 1 s over the bound
        actions += talk.audio(ms(40), now=0.0)
    dropped = [a.seconds for a in actions if isinstance(a, DroppedAudio)]
    assert round(sum(dropped), 3) >= 1.0 and len(talk.pending) <= 2 * RATE * 2


def test_the_first_files_open_corrects_the_estimate_the_lead_still_to_play():
    talk = TalkBack(RATE)
    [send] = talk.audio(ms(40), now=0.0)
    talk.file_ready(f"{DIR}_0.tmp.r8", now=0.01)
    assert abs(talk.chain.heard_at - 0.39) < 1e-9  # 130 ms to start + 250 ms of lead, estimated
    talk.file_opened(f"{DIR}_0.tmp.r8", now=0.2)  # the switch opened it later than estimated: its lead plays now
    assert abs(talk.chain.heard_at - 0.45) < 1e-9
