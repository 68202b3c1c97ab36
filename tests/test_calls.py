"""Call state decisions, without sockets: what the controller sends for each event."""

from dataclasses import dataclass

from controller.calls import CallBook, ForgetCall, Phase, StartStream, StopStream


@dataclass
class FakeRule:
    name: str = "ext9999"
    start_delay_s: float = 0.0
    max_duration_s: float | None = None


@dataclass
class Info:
    uuid: str
    destination: str = "9999"
    direction: str = "inbound"


def book(rule=None):
    rule = rule or FakeRule()
    return CallBook(match=lambda info: rule if info.destination == "9999" else None,
                    make_token=lambda: "tok")


def test_matched_answer_starts_once_even_if_answer_repeats():
    calls = book()
    actions = calls.on_answer(Info("a"), now=10.0)
    assert [type(a) for a in actions] == [StartStream]
    assert actions[0].call.token == "tok"
    assert calls.on_answer(Info("a"), now=11.0) == []
    assert calls.due(12.0) == []


def test_unmatched_answer_starts_nothing_and_is_not_tracked():
    calls = book()
    assert calls.on_answer(Info("b", destination="1234"), now=0.0) == []
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


def test_refused_start_marks_failed_and_never_retries_or_stops():
    calls = book(FakeRule(max_duration_s=1.0))
    calls.on_answer(Info("a"), now=0.0)
    calls.on_start_result("a", ok=False, detail="-ERR Operation Failed")
    assert calls.calls["a"].phase is Phase.FAILED
    assert calls.calls["a"].errors == ["start refused: -ERR Operation Failed"]
    assert calls.due(10.0) == []
