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
    calls.on_stream_connected("a")
    assert calls.calls["a"].phase is Phase.STREAMING
    assert calls.next_deadline() == 5.0
    assert calls.due(4.99) == []
    stops = calls.due(5.0)
    assert [type(a) for a in stops] == [StopStream] and "5s" in stops[0].reason
    assert calls.due(60.0) == []


def test_hangup_forgets_the_call_once():
    calls = book()
    calls.on_answer(Info("a"), now=0.0)
    assert calls.on_hangup("a") == [ForgetCall("a", "hangup")]
    assert calls.on_hangup("a") == []
    assert calls.next_deadline() is None


def test_refused_start_is_retried_with_stop_first_after_a_growing_delay():
    calls = book(retry=RetryPolicy(initial_s=0.5, max_s=2.0, max_attempts=3))
    calls.on_answer(Info("a"), now=0.0)
    assert calls.on_start_result("a", ok=False, detail="-ERR Operation Failed", now=1.0) == []
    assert calls.calls["a"].phase is Phase.RETRYING
    assert calls.next_deadline() == 1.5
    [restart] = calls.due(1.5)
    assert restart == StartStream(calls.calls["a"], restart=True)
    calls.on_start_result("a", ok=False, detail="-ERR Operation Failed", now=2.0)
    assert calls.next_deadline() == 3.0  # 1 s: doubled
    calls.due(3.0)
    calls.on_start_result("a", ok=False, detail="-ERR Operation Failed", now=3.0)
    assert calls.next_deadline() == 5.0  # capped at max_s
    calls.due(5.0)
    calls.on_start_result("a", ok=False, detail="-ERR Operation Failed", now=5.0)
    assert calls.calls["a"].phase is Phase.FAILED
    assert calls.due(100.0) == [] and calls.next_deadline() is None
    assert calls.calls["a"].errors == ["start refused: -ERR Operation Failed"] * 4


def test_one_loss_reported_twice_restarts_once():
    calls = book()
    calls.on_answer(Info("a"), now=0.0)
    calls.on_stream_connected("a")
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
    calls.on_hangup("a")
    # b was refused while the cap was full: a reconcile later does not start half of it.
    assert calls.reconcile([Info("b"), Info("c", destination="1")], {"c"}, now=5.0) == []
    # ...and once it is gone (its hangup missed), it is not remembered forever.
    calls.reconcile([Info("c", destination="1")], {"c"}, now=6.0)
    assert calls.refused == set()


def test_reconcile_starts_missed_calls_restarts_dead_streams_and_forgets_gone_ones():
    calls = book()
    calls.on_answer(Info("live"), now=0.0)
    calls.on_stream_connected("live")
    calls.on_answer(Info("dead"), now=0.0)
    calls.on_stream_connected("dead")
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
