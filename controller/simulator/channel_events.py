"""Event headers as FreeSWITCH 1.10.12 writes them, derived from the captures. No I/O.

The header names, their order and the fixed values come from the captured events; everything
that belongs to one channel or one moment (uuids, caller, destination, timestamps, Event-Sequence,
SIP tags) is generated. Channel variables are an ordered list per channel: FreeSWITCH moves a
variable to the end when it is set again, and the events show that order.
"""

from __future__ import annotations

import email.utils
import hashlib
import time
from dataclasses import dataclass

from .audio_stream_rules import USAGE_SYNTAX

FREESWITCH_VERSION = "1.10.12-release~64bit"
MOD_AUDIO_STREAM_FILE = "/usr/local/lib64/freeswitch/mod/mod_audio_stream.so"

# Where FreeSWITCH says each event comes from: (file, function, line), as captured.
CALLED_FROM = {
    "CHANNEL_CREATE": ("switch_core_state_machine.c", "switch_core_session_run", "626"),
    "CHANNEL_ANSWER": ("switch_channel.c", "switch_channel_perform_mark_answered", "3846"),
    "CHANNEL_HANGUP": ("switch_channel.c", "switch_channel_perform_hangup", "3445"),
    "CHANNEL_HANGUP_COMPLETE": ("switch_core_state_machine.c", "switch_core_session_reporting_state", "943"),
    "CUSTOM": ("mod_audio_stream.c", "responseHandler", "16"),
    "BACKGROUND_JOB": ("mod_event_socket.c", "api_exec", "1572"),
    "API": ("switch_loadable_module.c", "switch_api_execute", "2954"),
    "SHUTDOWN": ("switch_core.c", "switch_core_destroy", "3023"),
    "MODULE_UNLOAD": ("switch_loadable_module.c", "switch_loadable_module_unprocess", "1297"),
    "HEARTBEAT": ("switch_core.c", "send_heartbeat", "95"),
    "PLAYBACK_START": ("switch_ivr_play_say.c", "switch_ivr_play_file", "1646"),
    "PLAYBACK_STOP": ("switch_ivr_play_say.c", "switch_ivr_play_file", "2020"),
}
MAX_SESSIONS = 200
SESSIONS_PER_SEC = 50
IDLE_CPU = 97.5

# Channel-State, Channel-Call-State, Channel-State-Number, Answer-State per moment of a call.
PHASES = {
    "created": ("CS_INIT", "DOWN", "2", "ringing"),
    "ringing": ("CS_EXECUTE", "RINGING", "4", "ringing"),
    "answering": ("CS_EXECUTE", "RINGING", "4", "answered"),  # CHANNEL_ANSWER fires mid-transition
    # mod_loopback's null endpoint answers in CS_CONSUME_MEDIA, never having rung (originate waits for it).
    "answering_null": ("CS_CONSUME_MEDIA", "DOWN", "7", "answered"),
    "answered": ("CS_EXECUTE", "ACTIVE", "4", "answered"),
    "hangup": ("CS_EXECUTE", "ACTIVE", "10", "hangup"),
    "reporting": ("CS_REPORTING", "HANGUP", "11", "hangup"),
}

CODECS = {  # codec rate -> (name, bit rate, RTP payload type)
    8000: ("PCMU", "64000", "0"),
    16000: ("G722", "64000", "9"),
}

Q850 = {
    "NORMAL_CLEARING": "16",
    "USER_BUSY": "17",
    "NO_USER_RESPONSE": "18",
    "NO_ANSWER": "19",
    "CALL_REJECTED": "21",
    "NORMAL_UNSPECIFIED": "31",
    "ORIGINATOR_CANCEL": "487",
    "MANAGER_REQUEST": "503",
    "SYSTEM_SHUTDOWN": "503",
}


@dataclass(frozen=True)
class SwitchIdentity:
    core_uuid: str
    hostname: str = "freeswitch-sim"
    ipv4: str = "127.0.0.1"
    ipv6: str = "::1"


