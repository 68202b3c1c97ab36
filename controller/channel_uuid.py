"""Channel uuids: the one pattern they must have, and the one form the controller keys calls by. Pure.

FreeSWITCH makes lower-case uuids, but a user may give a channel any case (``origination_uuid``), and its
session table is case-sensitive: commands must name a channel exactly as FreeSWITCH spells it, while the
controller's and the recorder's books key it in lower case, so one call is one entry whatever the spelling.
"""

from __future__ import annotations

import re

UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
UUID_SHAPE = "8-4-4-4-12 hex digits"


def call_key(uuid: str) -> str:
    """How a channel uuid is keyed everywhere inside the controller."""
    return uuid.lower()


def normalise_uuid(value: object) -> str | None:
    """The uuid in canonical lower case, or None when it is not strictly 8-4-4-4-12 hex."""
    if isinstance(value, str) and UUID_RE.fullmatch(value):
        return call_key(value)
    return None
