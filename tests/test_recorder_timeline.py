"""Where arriving audio belongs in a call's time, with an injected clock: silence only where audio was missing.

Each scenario is a sender that produces one 20 ms frame on the media clock (each frame's samples say which
frame it is) and a recorder that reads them at some arrival time: on time, with jitter, after a stall of its
own (the frames wait in the socket, then arrive in a burst), or not at all (a hole). The recording must come
out exactly as long as the call, every frame in its place, and silence listed only for the holes.
"""

from __future__ import annotations

import random
import wave
from datetime import datetime, timezone

import pytest

from controller.recorder.filenames import FilenameTemplate
from controller.recorder.recording import Recording, StreamSpec
from controller.recorder.timeline import Gap, Silence, Timeline

RATE = 8000
FRAME_S = 0.02
FRAME = 320  # bytes: 160 samples of 8 kHz mono
ORIGIN = 1000.0  # the clock when the stream connects: sample frame 0
UUID = "166eb301-3ca5-4fc5-9751-d8ca093577dd"


class Clock:
    def __init__(self) -> None:
        self.now = ORIGIN

    def __call__(self) -> float:
        return self.now


def payload(n: int) -> bytes:
    """Frame n of the call: its samples carry n, so a misplaced frame shows."""
    return (n % 30000 + 1).to_bytes(2, "little") * (FRAME // 2)


def frames_sent(start_s: float, end_s: float) -> list[tuple[float, int]]:
    """(when the frame is complete at the sender, frame number) for the audio between two call times."""
    first, last = round(start_s / FRAME_S), round(end_s / FRAME_S)
    return [(ORIGIN + (n + 1) * FRAME_S, n) for n in range(first, last)]


def stalled(sent, stall_from_s: float, stall_to_s: float):
    """The recorder reads nothing from `from` to `to`: the frames completed meanwhile arrive at `to`, in a burst."""
    first, end = round(stall_from_s / FRAME_S), round(stall_to_s / FRAME_S)
    return [(ORIGIN + stall_to_s if first <= n < end else t, n) for t, n in sent]


class Scenario:
    """Feeds arrivals into a Recording in time order, with the recorder's periodic tick every 0.25 s."""

    def __init__(self, tmp_path) -> None:
        self.clock = Clock()
        spec = StreamSpec(uuid=UUID, token="tok", rate=RATE, channels=1)
        self.recording = Recording.open(spec, tmp_path, FilenameTemplate("{uuid}.wav"), clock=self.clock,
                                        now=lambda: datetime(2026, 1, 1, tzinfo=timezone.utc))
        self.ticked = ORIGIN

    def advance(self, to: float) -> None:
        while self.ticked + 0.25 <= to:
            self.ticked += 0.25
            self.clock.now = self.ticked
            self.recording.tick()
        self.clock.now = to

    def arrive(self, arrivals) -> None:
        for t, n in sorted(arrivals, key=lambda a: a[0]):  # a stable sort: a burst keeps its order
            self.advance(t)
            self.recording.on_audio(payload(n))

    def detach(self, at_s: float) -> None:
        self.advance(ORIGIN + at_s)
        self.recording.detach("eof")

    def attach(self, at_s: float) -> None:
        self.advance(ORIGIN + at_s)
        self.recording.attach()

    def finish(self, call_end_s: float):
        self.advance(ORIGIN + call_end_s)
        self.recording.finish("client_close", end_at=ORIGIN + call_end_s)
        with wave.open(str(self.recording.path), "rb") as w:
            pcm = w.readframes(w.getnframes())
        gaps = [(g["start_frame"], g["frames"], g["cause"]) for g in self.recording.sidecar.gaps]
        return pcm, gaps


def audio(start_s: float, end_s: float) -> bytes:
    return b"".join(payload(n) for _, n in frames_sent(start_s, end_s))


def silence(seconds: float) -> bytes:
    return bytes(int(round(seconds * RATE)) * 2)


def test_jitter_inserts_nothing_and_moves_nothing(tmp_path):
    rng = random.Random(7)
    sent = frames_sent(0.0, 5.0)
    # Up to 80 ms late at random, and now and then 250 ms late with the next ones catching up behind it.
    arrivals, latest = [], 0.0
    for t, n in sent:
        latest = max(latest, t + rng.uniform(0, 0.08) + (0.25 if n % 50 == 10 else 0.0))  # TCP keeps order
        arrivals.append((latest, n))
    run = Scenario(tmp_path)
    run.arrive(arrivals)
    pcm, gaps = run.finish(5.0)
    assert gaps == [] and pcm == audio(0.0, 5.0)


@pytest.mark.parametrize("stall_s", [0.5, 2.0, 10.0])
def test_a_recorder_stall_then_a_burst_inserts_nothing(tmp_path, stall_s):
    run = Scenario(tmp_path)
    run.arrive(stalled(frames_sent(0.0, stall_s + 4.0), 1.0, 1.0 + stall_s))
    pcm, gaps = run.finish(stall_s + 4.0)
    assert gaps == [] and pcm == audio(0.0, stall_s + 4.0)  # as long as the call, every frame in its place


def test_a_real_hole_is_silence_of_exactly_its_length_where_it_was(tmp_path):
    run = Scenario(tmp_path)  # mixed audio: the switch played nothing from 2 s to 3 s
    run.arrive(frames_sent(0.0, 2.0) + frames_sent(3.0, 6.0))
    pcm, gaps = run.finish(6.0)
    assert gaps == [(16000, 8000, "no_audio")]
    assert pcm == audio(0.0, 2.0) + silence(1.0) + audio(3.0, 6.0)


def test_a_hole_during_a_stall_keeps_its_length_and_is_placed_where_the_stall_began(tmp_path):
    # The hole is 2-3 s; the recorder reads nothing from 1.5 to 3.5 s. The socket keeps no time, so where in
    # the burst the hole was cannot be known: its silence goes where the lateness began, and the WAV keeps
    # the call's length.
    run = Scenario(tmp_path)
    run.arrive(stalled(frames_sent(0.0, 2.0) + frames_sent(3.0, 6.0), 1.5, 3.5))
    pcm, gaps = run.finish(6.0)
    assert gaps == [(12000, 8000, "no_audio")]
    assert pcm == audio(0.0, 1.5) + silence(1.0) + audio(1.5, 2.0) + audio(3.0, 6.0)


def test_mixed_audio_only_while_the_switch_plays(tmp_path):
    # Extension 9999 in mixed mode: nothing for 0.5 s after the answer, a tone, a prompt, then silence
    # while it sleeps, until the hangup at 6 s.
    run = Scenario(tmp_path)
    run.arrive(frames_sent(0.5, 3.0))
    pcm, gaps = run.finish(6.0)
    assert gaps == [(0, 4000, "no_audio"), (24000, 24000, "tail")]
    assert pcm == silence(0.5) + audio(0.5, 3.0) + silence(3.0)


def test_pause_and_resume(tmp_path):
    run = Scenario(tmp_path)  # uuid_audio_stream pause at 1 s, resume at 4.5 s: no frames in between
    run.arrive(frames_sent(0.0, 1.0) + frames_sent(4.5, 6.0))
    pcm, gaps = run.finish(6.0)
    assert gaps == [(8000, 28000, "no_audio")]
    assert pcm == audio(0.0, 1.0) + silence(3.5) + audio(4.5, 6.0)


def test_a_drop_and_a_reconnect(tmp_path):
    run = Scenario(tmp_path)
    run.arrive(frames_sent(0.0, 2.0))
    run.detach(2.0)  # the TCP connection is lost at 2 s; the restarted stream connects at 2.6 s
    run.attach(2.6)
    run.arrive(frames_sent(2.7, 5.0))  # its first frame is complete 20 ms after 2.7 s
    pcm, gaps = run.finish(5.0)
    assert gaps == [(16000, 5600, "stream_lost")]
    assert pcm == audio(0.0, 2.0) + silence(0.7) + audio(2.7, 5.0)


def test_a_drop_after_a_quiet_spell_splits_the_silence_by_cause(tmp_path):
    run = Scenario(tmp_path)
    run.arrive(frames_sent(0.0, 1.0))  # then nothing played until the drop at 2 s
    run.detach(2.0)
    run.attach(2.5)
    run.arrive(frames_sent(2.5, 4.0))
    pcm, gaps = run.finish(4.0)
    assert gaps == [(8000, 8000, "no_audio"), (16000, 4000, "stream_lost")]
    assert pcm == audio(0.0, 1.0) + silence(1.5) + audio(2.5, 4.0)


def test_a_held_back_deficit_is_decided_by_the_tick_when_no_more_frames_come(tmp_path):
    run = Scenario(tmp_path)
    run.arrive(frames_sent(0.0, 1.0) + frames_sent(2.0, 2.1))  # a 1 s hole, then five frames, then nothing
    run.advance(ORIGIN + 4.0)
    assert run.recording.writer.sample_frames == 8000  # 1.98 s after the first late frame: still undecided
    run.advance(ORIGIN + 4.3)  # the look-ahead has passed: the tick decides it was a hole, without a frame
    assert run.recording.writer.sample_frames == 8000 + 8000 + 800
    pcm, gaps = run.finish(4.3)
    assert gaps == [(8000, 8000, "no_audio"), (16800, 17600, "tail")]


def test_the_timeline_holds_audio_only_while_a_deficit_is_undecided():
    timeline = Timeline(RATE, 2, origin=0.0, jitter_s=0.1, settle_s=2.0)
    assert timeline.place(0.02, b"a" * FRAME, written_bytes=0) == [b"a" * FRAME]
    assert timeline.place(1.04, b"b" * FRAME, written_bytes=FRAME) == []  # 1 s late: held
    assert timeline.place(1.06, b"c" * FRAME, written_bytes=FRAME) == []  # in time behind it: still a deficit
    assert timeline.settle(2.9) == []  # not 2 s without catching up yet
    assert timeline.settle(3.04) == [Silence(8000), b"b" * FRAME, b"c" * FRAME]


def test_a_burst_that_catches_up_releases_everything_without_silence():
    timeline = Timeline(RATE, 2, origin=0.0, jitter_s=0.1, settle_s=2.0)
    assert timeline.place(1.03, b"a" * FRAME, written_bytes=0) == []  # 1.01 s late: a stall, or a hole?
    burst = [timeline.place(1.03, bytes([n]) * FRAME, written_bytes=0) for n in range(46)]
    assert burst[:-1] == [[]] * 45  # each frame of the backlog makes the deficit 20 ms smaller...
    assert burst[-1] == [b"a" * FRAME] + [bytes([n]) * FRAME for n in range(46)]  # ...until it is caught up


def test_gap_reports_seconds_and_exact_frames():
    assert Gap(start_frame=12000, frames=4000, cause="stream_lost", rate=RATE).to_dict() == {
        "start_s": 1.5, "length_s": 0.5, "start_frame": 12000, "frames": 4000, "cause": "stream_lost"}


def test_a_negative_jitter_is_refused():
    with pytest.raises(ValueError, match="jitter_s"):
        Timeline(RATE, 2, origin=0.0, jitter_s=-1)
