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
SETTLE_S = 2.0  # the recorder's look-ahead (recording.SETTLE_S)


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


def drained(sent, stall_from_s: float, stall_to_s: float, speed: float, jitter_s: float = 0.0, seed: int = 1):
    """The recorder reads nothing from `from` to `to`, then reads what queued at `speed` times real time until it
    has caught up; each read comes up to `jitter_s` late at random (TCP keeps the order)."""
    rng, arrivals, read, latest = random.Random(seed), [], 0.0, 0.0
    for t, n in stalled(sent, stall_from_s, stall_to_s):
        read = max(t, read + FRAME_S / speed)
        latest = max(latest, read + rng.uniform(0, jitter_s))
        arrivals.append((latest, n))
    return arrivals


class Scenario:
    """Feeds arrivals into a Recording in time order, with the recorder's periodic tick every 0.25 s."""

    def __init__(self, tmp_path) -> None:
        self.clock = Clock()
        spec = StreamSpec(uuid=UUID, token="tok", rate=RATE, channels=1)
        self.recording = Recording.open(spec, tmp_path, FilenameTemplate("{uuid}.wav"), clock=self.clock,
                                        now=lambda: datetime(2026, 1, 1, tzinfo=timezone.utc))
        self.ticked = ORIGIN
        self.arrived: list[float] = []  # when each frame arrived, in order
        self.most_held_bytes = 0  # the most audio held back in memory after any call: what a kill would lose
        self.oldest_held_s = 0.0  # the longest any held frame had waited, after any call

    def advance(self, to: float) -> None:
        while self.ticked + 0.25 <= to:
            self.ticked += 0.25
            self.clock.now = self.ticked
            self.recording.tick()
            self.observe()
        self.clock.now = to

    def arrive(self, arrivals) -> None:
        for t, n in sorted(arrivals, key=lambda a: a[0]):  # a stable sort: a burst keeps its order
            self.advance(t)
            self.recording.on_audio(payload(n))
            self.arrived.append(t)
            self.observe()

    def observe(self) -> None:
        held = self.recording.timeline.held_bytes  # the newest frames are the ones held
        self.most_held_bytes = max(self.most_held_bytes, held)
        if held:
            self.oldest_held_s = max(self.oldest_held_s, self.clock.now - self.arrived[-(held // FRAME)])

    def assert_held_within_settle(self) -> None:
        assert self.most_held_bytes <= SETTLE_S * RATE * 2  # never more than settle_s of audio at risk
        assert self.oldest_held_s < SETTLE_S  # and no frame held for settle_s after it arrived

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
@pytest.mark.parametrize("speed", [float("inf"), 10.0])  # the backlog in one read, or read at 10x real time
def test_a_recorder_stall_then_a_burst_inserts_nothing(tmp_path, stall_s, speed):
    run = Scenario(tmp_path)
    run.arrive(drained(frames_sent(0.0, stall_s + 4.0), 1.0, 1.0 + stall_s, speed))
    pcm, gaps = run.finish(stall_s + 4.0)
    assert gaps == [] and pcm == audio(0.0, stall_s + 4.0)  # as long as the call, every frame in its place
    run.assert_held_within_settle()


def test_a_stall_drained_slowly_inserts_nothing_and_holds_at_most_settle_s(tmp_path):
    # The recorder reads nothing for 3 s, then reads only 4 % faster than the audio comes: the backlog takes
    # 75 s to drain. The deficit keeps falling, so it is a stall: no silence; and audio it cannot yet place
    # is never held in memory for longer than the look-ahead, nor more of it.
    run = Scenario(tmp_path)
    run.arrive(drained(frames_sent(0.0, 90.0), 1.0, 4.0, speed=1.04))
    assert run.arrived[-1] - ORIGIN < 90.1  # it caught up before the end
    pcm, gaps = run.finish(90.0)
    assert gaps == [] and pcm == audio(0.0, 90.0)
    run.assert_held_within_settle()


def test_a_slow_drain_with_jitter_inserts_nothing(tmp_path):
    run = Scenario(tmp_path)
    run.arrive(drained(frames_sent(0.0, 90.0), 1.0, 4.0, speed=1.04, jitter_s=0.08))
    pcm, gaps = run.finish(90.0)
    assert gaps == [] and pcm == audio(0.0, 90.0)
    run.assert_held_within_settle()


def test_a_hole_during_a_slow_drain_keeps_its_length_after_the_audio_already_handed_on(tmp_path):
    # The switch sent nothing from 10 to 11 s, while the recorder was still 2.8 s behind, draining at 1.04x.
    # The hole shows only once the backlog is drained: the deficit stops falling at 1 s. That second is
    # silence, of exactly its length; it goes after the audio already handed on (it cannot go before it).
    run = Scenario(tmp_path)
    run.arrive(drained(frames_sent(0.0, 10.0) + frames_sent(11.0, 90.0), 1.0, 4.0, speed=1.04))
    pcm, gaps = run.finish(90.0)
    ((start, frames, cause),) = gaps
    assert (frames, cause) == (8000, "no_audio") and start >= 10 * RATE
    assert pcm[2 * start:2 * (start + frames)] == silence(1.0)
    assert pcm[:2 * start] + pcm[2 * (start + frames):] == audio(0.0, 10.0) + audio(11.0, 90.0)
    run.assert_held_within_settle()


def test_a_real_hole_is_silence_of_exactly_its_length_where_it_was(tmp_path):
    run = Scenario(tmp_path)  # mixed audio: the switch played nothing from 2 s to 3 s
    run.arrive(frames_sent(0.0, 2.0) + frames_sent(3.0, 6.0))
    pcm, gaps = run.finish(6.0)
    assert gaps == [(16000, 8000, "no_audio")]
    assert pcm == audio(0.0, 2.0) + silence(1.0) + audio(3.0, 6.0)
    run.assert_held_within_settle()


def test_a_hole_during_a_stall_keeps_its_length_and_follows_the_audio_handed_on(tmp_path):
    # The hole is 2-3 s; the recorder reads nothing from 1.5 to 3.5 s. The socket keeps no time, so where in
    # the burst the hole was cannot be known. The burst (1 s of audio) brings the deficit down to 1 s, where it
    # stays; 2 s of audio held is the bound, reached at 4.52 s while the deficit had fallen only 1 s before:
    # that audio is written as it came. At 5.5 s the deficit has not fallen for 2 s: the 1 s is silence, after
    # what was written (never before it), and the WAV keeps the call's length.
    run = Scenario(tmp_path)
    run.arrive(stalled(frames_sent(0.0, 2.0) + frames_sent(3.0, 6.0), 1.5, 3.5))
    pcm, gaps = run.finish(6.0)
    assert gaps == [(28160, 8000, "no_audio")]
    assert pcm == audio(0.0, 2.0) + audio(3.0, 4.52) + silence(1.0) + audio(4.52, 6.0)
    run.assert_held_within_settle()


@pytest.mark.parametrize("late_frame, gap_start", [
    (160, 16000),  # a frame 80 ms late 0.2 s after the hole: the deficit never fell, the silence is where it was
    (150, 32160),  # the first frame after it 80 ms late: the deficit fell 80 ms, as if a stall were draining, so
])                 # the 2 s held are written at the bound and the silence follows them
def test_a_hole_then_jitter_keeps_its_length(tmp_path, late_frame, gap_start):
    arrivals, latest = [], 0.0
    for t, n in frames_sent(0.0, 2.0) + frames_sent(3.0, 8.0):  # nothing played from 2 to 3 s
        latest = max(latest, t + (0.08 if n == late_frame else 0.0))  # the frames behind it catch up
        arrivals.append((latest, n))
    run = Scenario(tmp_path)
    run.arrive(arrivals)
    pcm, gaps = run.finish(8.0)
    assert gaps == [(gap_start, 8000, "no_audio")]
    start = 2 * gap_start
    assert pcm[start:start + 16000] == silence(1.0)
    assert pcm[:start] + pcm[start + 16000:] == audio(0.0, 2.0) + audio(3.0, 8.0)
    run.assert_held_within_settle()


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


def test_held_audio_is_handed_on_without_silence_at_the_bound_while_the_deficit_still_falls():
    timeline = Timeline(RATE, 2, origin=0.0, jitter_s=0.1, settle_s=2.0)
    out, written = [], 0
    for k in range(120):  # 3 s late, then read at 1.04x real time: the deficit falls 0.77 ms a frame
        pieces = timeline.place(3.02 + k * FRAME_S / 1.04, bytes([k]) * FRAME, written)
        written += sum(len(p) for p in pieces)
        out += pieces
        assert timeline.held_bytes <= 2.0 * RATE * 2
    assert out == [bytes([k]) * FRAME for k in range(101)]  # 2 s and a frame: handed on as they came
    assert timeline.suspecting and timeline.held_bytes == 19 * FRAME  # still watching the deficit
    # Then nothing more comes: 2 s on, the deficit has not fallen for 2 s, and what is left of it is silence,
    # before the audio still held (after the audio handed on).
    least = 3.0 - 119 * (FRAME_S - FRAME_S / 1.04)
    assert timeline.settle(3.02 + 119 * FRAME_S / 1.04 + 2.0) == (
        [Silence(int(round(least * RATE)))] + [bytes([k]) * FRAME for k in range(101, 120)])
    assert not timeline.suspecting
