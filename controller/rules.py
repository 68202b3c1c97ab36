"""Stream rules and the calls they are matched against. Pure: no I/O.

A rule (``settings.Rule``) says which answered calls are streamed (``match``) and how (mix, rate, buffer,
limits, metadata); ``config.py`` builds rules from YAML. Here: what is known of a call (``CallInfo``), and
``match_rule``, which picks the rule for one call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .channel_uuid import call_key
# The rule settings live in settings.py (a leaf); re-exported because they are imported from here.
from .settings import DIRECTIONS, Match, Rule, TextPattern  # noqa: F401


@dataclass(frozen=True)
class CallInfo:
    """What rules can look at about one channel (one leg)."""

    uuid: str  # the call's key inside the controller: lower case (channel_uuid.call_key)
    destination: str = ""
    context: str = ""
    direction: str = ""
    caller_number: str = ""
    caller_name: str = ""
    channel_uuid: str = ""  # as FreeSWITCH spells it (any case): what uuid_* commands must name
    switch: str = ""  # the FreeSWITCH host the channel is on (FreeSWITCH-Hostname): the catalog's switch

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_uuid", self.channel_uuid or self.uuid)
        object.__setattr__(self, "uuid", call_key(self.uuid))

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> "CallInfo":
        """From a channel event's (decoded) headers, e.g. CHANNEL_ANSWER."""
        uuid = headers.get("Unique-ID", "")
        if not uuid:
            raise ValueError("channel event has no Unique-ID header; cannot tell which call it is about")
        return cls(
            uuid=uuid,
            destination=headers.get("Caller-Destination-Number", ""),
            context=headers.get("Caller-Context", ""),
            direction=headers.get("Call-Direction", "").lower(),
            caller_number=headers.get("Caller-Caller-ID-Number", ""),
            caller_name=headers.get("Caller-Caller-ID-Name", ""),
            switch=headers.get("FreeSWITCH-Hostname", ""),
        )

    @classmethod
    def from_channel_row(cls, row: Mapping[str, Any]) -> "CallInfo":
        """From one row of ``show channels as json`` (how live calls are found again after a reconnect)."""
        uuid = row.get("uuid") or ""
        if not uuid:
            raise ValueError("channel row has no uuid; cannot tell which call it is about")
        return cls(
            uuid=str(uuid),
            destination=str(row.get("dest") or ""),
            context=str(row.get("context") or ""),
            direction=str(row.get("direction") or "").lower(),
            caller_number=str(row.get("cid_num") or ""),
            caller_name=str(row.get("cid_name") or ""),
            switch=str(row.get("hostname") or ""),
        )


def channel_rows(listing: str) -> list[Mapping[str, Any]]:
    """The rows of ``show channels as json``; ValueError when the text is not such a listing (e.g. ``-ERR``).

    With no calls FreeSWITCH answers ``{"row_count": 0}``, without a ``rows`` key.
    """
    data = json.loads(listing)
    rows = data.get("rows", []) if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"not a channel listing: {listing[:200]!r}")
    return rows


def rule_matches(rule: Rule, call: CallInfo) -> bool:
    m = rule.match
    if m.direction != "any" and call.direction != m.direction:
        return False
    for pattern, value in ((m.destination, call.destination), (m.caller, call.caller_number),
                           (m.context, call.context)):
        if pattern is not None and not pattern.matches(value):
            return False
    return True


def match_rule(rules: Iterable[Rule], call: CallInfo) -> Rule | None:
    """The first enabled rule that matches the call, in file order; None if no rule does."""
    for rule in rules:
        if rule.enabled and rule_matches(rule, call):
            return rule
    return None