@dataclass(frozen=True)
class ChannelFacts:
    """What a channel's headers are made of, at one moment."""

    uuid: str
    call_uuid: str
    direction: str  # "inbound" or "outbound" (a bridged B-leg)
    caller_id_name: str
    caller_id_number: str
    destination: str
    context: str
    codec_rate: int
    created_us: int
    answered_us: int = 0
    hangup_us: int = 0
    bridged_us: int = 0
    hangup_cause: str = ""
    other_leg_uuid: str = ""
    dial_target: str = ""  # what a B-leg was dialled as (bridge_to)
    # "sofia" (a SIP leg, as captured) or "null" (mod_loopback's null endpoint: an originated test call,
    # derived from the source: L16 at the leg's rate, no SIP, its caller profile made by originate).
    endpoint: str = "sofia"
    callee_id_name: str = ""
    callee_id_number: str = ""
    logical_direction: str = ""  # "": the same as direction
    hit_dialplan: bool | None = None  # None: true for inbound legs only
    orig_caller_id_name: str | None = None  # None: the caller id (the profile's first one)
    orig_caller_id_number: str | None = None
    ani: str | None = None

    @property
    def channel_name(self) -> str:
        if self.endpoint == "null":
            return f"null/{self.destination}"
        if self.direction == "outbound":
            # A dial string such as user/1001 names the endpoint by its last part.
            endpoint = (self.dial_target or self.destination).rsplit("/", 1)[-1]
            return f"sofia/internal/{endpoint}@127.0.0.1:5080"
        return f"sofia/internal/{self.caller_id_number}@127.0.0.1:5070"

    @property
    def codec(self) -> tuple[str, str, str]:
        if self.endpoint == "null":
            return ("L16", str(self.codec_rate * 16), "")  # raw 16-bit samples: no payload type
        return CODECS[self.codec_rate]

    def sip_token(self, salt: str, length: int) -> str:
        # Per-channel SIP identifiers: stable for a channel, different between channels.
        return hashlib.sha1(f"{salt}:{self.uuid}".encode()).hexdigest()[:length]


def now_us() -> int:
    return time.time_ns() // 1000


def _stamp(us: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(us / 1e6))


def event_headers(
    identity: SwitchIdentity, name: str, sequence: int, timestamp_us: int, subclass: str | None = None,
    called_from: tuple[str, str, str] | None = None,
) -> list[tuple[str, str]]:
    """The headers every event starts with (a CUSTOM event names its subclass first). called_from: the
    (file, function, line) that fired it, when not the one CALLED_FROM gives for its name."""
    calling_file, function, line = called_from or CALLED_FROM.get("CUSTOM" if subclass else name,
                                                                  ("switch_event.c", "", "0"))
    headers = [("Event-Subclass", subclass)] if subclass else []
    return headers + [
        ("Event-Name", "CUSTOM" if subclass else name),
        ("Core-UUID", identity.core_uuid),
        ("FreeSWITCH-Hostname", identity.hostname),
        ("FreeSWITCH-Switchname", identity.hostname),
        ("FreeSWITCH-IPv4", identity.ipv4),
        ("FreeSWITCH-IPv6", identity.ipv6),
        ("Event-Date-Local", _stamp(timestamp_us)),
        ("Event-Date-GMT", email.utils.formatdate(timestamp_us / 1e6, usegmt=True)),
        ("Event-Date-Timestamp", str(timestamp_us)),
        ("Event-Calling-File", calling_file),
        ("Event-Calling-Function", function),
        ("Event-Calling-Line-Number", line),
        ("Event-Sequence", str(sequence)),
    ]


