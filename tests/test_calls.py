"""Call state decisions, without sockets: what the controller sends for each event."""

from dataclasses import dataclass

from controller.calls import CallBook, ForgetCall, NotStreamed, Phase, RetryPolicy, StartStream, StopStream


@dataclass
class FakeRule:
    name: str = "ext9999"
    start_delay_s: float = 0.0
    max_duration_s: float | None = None
    max_streams: int | None = None


@dataclass
class Info:
    uuid: str
    destination: str = "9999"
    direction: str = "inbound"


def book(rule=None, **kwargs):
    rule = rule or FakeRule()
    return CallBook(match=lambda info: rule if info.destination == "9999" else None,
                    make_token=lambda: "tok", **kwargs)


def test_matched_answer_starts_once_even_if_answer_repeats():
    calls = book()
    actions = calls.on_answer(Info("a"), now=10.0)
    assert [type(a) for a in actions] == [StartStream]
    assert actions[0].restart is False  # seen answered: the module holds no stream for it yet
    assert actions[0].call.token == "tok"
    assert calls.on_answer(Info("a"), now=11.0) == []
    assert calls.due(12.0) == []


def test_unmatched_answer_starts_nothing_and_is_not_tracked():
    calls = book()
    [skip] = calls.on_answer(Info("b", destination="1234"), now=0.0)
    assert skip == NotStreamed("b", "no_rule", "destination '1234' (inbound) matches no rule")
    assert calls.calls == {}


def test_start_delay_holds_the_start_until_due():
    calls = book(FakeRule(start_delay_s=2.0))
    assert calls.on_answer(Info("a"), now=100.0) == []
    assert calls.next_deadline() == 102.0
    assert calls.due(101.9) == []
    assert [type(a) for a in calls.due(102.0)] == [StartStream]


def test_max_duration_sends_one_stop():
    calls = book(FakeRule(max_duration_s=5.0))
    calls.on_answer(Info("a"), now=0.0)
    calls.on_stream_connected("a", now=0.0)
    assert calls.calls["a"].phase is Phase.STREAMING
    assert calls.next_deadline() == 5.0
    assert calls.due(4.99) == []
    stops = calls.due(5.0)
    assert [type(a) for a in stops] == [StopStream] and "5s" in stops[0].reason
    assert calls.due(60.0) == []


def test_hangup_forgets_the_call_once():
    calls = book()
    calls.on_answer(Info("a"), now=0.0)
    assert calls.on_hangup("a", now=20.0) == [ForgetCall("a", "hangup", at=20.0)]
    assert calls.on_hangup("a", now=21.0) == []
    assert calls.next_deadline() is None


def test_refused_start_is_retried_with_stop_first_after_a_growing_delay():
    calls = book(retry=RetryPolicy(initial_s=0.5, max_s=2.0, max_attempts=3))
    [start] = calls.on_answer(Info("a"), now=0.0)
    assert calls.on_start_result(start, ok=False, detail="-ERR Operation Failed", now=1.0) == []
    assert calls.calls["a"].phase is Phase.RETRYING
    assert calls.next_deadline() == 1.5
    [restart] = calls.due(1.5)
    assert restart == StartStream(calls.calls["a"], restart=True, attempt=2)
    calls.on_start_result(restart, ok=False, detail="-ERR Operation Failed", now=2.0)
    assert calls.next_deadline() == 3.0  # 1 s: doubled
    [restart] = calls.due(3.0)
    calls.on_start_result(restart, ok=False, detail="-ERR Operation Failed", now=3.0)
    assert calls.next_deadline() == 5.0  # capped at max_s
    [restart] = calls.due(5.0)
    calls.on_start_result(restart, ok=False, detail="-ERR Operation Failed", now=5.0)
    assert calls.calls["a"].phase is Phase.FAILED
    assert calls.due(100.0) == [] and calls.next_deadline() is None
    assert list(calls.calls["a"].errors) == ["start refused: -ERR Operation Failed"] * 4


