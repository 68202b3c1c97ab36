"""``fs-stream-controller status``: ask the running controller (its HTTP listener) how it is and what it records.

Exit status: 0 healthy, 1 unhealthy (the reasons are printed), 3 the controller cannot be reached.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

UNREACHABLE = 3
COLUMNS = (("uuid", "UUID", 36), ("rule", "RULE", 14), ("mix", "MIX", 6), ("rate", "RATE", 5),
           ("phase", "PHASE", 9), ("seconds", "SECONDS", 8), ("bytes", "BYTES", 10),
           ("last_frame_age_s", "LAST FRAME", 10), ("connections", "CONN", 4), ("gaps", "GAPS", 4))


def fetch(base: str, path: str, timeout: float = 5.0) -> tuple[int, dict]:
    """(HTTP status, JSON body) of one GET; a 503 from /healthz is an answer, not an error."""
    try:
        with urllib.request.urlopen(base + path, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def render(health: dict, calls: list[dict]) -> list[str]:
    lines = ["healthy" if health.get("healthy") else "UNHEALTHY"]
    lines += [f"  - {reason}" for reason in health.get("reasons", [])]
    esl, rec = health.get("esl", {}), health.get("recorder", {})
    lines.append(f"Event Socket {esl.get('host')}:{esl.get('port')} "
                 f"{'connected' if esl.get('connected') else 'NOT connected'}; recorder "
                 f"{'listening on port ' + str(rec.get('port')) if rec.get('listening') else 'NOT listening'} "
                 f"({rec.get('public_url')}), recordings in {rec.get('directory')}")
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
    http = config.metrics
    if http is None or not http.enabled:
        print("status: the controller's HTTP listener is switched off (metrics.enabled: false in "
              f"{config.source}); nothing to ask")
        return UNREACHABLE
    host = "127.0.0.1" if http.listen_host in ("0.0.0.0", "::", "") else http.listen_host
    base = f"http://{host}:{http.listen_port}"
    try:
        code, health = fetch(base, "/healthz")
        _, calls = fetch(base, "/calls")
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"status: no controller answers at {base} ({reason}); is it running with {config.source}?")
        return UNREACHABLE
    print(f"controller at {base}: " + "\n".join(render(health, calls.get("calls", []))))
    return 0 if code == 200 and health.get("healthy") else 1
