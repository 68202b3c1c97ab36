"""``fs-stream-controller check``: the configuration as the controller understands it, and, for one call, which
rule it matches and the exact Event Socket commands the controller would send for it. Pure output: nothing is
connected to."""

from __future__ import annotations

import uuid as uuid_module

from .. import audio_stream
from ..rules import CallInfo, Rule, match_rule

# What --call prints for the bearer token when every call gets its own random one.
RANDOM_TOKEN = "RANDOM-TOKEN-PER-CALL"


def describe_rule(rule: Rule) -> str:
    m = rule.match
    conditions = [f"{name}={value}" for name, value in (("destination", m.destination), ("caller", m.caller),
                                                        ("context", m.context)) if value is not None]
    conditions.append(f"direction={m.direction}")
    how = [f"{rule.mix} {rule.rate} Hz", f"{rule.buffer_ms} ms frames"]
    if rule.start_delay_s:
        how.append(f"start after {rule.start_delay_s:g} s")
    if rule.max_duration_s is not None:
        how.append(f"stop after {rule.max_duration_s:g} s")
    if rule.heartbeat_s:
        how.append(f"ping every {rule.heartbeat_s} s")
    if rule.max_streams is not None:
        how.append(f"at most {rule.max_streams} at once")
    if rule.metadata is not None:
        how.append(f"metadata {audio_stream.metadata_json(rule.metadata)}")
    state = "" if rule.enabled else " (disabled)"
    return f"{rule.name}{state} [line {rule.line}]: when {' '.join(conditions)} -> {', '.join(how)}"


def rule_warnings(rules) -> list[str]:
    """What is valid but will likely disappoint: said by `check`, not refused."""
    warnings = []
    for rule in rules:
        if rule.relay is not None and rule.mix != "mono":
            warnings.append(f"rule {rule.name} [line {rule.line}] relays a {rule.mix} stream: mixed and stereo carry "
                            "audio only while something is written to the channel, so its dialplan must play "
                            "something for the whole call (answer, then endless_playback silence_stream://-1; "
                            "see config/freeswitch/dialplan/9998_agent.xml): a parked or sleeping call sends "
                            "nothing at all")
    return warnings


def scheme(config) -> str:
    """What the switch is told to speak to the recorder when no public_url says."""
    return "wss" if config.recorder.tls else "ws"


def main(config, args) -> int:
    if not args.__dict__.get("call"):
        print(f"{config.source}: OK ({len(config.rules)} rules)")
        print(f"Event Socket {config.esl.host}:{config.esl.port}; recorder on "
              f"{config.recorder.listen_host}:{config.recorder.listen_port}, streams to "
              f"{config.recorder.public_url or scheme(config) + '://' + config.recorder.listen_host + ':<port>'}"
              f"/calls/<uuid>; "
              f"recordings in {config.recorder.directory}")
        print("rules, first enabled match wins:")
        for number, rule in enumerate(config.rules, 1):
            print(f"  {number}. {describe_rule(rule)}")
        for warning in rule_warnings(config.rules):
            print(f"warning: {warning}")
        return 0
    return _one_call(config, args)


def _one_call(config, args) -> int:
    channel = args.uuid or str(uuid_module.uuid4())
    info = CallInfo(channel, destination=args.call, context=args.context, direction=args.direction,
                    caller_number=args.caller)
    rule = match_rule(config.rules, info)
    print(f"a call from {args.caller} to {args.call} (context {args.context}, {args.direction}), "
          f"channel uuid {channel}:")
    if rule is None:
        print("  matches no rule: not streamed")
        return 1
    print(f"  matches rule {describe_rule(rule)}")
    token = config.recorder.token or RANDOM_TOKEN
    public_url = config.recorder.public_url or f"{scheme(config)}://{config.recorder.listen_host}:<port>"
    try:
        _, commands = audio_stream.start_commands(channel, info.uuid, rule, token, public_url)
    except ValueError as exc:
        print(f"  would not be streamed: {exc}")
        return 1
    when = f"{rule.start_delay_s:g} s after the answer" if rule.start_delay_s else "at the answer"
    print(f"  {when}, in one write to the Event Socket:")
    for kind, text in commands:
        print(f"    {kind} {text}")
    if rule.max_duration_s is not None:
        print(f"  after {rule.max_duration_s:g} s:\n    bgapi {audio_stream.stop_command(channel)}")
    if not config.recorder.token:
        print(f"  ({RANDOM_TOKEN} stands for the random token each call gets)")
    return 0
