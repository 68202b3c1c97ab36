"""Where arriving audio belongs in a call's time, with an injected clock: silence only for real gaps."""

import pytest

from controller.recorder.timeline import Gap, Timeline

RATE = 8000
FRAME_S = 0.02  # one 20 ms frame


def test_frames_on_time_or_with_jitter_below_the_threshold_need_no_silence():
    timeline = Timeline(RATE, origin=100.0, threshold_s=0.3)
    written = 0
    for n in range(50):
        arrival = 100.0 + (n + 1) * FRAME_S + (0.25 if n % 7 == 0 else 0.0)  # late by up to 250 ms
        assert timeline.silence_before(arrival, FRAME_S, written) == 0
        written += 160


def test_a_late_frame_gets_exactly_the_missing_time_as_silence():
    timeline = Timeline(RATE, origin=0.0, threshold_s=0.3)
    # 1 s written; the next frame covers [3.5, 3.52): 2.5 s are missing.
    assert timeline.silence_before(3.52, FRAME_S, written_frames=8000) == 20000


def test_a_burst_after_a_stall_is_never_cut_or_moved_earlier():
    timeline = Timeline(RATE, origin=0.0, threshold_s=0.3)
    # 5 s written by 2 s of wall time (frames arrived in a burst): the file runs ahead, nothing is removed.
    assert timeline.silence_before(2.0, FRAME_S, written_frames=40000) == 0


def test_tail_up_to_the_end_of_the_call():
    timeline = Timeline(RATE, origin=10.0, threshold_s=0.3)
    assert timeline.silence_until(14.0, written_frames=8000) == 24000  # 1 s written, the call lasted 4 s
    assert timeline.silence_until(11.2, written_frames=8000) == 0  # 0.2 s behind: within the threshold


def test_gap_reports_seconds_and_exact_frames():
    assert Gap(start_frame=12000, frames=4000, cause="stream_lost", rate=RATE).to_dict() == {
        "start_s": 1.5, "length_s": 0.5, "start_frame": 12000, "frames": 4000, "cause": "stream_lost"}


def test_negative_threshold_is_refused():
    with pytest.raises(ValueError, match="gap threshold"):
        Timeline(RATE, origin=0.0, threshold_s=-1)