def test_a_start_that_lost_its_turn_neither_sends_on_nor_counts():
    calls = book()
    [first] = calls.on_answer(Info("a"), now=0.0)
    calls.on_start_result(first, ok=True, detail="+OK Success", now=0.1)
    calls.on_stream_lost("a", "recorder saw EOF", now=0.2)
    [second] = calls.due(1.0)
    assert not calls.still_starting(first) and calls.still_starting(second)
    # The first start's late failure says nothing about the second one.
    assert calls.on_start_result(first, ok=False, detail="-ERR Operation Failed", now=1.1) == []
    assert calls.calls["a"].phase is Phase.STARTING and calls.calls["a"].restarts == 1
    calls.on_hangup("a", now=1.2)
    assert not calls.still_starting(second)  # hung up while it was sending: it goes no further


def test_the_time_limit_wins_over_a_restart_due_at_the_same_moment():
    calls = book(FakeRule(max_duration_s=1.2))
    [start] = calls.on_answer(Info("a"), now=0.0)
    calls.on_start_result(start, ok=True, detail="+OK Success", now=0.0)
    calls.on_stream_connected("a", now=0.0)
    calls.on_stream_lost("a", "recorder saw EOF", now=0.9)  # restart due at 1.4, the limit at 1.2
    assert calls.next_deadline() == 1.2
    [stop] = calls.due(1.2)
    assert isinstance(stop, StopStream) and calls.due(2.0) == []


def test_a_start_accepted_after_the_stop_is_stopped_again():
    # bgapi start and stop run in separate FreeSWITCH threads: the stop can land first.
    calls = book(FakeRule(max_duration_s=1.0))
    [start] = calls.on_answer(Info("a"), now=0.0)
    [stop] = calls.due(1.0)
    assert not calls.still_starting(start)
    [again] = calls.on_start_result(start, ok=True, detail="+OK Success", now=1.1)
    assert again == StopStream(calls.calls["a"], "a start was accepted after the stop")
    assert calls.on_start_result(start, ok=False, detail="-ERR Operation Failed", now=1.1) == []


def test_one_loss_reported_twice_restarts_once():
    calls = book()
    calls.on_answer(Info("a"), now=0.0)
    calls.on_stream_connected("a", now=0.0)
    calls.on_stream_lost("a", "recorder saw EOF", now=10.0)
    calls.on_stream_lost("a", "module error code 1", now=10.01)
    assert calls.calls["a"].restarts == 1
    assert [a.restart for a in calls.due(11.0)] == [True]


def test_loss_after_a_deliberate_stop_or_recorder_limit_is_not_restarted():
    calls = book(FakeRule(max_duration_s=1.0))
    calls.on_answer(Info("a"), now=0.0)
    calls.due(1.0)  # stop sent
    assert calls.on_stream_lost("a", "closed", now=1.1) == [] and calls.calls["a"].phase is Phase.STOPPING
    calls.on_answer(Info("b"), now=0.0)
    calls.on_recording_finished("b", "max_bytes")
    calls.on_stream_lost("b", "disconnected", now=2.0)
    assert calls.calls["b"].phase is Phase.FINISHED and calls.due(50.0) == []


def test_limits_refuse_calls_beyond_the_global_and_per_rule_caps_for_their_whole_life():
    capped = FakeRule(name="capped", max_streams=1)
    calls = CallBook(match=lambda info: capped if info.destination == "9999" else FakeRule(name="other"),
                     make_token=lambda: "t", max_streams=2)
    assert len(calls.on_answer(Info("a"), now=0.0)) == 1
    [refused] = calls.on_answer(Info("b"), now=0.0)
    assert refused == NotStreamed("b", "limit", "rule 'capped' has 1 streams already, its limit is 1")
    assert len(calls.on_answer(Info("c", destination="1"), now=0.0)) == 1
    [refused] = calls.on_answer(Info("d", destination="1"), now=0.0)
    assert refused.reason == "limit" and "limit is 2" in refused.detail
    calls.on_hangup("a", now=4.0)
    # b was refused while the cap was full: a reconcile later does not start half of it.
    assert calls.reconcile([Info("b"), Info("c", destination="1")], {"c"}, now=5.0) == []
    # ...and once it is gone (its hangup missed), it is not remembered forever.
    calls.reconcile([Info("c", destination="1")], {"c"}, now=6.0)
    assert calls.refused == set()


