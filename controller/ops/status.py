"""``fs-stream-controller status``: ask the running controller (its HTTP listener) how it is and what it records.

Exit status: 0 healthy, 1 unhealthy (the reasons are printed), 3 the controller cannot be reached, 4 it refused
the API token (http.token differs from the running controller's).

``ask`` is how this host's tools (``status``, ``doctor``) reach the listener: at metrics.listen_host (a wildcard
at the loopback address of its family), with ``Authorization: Bearer <http.token>`` whenever the configuration
has a token. The token is never printed.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from .addresses import http_base

UNREACHABLE = 3
REFUSED = 4
COLUMNS = (("uuid", "UUID", 36), ("rule", "RULE", 14), ("mix", "MIX", 6), ("rate", "RATE", 5),
           ("phase", "PHASE", 9), ("seconds", "SECONDS", 8), ("bytes", "BYTES", 10),
           ("last_frame_age_s", "LAST FRAME", 10), ("connections", "CONN", 4), ("gaps", "GAPS", 4))


def base_url(config) -> str | None:
    """Where this host reaches the controller's listener, or None when it is switched off."""
    http = config.metrics
    if http is None or not http.enabled:
        return None
    return http_base(http.listen_host, http.listen_port)


def ask(config, path: str, *, body: Any = None, timeout: float = 5.0) -> tuple[int, Any]:
    """(HTTP status, JSON body) of a GET (or, with ``body``, a POST of it as JSON) to the controller's listener,
    with the API token; an error status is an answer too. OSError when nothing answers, ValueError when the
    answer is not JSON."""
    headers = {"Accept": "application/json"}
    token = config.http.token
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(base_url(config) + path, data=data, headers=headers,
                                     method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw or b"{}")
        except ValueError:
            return exc.code, {"error": raw.decode("utf-8", "replace")[:200]}


def render(health: dict, calls: list[dict] | None) -> list[str]:
    lines = ["healthy" if health.get("healthy") else "UNHEALTHY"]
    lines += [f"  - {reason}" for reason in health.get("reasons", [])]
    esl, rec = health.get("esl", {}), health.get("recorder", {})
    lines.append(f"Event Socket {esl.get('host')}:{esl.get('port')} "
                 f"{'connected' if esl.get('connected') else 'NOT connected'}; recorder "
                 f"{'listening on port ' + str(rec.get('port')) if rec.get('listening') else 'NOT listening'} "
                 f"({rec.get('public_url')}), recordings in {rec.get('directory')}")
    if calls is None:
        count = health.get("calls")
        lines.append(f"{count} live call{'s' if count != 1 else ''}" if isinstance(count, int) else "live calls unknown")
        return lines
    lines.append(f"{len(calls)} live call{'s' if len(calls) != 1 else ''}")
    if calls:
        lines.append("  ".join(title.ljust(width) for _, title, width in COLUMNS).rstrip())
        for call in calls:
            cells = []
            for key, _, width in COLUMNS:
                value = call.get(key)
                text = "-" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)
                cells.append(text.ljust(width))
            lines.append("  ".join(cells).rstrip())
    return lines


def main(config, args) -> int:
    base = base_url(config)
    if base is None:
        print("status: the controller's HTTP listener is switched off (metrics.enabled: false in "
              f"{config.source}); nothing to ask")
        return UNREACHABLE
    try:
        code, health = ask(config, "/healthz")
        if code in (401, 403):
            print(f"status: the controller at {base} refused to answer /healthz ({code}: {health.get('error')}); "
                  f"{_token_advice(config)}")
            return REFUSED
        calls_code, calls = ask(config, "/calls")
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"status: no controller answers at {base} ({reason}); is it running with {config.source}?")
        return UNREACHABLE
    shown = calls.get("calls", []) if calls_code == 200 else None
    print(f"controller at {base}: " + "\n".join(render(health, shown)))
    if calls_code == 200:
        return 0 if code == 200 and health.get("healthy") else 1
    if calls_code == 403 and not config.http.token:
        print("(the calls are listed only with the API token: set http.token in the controller's configuration, "
              "restart it, and run status with the same file)")
        return 0 if code == 200 and health.get("healthy") else 1
    print(f"status: the controller refused to list the calls ({calls_code}: {calls.get('error')}); "
          f"{_token_advice(config)}")
    return REFUSED


def _token_advice(config) -> str:
    if config.http.token:
        return (f"http.token in {config.source} is not the running controller's: give both the same token (e.g. the "
                "same ${FSCTL_HTTP_TOKEN}), and restart the controller after changing its own")
    return f"set http.token in {config.source} to the running controller's token"