def channel_data(facts: ChannelFacts, phase: str, variables: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """switch_channel_event_set_data: channel state, caller profile, then every channel variable."""
    state, call_state, state_number, answer_state = PHASES[phase]
    if phase == "hangup" and not facts.answered_us:
        call_state = "RINGING"
    codec_name, bit_rate, _ = facts.codec
    rate = str(facts.codec_rate)
    direction = facts.direction
    hit_dialplan = direction == "inbound" if facts.hit_dialplan is None else facts.hit_dialplan
    headers = [
        ("Channel-State", state),
        ("Channel-Call-State", call_state),
        ("Channel-State-Number", state_number),
        ("Channel-Name", facts.channel_name),
        ("Unique-ID", facts.uuid),
        ("Call-Direction", direction),
        ("Presence-Call-Direction", direction),
        ("Channel-HIT-Dialplan", "true" if hit_dialplan else "false"),
        ("Channel-Call-UUID", facts.call_uuid),
        ("Answer-State", answer_state),
    ]
    if facts.hangup_cause:
        headers.append(("Hangup-Cause", facts.hangup_cause))
    headers += [
        ("Channel-Read-Codec-Name", codec_name),
        ("Channel-Read-Codec-Rate", rate),
        ("Channel-Read-Codec-Bit-Rate", bit_rate),
        ("Channel-Write-Codec-Name", codec_name),
        ("Channel-Write-Codec-Rate", rate),
        ("Channel-Write-Codec-Bit-Rate", bit_rate),
    ]
    if facts.endpoint == "null":
        headers += _caller_profile(facts)
        return headers + [(f"variable_{name}", value) for name, value in variables]
    headers += [
        ("Caller-Direction", direction),
        ("Caller-Logical-Direction", direction),
        ("Caller-Username", facts.caller_id_number),
        ("Caller-Dialplan", "XML"),
        ("Caller-Caller-ID-Name", facts.caller_id_name),
        ("Caller-Caller-ID-Number", facts.caller_id_number),
        ("Caller-Orig-Caller-ID-Name", facts.caller_id_name),
        ("Caller-Orig-Caller-ID-Number", facts.caller_id_number),
        ("Caller-Network-Addr", "127.0.0.1"),
        ("Caller-ANI", facts.caller_id_number),
        ("Caller-Destination-Number", facts.destination),
        ("Caller-Unique-ID", facts.uuid),
        ("Caller-Source", "mod_sofia"),
        ("Caller-Context", facts.context),
        ("Caller-Channel-Name", facts.channel_name),
        ("Caller-Profile-Index", "1"),
    ] + _profile_times(facts)
    if facts.other_leg_uuid:
        headers += [
            ("Other-Type", "originator" if direction == "outbound" else "originatee"),
            ("Other-Leg-Direction", "inbound" if direction == "outbound" else "outbound"),
            ("Other-Leg-Unique-ID", facts.other_leg_uuid),
        ]
    return headers + [(f"variable_{name}", value) for name, value in variables]


def _profile_times(facts: ChannelFacts) -> list[tuple[str, str]]:
    """The caller profile's times and flags, which every profile ends with."""
    return [
        ("Caller-Profile-Created-Time", str(facts.created_us)),
        ("Caller-Channel-Created-Time", str(facts.created_us)),
        ("Caller-Channel-Answered-Time", str(facts.answered_us)),
        ("Caller-Channel-Progress-Time", "0"),
        ("Caller-Channel-Progress-Media-Time", "0"),
        ("Caller-Channel-Hangup-Time", str(facts.hangup_us)),
        ("Caller-Channel-Transfer-Time", "0"),
        ("Caller-Channel-Resurrect-Time", "0"),
        ("Caller-Channel-Bridged-Time", str(facts.bridged_us)),
        ("Caller-Channel-Last-Hold", "0"),
        ("Caller-Channel-Hold-Accum", "0"),
        ("Caller-Screen-Bit", "true"),
        ("Caller-Privacy-Hide-Name", "false"),
        ("Caller-Privacy-Hide-Number", "false"),
    ]


def _caller_profile(facts: ChannelFacts) -> list[tuple[str, str]]:
    """switch_caller_profile_event_set_data, field by field: an empty field leaves its header out (but an
    Orig- name follows whether the current name is set, so after a flip it can be empty)."""
    name, number = facts.caller_id_name, facts.caller_id_number
    orig_name = name if facts.orig_caller_id_name is None else facts.orig_caller_id_name
    orig_number = number if facts.orig_caller_id_number is None else facts.orig_caller_id_number
    optional = [
        ("Caller-Caller-ID-Name", name, name),
        ("Caller-Caller-ID-Number", number, number),
        ("Caller-Orig-Caller-ID-Name", name, orig_name),
        ("Caller-Orig-Caller-ID-Number", number, orig_number),
        ("Caller-Callee-ID-Name", facts.callee_id_name, facts.callee_id_name),
        ("Caller-Callee-ID-Number", facts.callee_id_number, facts.callee_id_number),
        ("Caller-ANI", facts.ani, facts.ani),
        ("Caller-Destination-Number", facts.destination, facts.destination),
        ("Caller-Unique-ID", facts.uuid, facts.uuid),
        ("Caller-Source", "mod_loopback", "mod_loopback"),
        ("Caller-Context", facts.context, facts.context),
        ("Caller-Channel-Name", facts.channel_name, facts.channel_name),
        ("Caller-Profile-Index", "1", "1"),
    ]
    headers = [
        ("Caller-Direction", facts.direction),
        ("Caller-Logical-Direction", facts.logical_direction or facts.direction),
    ]
    headers += [(header, value or "") for header, present, value in optional if present]
    return headers + _profile_times(facts)


def channel_event(
    identity: SwitchIdentity,
    name: str,
    sequence: int,
    timestamp_us: int,
    facts: ChannelFacts,
    phase: str,
    variables: list[tuple[str, str]],
    subclass: str | None = None,
) -> list[tuple[str, str]]:
    headers = event_headers(identity, name, sequence, timestamp_us, subclass)
    if name == "CHANNEL_HANGUP_COMPLETE":
        # The reporting state adds the cause itself, before the channel data repeats it.
        headers.append(("Hangup-Cause", facts.hangup_cause))
    return headers + channel_data(facts, phase, variables)


# ---- channel variables, in the order FreeSWITCH sets them ----


def _sdp(facts: ChannelFacts, origin: str, port: str, sendrecv: bool) -> str:
    codec_name, _, payload_type = facts.codec
    lines = [
        "v=0",
        origin,
        "s=FreeSWITCH" if sendrecv else "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} RTP/AVP {payload_type} 101",
        f"a=rtpmap:{payload_type} {codec_name}/{facts.codec_rate}",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=ptime:20",
    ]
    if sendrecv:
        lines.append("a=sendrecv")
    return "\r\n".join(lines) + "\r\n"


def created_variables(facts: ChannelFacts) -> list[tuple[str, str]]:
    codec_name, bit_rate, payload_type = facts.codec
    rate = str(facts.codec_rate)
    number, name, dest = facts.caller_id_number, facts.caller_id_name, facts.destination
    call_id = f"{facts.sip_token('call-id', 12)}@127.0.0.1"
    from_tag = facts.sip_token("from-tag", 10)
    return [
        ("direction", facts.direction),
        ("uuid", facts.uuid),
        ("call_uuid", facts.call_uuid),
        ("session_id", str(int(facts.sip_token("session", 4), 16) % 1000 + 1)),
        ("sip_from_user", number),
        ("sip_from_port", "5070"),
        ("sip_from_uri", f"{number}@127.0.0.1:5070"),
        ("sip_from_host", "127.0.0.1"),
        ("video_media_flow", "disabled"),
        ("text_media_flow", "disabled"),
        ("channel_name", facts.channel_name),
        ("sip_call_id", call_id),
        ("sip_local_network_addr", "127.0.0.1"),
        ("sip_network_ip", "127.0.0.1"),
        ("sip_network_port", "5070"),
        ("sip_invite_stamp", str(facts.created_us)),
        ("sip_received_ip", "127.0.0.1"),
        ("sip_received_port", "5070"),
        ("sip_via_protocol", "udp"),
        ("sip_from_user_stripped", number),
        ("sip_from_tag", from_tag),
        ("sofia_profile_name", "internal"),
        ("sofia_profile_url", "sip:mod_sofia@127.0.0.1:5060"),
        ("recovery_profile_name", "internal"),
        ("sip_full_via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-" + facts.sip_token("branch", 8)),
        ("sip_from_display", name),
        ("sip_full_from", f'"{name}" <sip:{number}@127.0.0.1:5070>;tag={from_tag}'),
        ("sip_full_to", f"<sip:{dest}@127.0.0.1:5060>"),
        ("sip_req_user", dest),
        ("sip_req_port", "5060"),
        ("sip_req_uri", f"{dest}@127.0.0.1:5060"),
        ("sip_req_host", "127.0.0.1"),
        ("sip_to_user", dest),
        ("sip_to_port", "5060"),
        ("sip_to_uri", f"{dest}@127.0.0.1:5060"),
        ("sip_to_host", "127.0.0.1"),
        ("sip_contact_user", number),
        ("sip_contact_port", "5070"),
        ("sip_contact_uri", f"{number}@127.0.0.1:5070"),
        ("sip_contact_host", "127.0.0.1"),
        ("sip_via_host", "127.0.0.1"),
        ("sip_via_port", "5070"),
        ("max_forwards", "70"),
        ("switch_r_sdp", _sdp(facts, "o=user1 53655765 2353687637 IN IP4 127.0.0.1", "6000", sendrecv=False)),
        ("ep_codec_string", f"CORE_PCM_MODULE.{codec_name}@{rate}h@20i@{bit_rate}b"),
        ("rtp_use_codec_string", "PCMU,PCMA"),
        ("remote_video_media_flow", "inactive"),
        ("remote_text_media_flow", "inactive"),
        ("remote_audio_media_flow", "sendrecv"),
        ("audio_media_flow", "sendrecv"),
        ("remote_media_ip", "127.0.0.1"),
        ("remote_media_port", "6000"),
        ("rtp_audio_recv_pt", payload_type),
        ("rtp_use_codec_name", codec_name),
        ("rtp_use_codec_rate", rate),
        ("rtp_use_codec_ptime", "20"),
        ("rtp_use_codec_channels", "1"),
        ("rtp_last_audio_codec_string", f"{codec_name}@{rate}h@20i@1c"),
        ("read_codec", codec_name),
        ("original_read_codec", codec_name),
        ("read_rate", rate),
        ("original_read_rate", rate),
        ("write_codec", codec_name),
        ("write_rate", rate),
        ("dtmf_type", "rfc2833"),
        ("endpoint_disposition", "RECEIVED"),
    ]


def null_created_variables(facts: ChannelFacts, dial_variables: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """An originated null leg's variables before it answers: the session's, its name and L16 codecs
    (switch_core_session_set_read/write_codec set these), then the dial string's {variables}."""
    rate = str(facts.codec_rate)
    return [
        ("direction", facts.direction),
        ("uuid", facts.uuid),
        ("session_id", str(int(facts.sip_token("session", 4), 16) % 1000 + 1)),
        ("channel_name", facts.channel_name),
        ("read_codec", "L16"),
        ("read_rate", rate),
        ("original_read_codec", "L16"),
        ("original_read_rate", rate),
        ("write_codec", "L16"),
        ("write_rate", rate),
    ] + list(dial_variables)


def answered_variables(facts: ChannelFacts) -> list[tuple[str, str]]:
    """Set while the answer goes out (CHANNEL_ANSWER shows them)."""
    _, _, payload_type = facts.codec
    media_port = str(16384 + int(facts.sip_token("media-port", 4), 16) % 16000 // 2 * 2)
    session = str(1795554800 + int(facts.sip_token("sdp", 4), 16) % 1000)
    return [
        ("call_uuid", facts.call_uuid),
        ("current_application", "answer"),
        (
            "rtp_local_sdp_str",
            _sdp(facts, f"o=FreeSWITCH {session} {int(session) + 1} IN IP4 127.0.0.1", media_port, sendrecv=True),
        ),
        ("local_media_ip", "127.0.0.1"),
        ("local_media_port", media_port),
        ("advertised_media_ip", "127.0.0.1"),
        ("rtp_use_timer_name", "soft"),
        ("rtp_use_pt", payload_type),
        ("rtp_use_ssrc", str(int(facts.sip_token("ssrc", 8), 16))),
        ("rtp_2833_send_payload", "101"),
        ("rtp_2833_recv_payload", "101"),
        ("remote_media_ip", "127.0.0.1"),
        ("remote_media_port", "6000"),
    ]


def confirmed_variables(facts: ChannelFacts, application: str, data: str) -> list[tuple[str, str]]:
    """Set once the caller acknowledged the answer and the dialplan moved on (to `application`)."""
    number, name, dest = facts.caller_id_number, facts.caller_id_name, facts.destination
    to_tag = facts.sip_token("to-tag", 13)
    from_tag = facts.sip_token("from-tag", 10)
    return [
        ("endpoint_disposition", "ANSWER"),
        ("sip_to_tag", to_tag),
        ("sip_from_tag", from_tag),
        ("sip_cseq", "1"),
        ("sip_call_id", f"{facts.sip_token('call-id', 12)}@127.0.0.1"),
        ("sip_full_via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-" + facts.sip_token("branch", 8)),
        ("sip_from_display", name),
        ("sip_full_from", f'"{name}" <sip:{number}@127.0.0.1:5070>;tag={from_tag}'),
        ("sip_full_to", f"<sip:{dest}@127.0.0.1:5060>;tag={to_tag}"),
        ("current_application_data", data),
        ("current_application", application),
    ]


def hangup_complete_variables(
    facts: ChannelFacts, last_app: str, last_arg: str | None, packets_in: int, packets_out: int
) -> list[tuple[str, str]]:
    """The accounting FreeSWITCH adds when the channel reaches CS_REPORTING (a null leg has no SIP or RTP)."""
    start, answer, end = facts.created_us, facts.answered_us, facts.hangup_us
    bill_us = end - answer if answer else 0
    total_us = end - start
    wait_us = answer - start if answer else 0
    _, _, payload_type = facts.codec
    packet_bytes = facts.codec_rate // 50  # one 20 ms packet of PCMU/G722
    variables = [
        ("hangup_cause", facts.hangup_cause),
        ("hangup_cause_q850", Q850.get(facts.hangup_cause, "16")),
        ("digits_dialed", "none"),
        ("start_stamp", _stamp(start)),
        ("profile_start_stamp", _stamp(start)),
    ]
    if answer:
        variables.append(("answer_stamp", _stamp(answer)))
    variables += [
        ("end_stamp", _stamp(end)),
        ("start_epoch", str(start // 1_000_000)),
        ("start_uepoch", str(start)),
        ("profile_start_epoch", str(start // 1_000_000)),
        ("profile_start_uepoch", str(start)),
        ("answer_epoch", str(answer // 1_000_000)),
        ("answer_uepoch", str(answer)),
        ("bridge_epoch", str(facts.bridged_us // 1_000_000)),
        ("bridge_uepoch", str(facts.bridged_us)),
        ("last_hold_epoch", "0"),
        ("last_hold_uepoch", "0"),
        ("hold_accum_seconds", "0"),
        ("hold_accum_usec", "0"),
        ("hold_accum_ms", "0"),
        ("resurrect_epoch", "0"),
        ("resurrect_uepoch", "0"),
        ("progress_epoch", "0"),
        ("progress_uepoch", "0"),
        ("progress_media_epoch", "0"),
        ("progress_media_uepoch", "0"),
        ("end_epoch", str(end // 1_000_000)),
        ("end_uepoch", str(end)),
        ("last_app", last_app),
    ]
    if last_arg is not None:
        variables.append(("last_arg", last_arg))
    variables += [
        ("caller_id", f'"{facts.caller_id_name}" <{facts.caller_id_number}>'),
        ("duration", str(round(total_us / 1e6))),
        ("billsec", str(round(bill_us / 1e6))),
        ("progresssec", "0"),
        ("answersec", str(wait_us // 1_000_000)),
        ("waitsec", str(wait_us // 1_000_000)),
        ("progress_mediasec", "0"),
        ("flow_billsec", str(round(total_us / 1e6))),
        ("mduration", str(total_us // 1000)),
        ("billmsec", str(bill_us // 1000)),
        ("progressmsec", "0"),
        ("answermsec", str(wait_us // 1000)),
        ("waitmsec", str(wait_us // 1000)),
        ("progress_mediamsec", "0"),
        ("flow_billmsec", str(total_us // 1000)),
        ("uduration", str(total_us)),
        ("billusec", str(bill_us)),
        ("progressusec", "0"),
        ("answerusec", str(wait_us)),
        ("waitusec", str(wait_us)),
        ("progress_mediausec", "0"),
        ("flow_billusec", str(total_us)),
    ]
    if facts.endpoint == "null":
        return variables
    variables += [
        ("sip_hangup_disposition", "send_bye"),
        ("rtp_audio_in_raw_bytes", str(packets_in * (packet_bytes + 12))),
        ("rtp_audio_in_media_bytes", str(packets_in * packet_bytes)),
        ("rtp_audio_in_packet_count", str(packets_in)),
        ("rtp_audio_in_media_packet_count", str(packets_in)),
        ("rtp_audio_in_skip_packet_count", "0"),
        ("rtp_audio_in_jitter_packet_count", "0"),
        ("rtp_audio_in_dtmf_packet_count", "0"),
        ("rtp_audio_in_cng_packet_count", "0"),
        ("rtp_audio_in_flush_packet_count", "0"),
        ("rtp_audio_in_largest_jb_size", "0"),
        ("rtp_audio_in_jitter_min_variance", "0.00"),
        ("rtp_audio_in_jitter_max_variance", "0.00"),
        ("rtp_audio_in_jitter_loss_rate", "0.00"),
        ("rtp_audio_in_jitter_burst_rate", "0.00"),
        ("rtp_audio_in_mean_interval", "20.00"),
        ("rtp_audio_in_flaw_total", "0"),
        ("rtp_audio_in_quality_percentage", "100.00"),
        ("rtp_audio_in_mos", "4.50"),
        ("rtp_audio_out_raw_bytes", str(packets_out * (packet_bytes + 12))),
        ("rtp_audio_out_media_bytes", str(packets_out * packet_bytes)),
        ("rtp_audio_out_packet_count", str(packets_out)),
        ("rtp_audio_out_media_packet_count", str(packets_out)),
        ("rtp_audio_out_skip_packet_count", "0"),
        ("rtp_audio_out_dtmf_packet_count", "0"),
        ("rtp_audio_out_cng_packet_count", "0"),
        ("rtp_audio_rtcp_packet_count", "0"),
        ("rtp_audio_rtcp_octet_count", "0"),
    ]
    return variables


# ---- other events and api texts ----


def module_unload_headers() -> list[tuple[str, str]]:
    """What MODULE_UNLOAD says about mod_audio_stream's api (after the common headers)."""
    return [
        ("type", "api"),
        ("name", "uuid_audio_stream"),
        ("description", "audio_stream API"),
        ("syntax", USAGE_SYNTAX),
        ("key", "mod_audio_stream"),
        ("filename", MOD_AUDIO_STREAM_FILE),
    ]


SHOW_CHANNELS_COLUMNS = (
    "uuid,direction,created,created_epoch,name,state,cid_name,cid_num,ip_addr,dest,application,"
    "application_data,dialplan,context,read_codec,read_rate,read_bit_rate,write_codec,write_rate,"
    "write_bit_rate,secure,hostname,presence_id,presence_data,accountcode,callstate,callee_name,"
    "callee_num,callee_direction,call_uuid,sent_callee_name,sent_callee_num,initial_cid_name,"
    "initial_cid_num,initial_ip_addr,initial_dest,initial_dialplan,initial_context"
).split(",")


def show_channels_row(
    facts: ChannelFacts, hostname: str, application: str, application_data: str, answered: bool
) -> dict[str, str]:
    codec_name, bit_rate, _ = facts.codec
    rate = str(facts.codec_rate)
    bridged = facts.other_leg_uuid
    sip = facts.endpoint != "null"  # a null leg has no network address and no dialplan in its profile
    values = {
        "uuid": facts.uuid,
        "direction": facts.direction,
        "created": _stamp(facts.created_us),
        "created_epoch": str(facts.created_us // 1_000_000),
        "name": facts.channel_name,
        "state": "CS_EXCHANGE_MEDIA" if facts.direction == "outbound" and bridged else "CS_EXECUTE",
        "cid_name": facts.caller_id_name,
        "cid_num": facts.caller_id_number,
        "ip_addr": "127.0.0.1" if sip else "",
        "dest": facts.destination,
        "application": application,
        "application_data": application_data,
        "dialplan": "XML" if sip else "",
        "context": facts.context,
        "read_codec": codec_name,
        "read_rate": rate,
        "read_bit_rate": bit_rate,
        "write_codec": codec_name,
        "write_rate": rate,
        "write_bit_rate": bit_rate,
        "hostname": hostname,
        "callstate": "ACTIVE" if answered else "RINGING",
        "call_uuid": facts.call_uuid if bridged else "",
        "initial_cid_name": facts.caller_id_name,
        "initial_cid_num": facts.caller_id_number,
        "initial_ip_addr": "127.0.0.1" if sip else "",
        "initial_dest": facts.destination,
        "initial_dialplan": "XML" if sip else "",
        "initial_context": facts.context,
    }
    return {column: values.get(column, "") for column in SHOW_CHANNELS_COLUMNS}


def uptime_text(uptime_us: int) -> str:
    """`0 years, 0 days, 0 hours, 3 minutes, 39 seconds, 658 milliseconds, 454 microseconds`"""
    seconds, micro = divmod(uptime_us, 1_000_000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    years, days = divmod(days, 365)
    return (f"{years} years, {days} days, {hours} hours, {minutes} minutes, {seconds} seconds, "
            f"{micro // 1000} milliseconds, {micro % 1000} microseconds")


def heartbeat_headers(uptime_us: int, sessions_since_start: int, sessions_now: int, peak: int) -> list[tuple[str, str]]:
    """What HEARTBEAT adds after the common headers (switch_core.c send_heartbeat), in the captured order."""
    return [
        ("Event-Info", "System Ready"),
        ("Up-Time", uptime_text(uptime_us)),
        ("FreeSWITCH-Version", FREESWITCH_VERSION),
        ("Uptime-msec", str(uptime_us // 1000)),
        ("Session-Count", str(sessions_now)),
        ("Max-Sessions", str(MAX_SESSIONS)),
        ("Session-Per-Sec", str(SESSIONS_PER_SEC)),
        ("Session-Per-Sec-Last", "0"),
        ("Session-Per-Sec-Max", str(min(peak, 1))),
        ("Session-Per-Sec-FiveMin", str(min(peak, 1))),
        ("Session-Since-Startup", str(sessions_since_start)),
        ("Session-Peak-Max", str(peak)),
        ("Session-Peak-FiveMin", str(peak)),
        ("Idle-CPU", f"{IDLE_CPU:.6f}"),
    ]


def status_text(uptime_us: int, sessions_since_start: int, sessions_now: int, peak: int) -> str:
    return (
        f"UP {uptime_text(uptime_us)}\n"
        "FreeSWITCH (Version 1.10.12-release  64bit) is ready\n"
        f"{sessions_since_start} session(s) since startup\n"
        f"{sessions_now} session(s) - peak {peak}, last 5min {peak} \n"
        f"0 session(s) per Sec out of max 50, peak {min(peak, 1)}, last 5min {min(peak, 1)} \n"
        "200 session(s) max\n"
        "min idle cpu 0.00/99.40\n"
        "Current Stack Size/Max 240K/8192K\n"
    )