def test_reconcile_starts_missed_calls_restarts_dead_streams_and_forgets_gone_ones():
    calls = book()
    calls.on_answer(Info("live"), now=0.0)
    calls.on_stream_connected("live", now=0.0)
    calls.on_answer(Info("dead"), now=0.0)
    calls.on_stream_connected("dead", now=0.0)
    calls.on_answer(Info("gone"), now=0.0)
    actions = calls.reconcile([Info("live"), Info("dead"), Info("new"), Info("other", destination="5")],
                              live_recordings={"live"}, now=9.0)
    by_kind = {(type(a).__name__, getattr(a, "uuid", None) or a.call.uuid) for a in actions}
    assert by_kind == {("ForgetCall", "gone"), ("StartStream", "dead"), ("StartStream", "new"),
                       ("NotStreamed", "other")}
    # "new" was never seen answered: a controller before this one may have left the module holding a stream.
    assert {a.call.uuid: a.restart for a in actions if isinstance(a, StartStream)} == {"dead": True, "new": True}
    assert calls.calls["live"].phase is Phase.STREAMING and calls.calls["live"].restarts == 0
    # A second reconcile with everything live changes nothing: no duplicate start, ever.
    assert calls.reconcile([Info("live"), Info("dead"), Info("new")], {"live", "dead", "new"}, now=10.0) == []


def test_reconcile_restarts_accepted_starts_and_given_up_calls_whose_events_were_lost():
    calls = book(retry=RetryPolicy(max_attempts=1))
    [accepted] = calls.on_answer(Info("accepted"), now=0.0)
    calls.on_start_result(accepted, ok=True, detail="+OK Success", now=0.1)  # its ::connect/::error was lost
    calls.on_answer(Info("in_flight"), now=0.0)  # no reply yet: it settles by itself
    [gave_up] = calls.on_answer(Info("gave_up"), now=0.0)
    calls.on_start_result(gave_up, ok=False, detail="not connected", now=0.1)
    calls.on_start_result(calls.due(10.0)[0], ok=False, detail="not connected", now=10.0)
    assert calls.calls["gave_up"].phase is Phase.FAILED
    [invalid] = calls.on_answer(Info("invalid"), now=0.0)
    calls.on_start_result(invalid, ok=False, detail="rate 12000", now=0.1, permanent=True)
    actions = calls.reconcile([Info(u) for u in ("accepted", "in_flight", "gave_up", "invalid")], set(), now=20.0)
    assert sorted((a.call.uuid, a.restart) for a in actions) == [("accepted", True), ("gave_up", True)]
    assert calls.calls["gave_up"].restarts == 1  # a fresh set of tries, not one past the limit
    assert calls.calls["invalid"].phase is Phase.FAILED


def test_reconcile_keeps_calls_listed_in_any_state_and_never_revives_a_recent_hangup():
    calls = book()
    calls.on_answer(Info("unheld"), now=0.0)
    calls.on_stream_connected("unheld", now=0.0)
    calls.on_answer(Info("hung_up"), now=0.0)
    calls.on_hangup("hung_up", now=5.0)
    # A listing taken just before the hangup was handled still shows it answered; "unheld" is listed in a
    # state other than ACTIVE/HELD, so it is present but not among the answered.
    actions = calls.reconcile([Info("hung_up")], {"unheld"}, now=6.0, present={"unheld", "hung_up"})
    assert actions == [] and "hung_up" not in calls.calls
    assert calls.calls["unheld"].phase is Phase.STREAMING
    # A minute on, the uuid is forgotten: the memory of hangups does not grow over months.
    calls.reconcile([], set(), now=70.0, present={"unheld"})
    assert calls.ended == {}


