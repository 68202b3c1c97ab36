"""Which rule streams a call: the matching table, and the call facts read from real FreeSWITCH events."""

from __future__ import annotations

import json
import textwrap

import pytest

from controller.config import parse_config
from controller.esl.protocol import MessageReader, parse_event
from controller.rules import CallInfo, TextPattern, match_rule

UUID = "166eb301-3ca5-4fc5-9751-d8ca093577dd"


def rules_from(yaml_rules: str):
    text = "esl: {password: x}\nrules:\n" + textwrap.indent(textwrap.dedent(yaml_rules), "  ")
    return parse_config(text, "rules.yaml", {}).rules


def call(destination="9999", *, direction="inbound", context="default", caller="1000", name="Alice",
         uuid=UUID) -> CallInfo:
    return CallInfo(uuid=uuid, destination=destination, context=context, direction=direction,
                    caller_number=caller, caller_name=name)


def chosen(rules, info: CallInfo) -> str | None:
    rule = match_rule(rules, info)
    return None if rule is None else rule.name


TABLE = rules_from("""\
    - name: disabled-9999
      match: {destination: "9999"}
      enabled: false
    - name: exact-9999
      match: {destination: "9999"}
    - name: also-9999
      match: {destination: "9999"}
      mix: stereo
    - name: regex-5xxx
      match: {destination: '/5\\d{3}/'}
    - name: internal-only-7000
      match: {destination: "7000", context: default}
    - name: b-leg-6000
      match: {destination: "6000", direction: outbound}
    - name: any-leg-6100
      match: {destination: "6100", direction: any}
    - name: vip-caller
      match: {caller: /\\+4930\\d+/}
    - name: caller-and-destination
      match: {caller: "2000", destination: "8000"}
    - name: context-regex
      match: {destination: "8100", context: '/tenant-[a-z]+/'}
""")


@pytest.mark.parametrize("info, expected", [
    (call("9999"), "exact-9999"),                                     # disabled rule skipped, first match wins
    (call("99990"), None),                                            # exact means exact
    (call("5123"), "regex-5xxx"),
    (call("51234"), None),                                            # regex must match the whole value
    (call("15123"), None),
    (call("7000"), "internal-only-7000"),
    (call("7000", context="public"), None),                           # context must agree
    (call("9999", direction="outbound"), None),                       # a bridged B-leg never matches by default
    (call("6000"), None),                                             # outbound-only rule: not the A-leg
    (call("6000", direction="outbound"), "b-leg-6000"),
    (call("6100"), "any-leg-6100"),
    (call("6100", direction="outbound"), "any-leg-6100"),
    (call("4711", caller="+493012345"), "vip-caller"),
    (call("4711", caller="+4930"), None),
    (call("4711", caller="+493012345", direction="outbound"), None),  # caller rules are inbound by default too
    (call("8000", caller="2000"), "caller-and-destination"),          # every condition given must hold
    (call("8000", caller="2001"), None),
    (call("8001", caller="2000"), None),
    (call("8100", context="tenant-acme"), "context-regex"),
    (call("8100", context="tenant-ACME"), None),
    (call("", direction=""), None),                                   # an event without the facts matches nothing
], ids=lambda v: v if isinstance(v, str) else None)
def test_rule_matching_table(info: CallInfo, expected: str | None):
    assert chosen(TABLE, info) == expected


def test_first_match_wins_in_file_order():
    rules = rules_from("""\
        - name: broad
          match: {destination: /9.*/}
        - name: narrow
          match: {destination: "9999"}
        """)
    assert chosen(rules, call("9999")) == "broad"
    assert chosen(tuple(reversed(rules)), call("9999")) == "narrow"


def test_no_rules_no_match():
    assert match_rule((), call()) is None


def test_regex_pattern_uses_fullmatch_and_exact_pattern_is_literal():
    assert TextPattern.parse("/9.9/").matches("9x9")
    assert not TextPattern.parse("/9.9/").matches("9x99")
    assert TextPattern.parse("9.9").matches("9.9")
    assert not TextPattern.parse("9.9").matches("9x9")
    assert TextPattern.parse("/").matches("/")  # a lone slash is just text


def test_regex_pattern_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"^bad regex /\[0-9/: unterminated character set at position 0$"):
        TextPattern.parse("/[0-9/")
    with pytest.raises(ValueError, match="the regex between the slashes is empty"):
        TextPattern.parse("//")


# ---- call facts from FreeSWITCH -------------------------------------------------------------------------------

def test_call_info_from_channel_answer_headers():
    info = CallInfo.from_headers({
        "Event-Name": "CHANNEL_ANSWER", "Unique-ID": UUID, "Caller-Destination-Number": "9999",
        "Caller-Context": "default", "Call-Direction": "inbound", "Caller-Caller-ID-Number": "1000",
        "Caller-Caller-ID-Name": "Alice Example",
    })
    assert info == CallInfo(UUID, "9999", "default", "inbound", "1000", "Alice Example")


def test_call_info_without_unique_id_is_refused():
    with pytest.raises(ValueError, match="no Unique-ID"):
        CallInfo.from_headers({"Event-Name": "CHANNEL_ANSWER", "Caller-Destination-Number": "9999"})


def test_call_info_missing_headers_are_empty_and_match_nothing():
    info = CallInfo.from_headers({"Unique-ID": UUID})
    assert (info.destination, info.direction, info.context, info.caller_number) == ("", "", "", "")
    assert match_rule(TABLE, info) is None


@pytest.mark.parametrize("event_format", ["plain", "json"])
def test_call_info_from_captured_channel_answer(captures, event_format: str):
    raw = (captures / "esl" / "examples" / f"text_event-{event_format}__CHANNEL_ANSWER.bin").read_bytes()
    (message,) = MessageReader().feed(raw)
    info = CallInfo.from_headers(parse_event(message).headers)
    assert info.destination == "9999"
    assert (info.context, info.direction) == ("default", "inbound")
    assert (info.caller_number, info.caller_name) == ("sipp", "sipp")
    assert info.switch == "vm"  # FreeSWITCH-Hostname: the catalog's switch
    assert len(info.uuid) == 36
    demo = rules_from("""\
        - name: demo
          match: {destination: "9999"}
        """)
    assert chosen(demo, info) == "demo"


def test_call_info_from_captured_show_channels_row(captures):
    notes = json.loads((captures / "notes" / "notes_handshake_main_plain_main_json_formats_failures.json").read_text())
    (row,) = json.loads(notes["main_plain"]["show_channels_json"])["rows"]
    info = CallInfo.from_channel_row(row)
    assert info == CallInfo(UUID, "9999", "default", "inbound", "sipp", "sipp", switch="vm")  # the row's hostname


def test_call_info_from_channel_row_refuses_a_row_without_uuid():
    with pytest.raises(ValueError, match="no uuid"):
        CallInfo.from_channel_row({"dest": "9999"})


def test_outbound_b_leg_row_does_not_match_a_default_rule():
    row = {"uuid": "0a14bdbe-b8d1-445f-a29b-f17b532ca436", "direction": "outbound", "dest": "9999",
           "context": "default", "cid_num": "1000", "cid_name": ""}
    assert chosen(TABLE, CallInfo.from_channel_row(row)) is None
