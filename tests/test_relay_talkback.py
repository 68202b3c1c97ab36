"""When the agent's audio goes into the call, in how many pieces, and when marks come back: pure, with time
passed in (FreeSWITCH's measured delays as the defaults: 200 ms to start a broadcast)."""

from __future__ import annotations

from controller.relay.talkback import Break, Broadcast, EchoMarks, SendAudio, TalkBack

RATE = 8000


def ms(n: int) -> bytes:
    """n milliseconds of agent audio at 8 kHz."""
    return bytes(2 * RATE * n // 1000)


def sent(actions) -> list:
    return [a.chunk for a in actions if isinstance(a, SendAudio)]


def test_a_reply_sent_faster_than_real_time_goes_as_one_chunk_once_the_agent_pauses():
    talk = TalkBack(RATE)
    for n in range(50):  # 2 s of speech in 40 ms pieces within 50 ms
        assert talk.audio(ms(40), now=n * 0.001) == []
    assert round(talk.next_deadline(), 6) == 0.109  # 60 ms after the last piece
    [send] = talk.due(0.109)
    assert isinstance(send, SendAudio) and send.chunk.seconds(RATE) == 2.0  # no hole anywhere in it


def test_a_real_time_agent_has_its_first_audio_played_within_200_ms():
    talk = TalkBack(RATE)
    actions = []
    for n in range(6):  # 40 ms every 40 ms: the agent never pauses
        actions += talk.audio(ms(40), now=n * 0.04)
    [send] = sent(actions)
    assert send.sent_at == 0.2 and send.seconds(RATE) == 0.24


def test_a_short_reply_goes_once_the_agent_pauses():
    talk = TalkBack(RATE)
    assert talk.audio(ms(120), now=0.0) == []
    assert talk.next_deadline() == 0.06
    assert talk.due(0.05) == []
    [send] = talk.due(0.06)
    assert send.chunk.seconds(RATE) == 0.12


def test_an_utterance_that_outruns_the_first_wait_needs_one_boundary():
    # The agent sends 3 s of speech in 40 ms pieces over 0.3 s (10x real time): the first chunk goes 200 ms
    # after its first audio; the switch plays it 200 ms after the broadcast; everything else goes as ONE
    # chunk, queued before the first ends.
    talk = TalkBack(RATE)
    chunks, now = [], 0.0
    for n in range(75):
        now = n * 0.004
        chunks += sent(talk.audio(ms(40), now))
    [first] = chunks
    assert first.seconds(RATE) == 2.04  # what had come by 0.2 s
    [broadcast] = talk.file_ready("/tmp/a_0.tmp.r8", now=0.31)
    assert isinstance(broadcast, Broadcast) and broadcast.chunk is first
    assert talk.playback_started("/tmp/a_0.tmp.r8", now=0.51) == []
    # The first chunk (2.04 s) ends at 2.55: the rest goes lead_s (0.1 s) before, at 2.45.
    assert round(talk.next_deadline(), 6) == 2.45
    assert talk.due(2.44) == []
    [rest] = sent(talk.due(2.45))
    assert rest.seconds(RATE) == 3.0 - first.seconds(RATE)
    assert talk.chunks_sent == 2


def test_a_real_time_agent_gets_chunks_that_grow():
    talk = TalkBack(RATE)
    durations, now, files = [], 0.0, 0
    for n in range(100):  # 4 s of speech, 40 ms every 40 ms
        now = n * 0.04
        for chunk in sent(talk.audio(ms(40), now)):
            durations.append(chunk.seconds(RATE))
            talk.file_ready(f"/tmp/f_{files}", now)
            talk.playback_started(f"/tmp/f_{files}", now + 0.2)
            files += 1
    assert durations[0] == 0.24 and len(durations) < 10  # far fewer boundaries than 100 pieces
    assert durations[1] > durations[0]


def test_a_mark_comes_back_only_once_the_audio_before_it_has_played():
    talk = TalkBack(RATE)
    talk.audio(ms(200), now=0.0)
    [send] = talk.due(0.06)
    assert talk.mark("reply-1", now=0.01) == []  # its audio is on its way
    talk.file_ready("/tmp/x_0", now=0.02)
    talk.playback_started("/tmp/x_0", now=0.22)
    assert talk.playback_stopped("/tmp/x_0", now=0.42) == [EchoMarks(("reply-1",))]


def test_a_mark_with_audio_waiting_sends_that_audio_at_once_and_rides_with_it():
    talk = TalkBack(RATE)
    assert talk.audio(ms(100), now=0.0) == []
    [send] = talk.mark("short", now=0.01)  # the reply is complete: no need to wait for a pause
    assert send.chunk.marks == ["short"] and send.chunk.seconds(RATE) == 0.1


def test_a_mark_with_nothing_to_play_comes_back_at_once():
    assert TalkBack(RATE).mark("idle", now=0.0) == [EchoMarks(("idle",))]


def test_clear_stops_what_plays_drops_what_waits_and_returns_the_pending_marks():
    talk = TalkBack(RATE)
    talk.audio(ms(200), now=0.0)
    talk.mark("m1", now=0.0)
    talk.file_ready("/tmp/c_0", now=0.01)
    talk.playback_started("/tmp/c_0", now=0.21)
    talk.audio(ms(500), now=0.22)  # held: the first still plays
    talk.mark("m2", now=0.23)
    assert talk.clear(now=0.25) == [Break(), EchoMarks(("m1", "m2"))]
    assert talk.pending == bytearray() and talk.next_deadline() is None
    assert talk.playback_stopped("/tmp/c_0", now=0.26) == []  # its mark went back with the clear


def test_a_chunk_cleared_before_its_file_came_is_never_broadcast():
    talk = TalkBack(RATE)
    talk.audio(ms(200), now=0.0)
    assert talk.clear(now=0.01) == []  # nothing was playing yet: no break needed
    assert talk.file_ready("/tmp/late_0", now=0.02) == []


def test_a_clear_between_a_chunks_streamaudio_and_its_play_never_plays_the_cleared_reply():
    from controller.relay.talkback import Broadcast

    talk = TalkBack(RATE)
    talk.audio(ms(300), now=0.0)
    [old] = sent(talk.due(0.06))  # streamAudio sent; its ::play not back yet
    talk.mark("old-reply", now=0.07)
    assert talk.clear(now=0.08) == [EchoMarks(("old-reply",))]  # nothing played yet: no break to send
    talk.audio(ms(200), now=0.1)
    [new] = sent(talk.due(0.16))
    talk.mark("new-reply", now=0.17)
    assert talk.file_ready("/tmp/u_0.tmp.r8", now=0.2) == []  # the cleared reply's file: not played
    [play] = talk.file_ready("/tmp/u_1.tmp.r8", now=0.21)
    assert isinstance(play, Broadcast) and play.chunk is new and new.file == "/tmp/u_1.tmp.r8"
    talk.playback_started("/tmp/u_1.tmp.r8", now=0.35)
    assert talk.playback_stopped("/tmp/u_1.tmp.r8", now=0.56) == [EchoMarks(("new-reply",))]


def test_a_chunk_the_module_never_got_is_not_waited_for_and_its_marks_come_back():
    talk = TalkBack(RATE)
    talk.audio(ms(100), now=0.0)
    [lost] = sent(talk.mark("first", now=0.001))  # a mark ends a reply: it goes at once
    assert talk.unsent(lost) == [EchoMarks(("first",))]
    talk.audio(ms(100), now=0.2)
    [next_chunk] = sent(talk.due(0.26))
    [play] = talk.file_ready("/tmp/u_0.tmp.r8", now=0.3)  # the module's first file is the next chunk's
    assert play.chunk is next_chunk


def test_the_agents_audio_waiting_to_be_played_is_bounded_and_the_rest_counted():
    from controller.relay.talkback import DroppedAudio

    talk = TalkBack(RATE, max_pending_s=2.0)
    actions = []
    for n in range(75):  # 3 s in 40 ms pieces, all at once: 1 s over the bound
        actions += talk.audio(ms(40), now=0.0)
    dropped = [a.seconds for a in actions if isinstance(a, DroppedAudio)]
    assert round(sum(dropped), 3) == 1.0 and len(talk.pending) == 2 * RATE * 2