def stream_up_then_lost(calls, start, now: float, up_s: float) -> float:
    """The start is accepted, the stream connects at `now`, runs `up_s` and drops; returns when it dropped."""
    calls.on_start_result(start, ok=True, detail="+OK Success", now=now)
    calls.on_stream_connected(start.call.uuid, now=now)
    calls.on_stream_lost(start.call.uuid, "recorder: eof", now=now + up_s)
    return now + up_s


def test_a_long_call_whose_stream_drops_now_and_then_keeps_being_restarted():
    # Every restart worked and ran a minute before the next drop: the budget is for losses in a row,
    # not for a whole call's, so the tenth drop of a long call is restarted like the first.
    calls = book(retry=RetryPolicy(max_attempts=3))
    [start] = calls.on_answer(Info("a"), now=0.0)
    now = 0.0
    for drop in range(10):
        stream_up_then_lost(calls, start, now, up_s=60.0)
        assert calls.calls["a"].phase is Phase.RETRYING, f"given up at drop {drop + 1}"
        now = calls.next_deadline()
        [start] = calls.due(now)
        assert start.restart


def test_a_stream_that_drops_right_after_each_restart_is_given_up_after_the_budget():
    calls = book(retry=RetryPolicy(max_attempts=3))
    [start] = calls.on_answer(Info("a"), now=0.0)
    now = 0.0
    for _ in range(3):
        stream_up_then_lost(calls, start, now, up_s=1.0)  # the restarts do not help
        now = calls.next_deadline()
        [start] = calls.due(now)
    stream_up_then_lost(calls, start, now, up_s=1.0)
    assert calls.calls["a"].phase is Phase.FAILED and calls.next_deadline() is None


def test_upper_case_channel_uuids_are_one_call_and_commands_keep_their_spelling():
    from controller.rules import CallInfo

    calls = book()
    upper = "166EB301-3CA5-4FC5-9751-D8CA093577DD"
    [start] = calls.on_answer(CallInfo(upper, "9999", direction="inbound"), now=0.0)
    assert start.call.uuid == upper.lower() and start.call.info.channel_uuid == upper
    calls.on_start_result(start, ok=True, detail="+OK Success", now=0.0)
    calls.on_stream_connected(upper.lower(), now=0.1)
    # A reconnect lists the channel as FreeSWITCH spells it; the recorder keys it in lower case.
    listed = [CallInfo.from_channel_row({"uuid": upper, "dest": "9999", "direction": "inbound"})]
    assert calls.reconcile(listed, live_recordings={upper.lower()}, now=5.0) == []
    assert calls.calls[upper.lower()].phase is Phase.STREAMING


def test_a_stop_lost_with_the_connection_is_sent_again_at_reconcile():
    calls = book(FakeRule(max_duration_s=5.0))
    [start] = calls.on_answer(Info("a"), now=0.0)
    calls.on_start_result(start, ok=True, detail="+OK Success", now=0.0)
    calls.on_stream_connected("a", now=0.1)
    [stop] = calls.due(5.0)
    calls.on_stop_result(stop.call, delivered=False)  # the Event Socket dropped with the stop in flight
    [again] = calls.reconcile([Info("a")], live_recordings={"a"}, now=6.0)
    assert isinstance(again, StopStream) and again.call is stop.call
    calls.on_stop_result(again.call, delivered=True)
    assert calls.reconcile([Info("a")], live_recordings=set(), now=7.0) == []  # once delivered: never again


def test_a_call_keeps_only_its_latest_errors_however_long_it_fails():
    from controller.calls import MAX_ERRORS_KEPT

    calls = book(retry=RetryPolicy(initial_s=0.5, max_s=0.5, max_attempts=1000))
    [start] = calls.on_answer(Info("a"), now=0.0)
    now = 1.0
    for attempt in range(MAX_ERRORS_KEPT + 5):
        calls.on_start_result(start, ok=False, detail=f"-ERR failure {attempt}", now=now)
        now += 0.5
        [start] = calls.due(now)
    errors = list(calls.calls["a"].errors)
    assert len(errors) == MAX_ERRORS_KEPT
    assert errors[0] == "start refused: -ERR failure 5" and errors[-1] == f"start refused: -ERR failure {MAX_ERRORS_KEPT + 4}"
