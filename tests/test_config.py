"""The YAML configuration: what a valid file means, and the exact one-line error for each kind of mistake."""

from __future__ import annotations

import ast
import pathlib
import re
import textwrap

import pytest

from controller.config import (Config, ConfigError, Custom, EslConfig, Field, Headers, HookConfig, HttpConfig,
                               LimitsConfig, LoggingConfig, Match, MetricsConfig, Number, RecorderConfig, RelayConfig, Rule,
                               Section, Text, TextPattern, TlsConfig, Whole, load_config, parse_config, schema_paths)

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = pathlib.Path(__file__).resolve().parent / "data" / "config"
INVALID = sorted(DATA.glob("invalid/*.yaml"))
PASSWORD = "s3cret-Pa55"
ENV = {"ESL_PASSWORD": PASSWORD}


def parse(text: str, environ: dict[str, str] | None = None) -> Config:
    return parse_config(textwrap.dedent(text), "test.yaml", ENV if environ is None else environ)


def error_of(text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, environ)
    return str(info.value)


MINIMAL = """\
esl:
  password: ${ESL_PASSWORD}
rules:
  - name: demo
    match: {destination: "9999"}
"""


# ---- each kind of mistake: invalid/<case>.yaml must raise exactly invalid/<case>.error --------------------

def test_every_invalid_case_has_its_expected_error_file():
    assert len(INVALID) >= 11
    missing = [p.name for p in INVALID if not p.with_suffix(".error").exists()]
    assert missing == []


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_config_reports_file_line_field_and_what_is_allowed(path: pathlib.Path):
    expected = path.with_suffix(".error").read_text(encoding="utf-8").rstrip("\n")
    with pytest.raises(ConfigError) as info:
        parse_config(path.read_text(encoding="utf-8"), path.name, ENV)
    message = str(info.value)
    assert message == expected
    assert "\n" not in message
    assert PASSWORD not in message


def test_load_config_names_the_file_path_as_given(tmp_path: pathlib.Path):
    bad = tmp_path / "x.yaml"
    bad.write_text(MINIMAL + "    rate: 12000\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad, ENV)
    assert str(info.value) == (f"{bad}:6: rules[0].rate: 12000 is not a multiple of 8000; "
                               "use 8000, 16000, 24000, 32000 or 48000")
    assert (info.value.line, info.value.path) == (6, "rules[0].rate")


def test_missing_file_is_a_config_error(tmp_path: pathlib.Path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read the file: No such file or directory; "):
        load_config(tmp_path / "nope.yaml", ENV)


def test_config_error_is_a_value_error_for_callers_that_catch_broadly():
    assert issubclass(ConfigError, ValueError)


# ---- a whole valid file -------------------------------------------------------------------------------------

def test_full_config_round_trip():
    config = load_config(DATA / "valid" / "full.yaml", {**ENV, "RECORDER_TOKEN": "tok_ABCdef-123.456~xyz"})
    assert config.source.endswith("full.yaml")

    esl = config.esl
    assert (esl.host, esl.port, esl.password) == ("fs.example.net", 8022, PASSWORD)
    assert (esl.connect_timeout_s, esl.command_timeout_s, esl.liveness_timeout_s) == (2.5, 10.0, 90.0)
    r = esl.reconnect
    assert (r.initial_s, r.max_s, r.multiplier, r.jitter) == (1.0, 60.0, 1.5, 0.0)

    rec = config.recorder
    assert rec.listen_host == "0.0.0.0"
    assert rec.listen_port == 9000
    assert rec.public_url == "wss://recorder-1.example.net:9443/fs"  # trailing slash dropped
    assert rec.directory == "/var/spool/calls"
    assert rec.filename_template == "{date}/{rule}/{caller}-{uuid}.wav"
    assert rec.max_call_s == 600.0
    assert rec.max_call_bytes == 50_000_000
    assert rec.token == "tok_ABCdef-123.456~xyz"

    assert config.metrics is not None
    assert (config.metrics.listen_host, config.metrics.listen_port) == ("0.0.0.0", 9100)
    assert config.logging.level == "DEBUG"

    assert [rule.name for rule in config.rules] == ["sales", "support.regex", "callers", "old"]
    sales, support, callers, old = config.rules
    assert sales.match.destination.source == "0123"  # an extension with a leading zero stays as written
    assert sales.match.context.source == "public"
    assert sales.match.direction == "inbound"
    assert (sales.mix, sales.rate, sales.buffer_ms) == ("stereo", 16000, 100)
    assert (sales.start_delay_s, sales.max_duration_s) == (1.5, 120.0)
    assert (sales.heartbeat_s, sales.deflate, sales.enabled) == (5, True, True)
    assert sales.metadata == {"queue": "sales", "tier": 2, "vip": True, "score": 0.5, "none": None,
                              "tags": ["a b", "ü"], "nested": {"site": "Zürich office"}}
    assert sales.line == 34

    assert support.match.destination.regex is not None
    assert support.rate == 8000  # "8k"
    assert support.match.direction == "any"
    assert callers.match.caller.source == "/\\+?44\\d{10}/"
    assert callers.match.destination is None
    assert callers.rate == 48000
    assert old.enabled is False
    assert config.limits == LimitsConfig(max_streams=50, recorder_max_streams=300, recorder_max_connections=600,
                                         recorder_max_pending_per_address=16)


def test_the_recorder_needs_more_connections_than_streams():
    message = error_of(MINIMAL + "limits:\n  recorder_max_streams: 500\n  recorder_max_connections: 500\n")
    assert message == ("test.yaml:8: limits.recorder_max_connections: 500 is not above recorder_max_streams (500); "
                       "allow more connections than streams, so a refused client can still be told why (503)")


@pytest.mark.parametrize("value, problem", [
    ("0", "0 is outside 1..200000"),
    ("many", "'many' is not a whole number"),
])
def test_recorder_max_pending_per_address_is_a_positive_whole_number(value: str, problem: str):
    assert error_of(MINIMAL + f"limits: {{recorder_max_pending_per_address: {value}}}\n") == (
        f"test.yaml:6: limits.recorder_max_pending_per_address: {problem}; a whole number of connections from one "
        "address that may be in their HTTP handshake at once, from 1 to 200000")


def test_defaults_fill_everything_left_out():
    config = parse(MINIMAL)
    esl, rec = config.esl, config.recorder
    assert (esl.host, esl.port, esl.connect_timeout_s, esl.command_timeout_s) == ("127.0.0.1", 8021, 5.0, 5.0)
    assert esl.liveness_timeout_s == 60.0
    r = esl.reconnect
    assert (r.initial_s, r.max_s, r.multiplier, r.jitter) == (0.5, 30.0, 2.0, 0.2)
    assert (rec.listen_host, rec.listen_port, rec.public_url) == ("127.0.0.1", 8080, "ws://127.0.0.1:8080")
    assert (rec.directory, rec.filename_template) == ("./recordings", "{date}/{uuid}.wav")
    assert (rec.max_call_s, rec.max_call_bytes, rec.token) == (4 * 3600.0, 1024**3, None)
    assert config.metrics == MetricsConfig()  # on by default: 127.0.0.1:9464
    assert config.logging.level == "INFO"
    assert config.limits.recorder_max_pending_per_address == 64
    (rule,) = config.rules
    assert (rule.mix, rule.rate, rule.buffer_ms, rule.start_delay_s, rule.max_duration_s) == ("mono", 8000, 20, 0.0, None)
    assert (rule.metadata, rule.heartbeat_s, rule.deflate, rule.enabled) == (None, 0, False, True)
    assert rule.match.direction == "inbound"
    assert rule.match.destination.source == "9999"


def test_a_key_left_out_gets_its_dataclass_default():
    # The tables write no defaults: what a file leaves out must come out as the dataclass built by hand.
    config = parse(MINIMAL)
    assert config.esl == EslConfig(password=PASSWORD)
    assert config.recorder == RecorderConfig(public_url="ws://127.0.0.1:8080")
    assert (config.metrics, config.logging, config.limits, config.hook) == (
        MetricsConfig(), LoggingConfig(), LimitsConfig(), None)
    assert config.rules == (Rule(name="demo", match=Match(destination=TextPattern("9999")), line=4),)
    hook = parse(MINIMAL + "hook: {url: 'http://h/x'}\n").hook
    assert hook == HookConfig(url="http://h/x")
    relay = parse(MINIMAL + "    relay: {url: 'wss://agent'}\n").rules[0].relay
    assert relay == RelayConfig(url="wss://agent")
    assert relay.headers is not hook.headers  # each object gets its own {}


def row_for(build, row: Field) -> str:
    """The TypeError a one-row Section for ``build`` raises on creation ('' when it is accepted)."""
    try:
        Section("a test section", build, (row,))
    except TypeError as exc:
        return str(exc)
    return ""


def test_a_row_that_disagrees_with_its_dataclass_field_is_refused_on_import():
    assert row_for(LimitsConfig, Field("max_streams", Whole(1, 10, "{lo}..{hi}"))) == ""
    assert row_for(LimitsConfig, Field("max_streams", Whole(1, 10, "{lo}..{hi}"), 10)) == (
        "LimitsConfig.max_streams: settings.py gives it a default; the row must not make it required or write "
        "another")
    assert row_for(LimitsConfig, Field("max_streams", Whole(1, 10, "x"), required="give it")).startswith(
        "LimitsConfig.max_streams: settings.py gives it a default;")
    assert row_for(LimitsConfig, Field("max_stream", Whole(1, 10, "x"))) == (
        "LimitsConfig.max_stream: the table has a row for a field the dataclass does not have")
    assert row_for(EslConfig, Field("password", Text())) == (
        "EslConfig.password: has no default in settings.py; make the row required or write its default")
    # Secrecy comes from the settings field: a kind that cannot keep it, or always keeps it, is refused.
    assert row_for(EslConfig, Field("password", Custom(lambda r, node, path: "x", "x"), required="x")) == (
        "EslConfig.password: settings.py declares it secret, but a Custom cannot keep a value out of messages")
    assert row_for(RelayConfig, Field("custom_parameters", Headers())) == (
        "RelayConfig.custom_parameters: settings.py declares it not secret, but a Headers always does")
    assert row_for(EslConfig, Field("password", Text(), required="x")) == ""


def test_a_ranges_allowed_text_names_the_bounds_it_checks():
    assert Whole(20, 1000, "a multiple of {step} from {lo} to {hi}", step=20).allowed == (
        "a multiple of 20 from 20 to 1000")
    assert Number(0, 7 * 86400, "above {lo} and at most {hi}").allowed == "above 0 and at most 604800"
    assert Number(0.5, 2.5, "{lo} to {hi}").allowed == "0.5 to 2.5"


def test_config_objects_are_frozen():
    config = parse(MINIMAL)
    with pytest.raises(AttributeError):
        config.esl.port = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        config.rules[0].rate = 16000  # type: ignore[misc]


def test_shipped_example_and_demo_configs_load():
    example = load_config(ROOT / "config" / "controller.yaml", {"ESL_PASSWORD": "from-env"})
    assert example.esl.password == "from-env"
    assert [r.name for r in example.rules if r.enabled] == ["support-line"]
    demo = load_config(ROOT / "config" / "demo.yaml", {})
    assert (demo.esl.host, demo.esl.port, demo.esl.password) == ("127.0.0.1", 8021, "ClueCon")
    assert (demo.recorder.listen_host, demo.recorder.listen_port) == ("127.0.0.1", 8080)
    assert demo.recorder.public_url == "ws://127.0.0.1:8080"
    assert demo.recorder.directory == "./recordings"
    (rule,) = demo.rules
    assert (rule.match.destination.source, rule.mix, rule.rate) == ("9999", "mono", 8000)


def test_shipped_example_names_the_missing_password_variable():
    with pytest.raises(ConfigError, match=r"controller\.yaml:16: esl\.password: environment variable ESL_PASSWORD "
                                          r"is not set; set ESL_PASSWORD or write the value in the file"):
        load_config(ROOT / "config" / "controller.yaml", {})


# ---- environment substitution -------------------------------------------------------------------------------

def test_env_substitution_whole_and_embedded_and_typed():
    config = parse("""\
        esl:
          password: ${ESL_PASSWORD}
          host: ${FS_HOST}
          port: ${FS_PORT}
        recorder:
          directory: /data/${SITE}/calls-${SITE}
          public_url: ws://${FS_HOST}:8080
        rules:
          - name: demo
            match: {destination: "${EXT}"}
            deflate: ${DEFLATE}
            metadata: {site: "${SITE}", literal: "$${NOT_A_VAR}"}
        """, {**ENV, "FS_HOST": "fs1.local", "FS_PORT": "8022", "SITE": "ber", "EXT": "0042", "DEFLATE": "true"})
    assert config.esl.host == "fs1.local"
    assert config.esl.port == 8022  # a plain ${...} becomes a number just as if the number were written
    assert config.recorder.directory == "/data/ber/calls-ber"
    assert config.recorder.public_url == "ws://fs1.local:8080"
    rule = config.rules[0]
    assert rule.match.destination.source == "0042"
    assert rule.deflate is True
    assert rule.metadata == {"site": "ber", "literal": "${NOT_A_VAR}"}


def test_env_value_is_checked_like_a_written_value():
    message = error_of(MINIMAL.replace("esl:\n", "esl:\n  port: ${FS_PORT}\n"), {**ENV, "FS_PORT": "99999"})
    assert message == "test.yaml:2: esl.port: 99999 is outside 1..65535; use a port number from 1 to 65535"


def test_malformed_env_reference():
    message = error_of(MINIMAL.replace("${ESL_PASSWORD}", "${ESL PASSWORD}"))
    assert message == ("test.yaml:2: esl.password: has a '${' that is not a complete ${NAME} reference; "
                       "write ${NAME} with letters, digits and _, or $${ for a literal ${")


# ---- secrets stay secret ------------------------------------------------------------------------------------

def test_password_and_token_are_masked_in_repr():
    config = parse(MINIMAL.replace("rules:", "recorder:\n  token: ${TOKEN}\nrules:"),
                   {**ENV, "TOKEN": "Tok3n-abcdefghijklmnop"})
    assert config.esl.password == PASSWORD
    for text in (repr(config), str(config), repr(config.esl), repr(config.recorder), f"{config}"):
        assert PASSWORD not in text
        assert "Tok3n-abcdefghijklmnop" not in text
    assert "password='***'" in repr(config.esl)
    assert "token='***'" in repr(config.recorder)
    assert "token=None" in repr(parse(MINIMAL).recorder)  # an absent token is not pretended to exist


@pytest.mark.parametrize("esl_lines", [
    "  password: [s3cret-Pa55]\n",          # wrong type
    "  password: \"s3cret-Pa55\n",          # broken quoting: the YAML error must not quote the line
    "  password: s3cret-Pa55\n  port: s3cret-Pa55x\n",
])
def test_password_never_appears_in_errors(esl_lines: str):
    message = error_of("esl:\n" + esl_lines + "rules:\n  - name: demo\n    match: {destination: '1'}\n", {})
    assert "s3cret-Pa55" not in message.replace("s3cret-Pa55x", "")
    assert message.startswith("test.yaml:")


def test_bad_token_error_does_not_show_the_token():
    message = error_of(MINIMAL.replace("rules:", "recorder:\n  token: has spaces in it and is secret\nrules:"))
    assert "secret" not in message
    assert message.startswith("test.yaml:4: recorder.token: the token (30 characters) does not fit the rules; ")


# ---- smaller checks that users meet ---------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [("8k", 8000), ("16k", 16000), ("8000", 8000), ("48000", 48000),
                                             ("24000", 24000)])
def test_rate_forms_are_normalised_to_integers(value: str, expected: int):
    assert parse(MINIMAL + f"    rate: {value}\n").rules[0].rate == expected


def test_quoted_number_is_not_a_rate():
    assert error_of(MINIMAL + '    rate: "8000"\n') == (
        "test.yaml:6: rules[0].rate: '8000' is not a sample rate; use 8000, 16000, 24000, 32000 or 48000 "
        "(or 8k, 16k)")


def test_public_url_is_required_when_it_cannot_be_derived():
    message = error_of(MINIMAL.replace("rules:", "recorder:\n  listen_host: 0.0.0.0\nrules:"))
    assert message == ("test.yaml:4: recorder.public_url: is required when listen_host is a wildcard; "
                       "give the URL FreeSWITCH connects to, e.g. ws://10.0.0.5:8080")


def test_any_free_port_derives_the_public_url_once_the_recorder_listens():
    config = parse(MINIMAL.replace("rules:", "recorder:\n  listen_port: 0\nrules:"))
    assert (config.recorder.listen_port, config.recorder.public_url) == (0, None)


@pytest.mark.parametrize("url, problem", [
    ("http://127.0.0.1:8080", "'http://127.0.0.1:8080' does not start with ws:// or wss://"),
    ("ws://rec_1:8080", "'ws://rec_1:8080' has host 'rec_1', which has characters other than letters, digits, "
                        "'-' and '.'"),
    ("ws://[::1]:8080", "'ws://[::1]:8080' has host '[', which has characters other than letters, digits, "
                        "'-' and '.'"),
    ("ws://127.0.0.1:8080/base?x=1", "'ws://127.0.0.1:8080/base?x=1' has a query"),
    ("ws://127.0.0.1:70000", "'ws://127.0.0.1:70000' has port 70000, outside 1..65535"),
])
def test_public_url_follows_the_modules_rules(url: str, problem: str):
    message = error_of(MINIMAL.replace("rules:", f"recorder:\n  public_url: {url}\nrules:"))
    assert message.startswith(f"test.yaml:4: recorder.public_url: {problem}; use ws:// or wss://")



# ---- recorder.tls -----------------------------------------------------------------------------------------------

CERT_RULES = ("the path of a readable PEM file: the recorder's certificate, then any intermediate certificates (a "
              "relative path is from the working directory)")
KEY_RULES = ("the path of a readable PEM file: the certificate's private key, not encrypted (a relative path is "
             "from the working directory)")


@pytest.fixture
def tls_files(tmp_path: pathlib.Path) -> tuple[str, str]:
    # Only their being readable files is checked at load; the recorder reads the PEM when it listens.
    cert, key = tmp_path / "rec.crt", tmp_path / "rec.key"
    cert.write_text("certificate\n")
    key.write_text("key\n")
    return str(cert), str(key)


def with_recorder(*lines: str) -> str:
    return MINIMAL.replace("rules:", "recorder:\n" + "".join(f"  {line}\n" for line in lines) + "rules:")


def test_tls_is_read_and_derives_a_wss_public_url(tls_files):
    cert, key = tls_files
    assert parse(MINIMAL).recorder.tls is None
    recorder = parse(with_recorder(f"tls: {{certfile: '{cert}', keyfile: '{key}'}}")).recorder
    assert recorder.tls == TlsConfig(certfile=cert, keyfile=key)
    assert recorder.public_url == "wss://127.0.0.1:8080"
    written = parse(with_recorder("public_url: wss://rec.example.net:8443/fs",
                                  f"tls: {{certfile: '{cert}', keyfile: '{key}'}}")).recorder
    assert written.public_url == "wss://rec.example.net:8443/fs"
    any_port = parse(with_recorder("listen_port: 0", f"tls: {{certfile: '{cert}', keyfile: '{key}'}}")).recorder
    assert any_port.public_url is None  # derived from the port once the recorder listens


def test_tls_files_must_be_readable_files(tls_files, tmp_path: pathlib.Path):
    cert, key = tls_files
    missing = str(tmp_path / "nope.key")
    assert error_of(with_recorder("tls:", f"  certfile: '{cert}'", f"  keyfile: '{missing}'")) == (
        f"test.yaml:6: recorder.tls.keyfile: cannot read '{missing}': No such file or directory; {KEY_RULES}")
    assert error_of(with_recorder("tls:", f"  certfile: '{tmp_path}'", f"  keyfile: '{key}'")) == (
        f"test.yaml:5: recorder.tls.certfile: '{tmp_path}' is not a file; {CERT_RULES}")


@pytest.mark.parametrize("tls, expected", [
    ("tls: {certfile: '{cert}'}", f"test.yaml:4: recorder.tls.keyfile: is required but missing; give {KEY_RULES}"),
    ("tls: {keyfile: '{key}'}", f"test.yaml:4: recorder.tls.certfile: is required but missing; give {CERT_RULES}"),
    ("tls: {certfile: ['{cert}'], keyfile: '{key}'}",
     f"test.yaml:4: recorder.tls.certfile: expected text, got a list; {CERT_RULES}"),
    ("tls: '{cert}'", "test.yaml:4: recorder.tls: expected the tls settings (a mapping of keys), got text; "
                      "allowed keys: certfile, keyfile"),
    ("tls: {certfile: '{cert}', keyfile: '{key}', ca: '{cert}'}",
     "test.yaml:4: recorder.tls.ca: unknown key; allowed keys: certfile, keyfile"),
])
def test_tls_errors(tls_files, tls: str, expected: str):
    cert, key = tls_files
    assert error_of(with_recorder(tls.replace("{cert}", cert).replace("{key}", key))) == expected


def test_public_url_scheme_must_fit_tls(tls_files):
    cert, key = tls_files
    tls = f"tls: {{certfile: '{cert}', keyfile: '{key}'}}"
    assert error_of(with_recorder("public_url: ws://rec.example.net:8443", tls)) == (
        "test.yaml:4: recorder.public_url: 'ws://rec.example.net:8443' is plain ws://, but tls is set (the "
        "recorder's port then speaks only TLS); write wss://, or leave tls out")
    assert error_of(with_recorder("listen_port: 8443", "public_url: wss://127.0.0.1:8443")) == (
        "test.yaml:5: recorder.public_url: 'wss://127.0.0.1:8443' asks for TLS from listen_host:listen_port, which "
        "speak plain WebSocket (tls is not set); set tls (certfile and keyfile), or write ws://; wss:// without tls "
        "is for a TLS proxy in front of the recorder")
    # A TLS proxy in front of the recorder: another host or port, so wss:// without tls stands.
    assert parse(with_recorder("public_url: wss://rec.example.net/fs")).recorder.public_url == (
        "wss://rec.example.net/fs")
    assert parse(with_recorder("public_url: wss://127.0.0.1:443")).recorder.tls is None

@pytest.mark.parametrize("template, problem", [
    ("{date}/{uuid}.mp3", "'{date}/{uuid}.mp3' does not end in .wav"),
    ("{date}/{caller}.wav", "'{date}/{caller}.wav' does not contain {uuid}, so two calls could share a file"),
    ("../{uuid}.wav", "'../{uuid}.wav' leaves the recordings directory"),
    ("/tmp/{uuid}.wav", "'/tmp/{uuid}.wav' leaves the recordings directory"),
    ("{uuid!r}.wav", "'{uuid!r}.wav' uses {uuid!r}, which is not a plain allowed field"),
    ("{uuid.hex}.wav", "'{uuid.hex}.wav' uses {uuid.hex}, which is not a plain allowed field"),
    ("{uuid.wav", "'{uuid.wav' is not a valid template (expected '}' before end of string)"),
])
def test_filename_template_rules(template: str, problem: str):
    message = error_of(MINIMAL.replace("rules:", f"recorder:\n  filename_template: '{template}'\nrules:"))
    assert message.startswith(f"test.yaml:4: recorder.filename_template: {problem}; fields {{date}}, ")


@pytest.mark.parametrize("snippet, expected", [
    ("    enabled: yes please\n", "test.yaml:6: rules[0].enabled: 'yes please' is not true or false; use true or false"),
    ("    start_delay_s: -1\n",
     "test.yaml:6: rules[0].start_delay_s: -1 is out of range (must be at least 0 and at most 3600); "
     "seconds after answer, from 0 to 3600"),
    ("    max_duration_s: 0\n",
     "test.yaml:6: rules[0].max_duration_s: 0 is out of range (must be above 0 and at most 604800); "
     "seconds of streaming before stop, above 0 (leave it out for no limit)"),
    ("    heartbeat_s: 1.5\n",
     "test.yaml:6: rules[0].heartbeat_s: '1.5' is not a whole number; whole seconds between pings from 0 (off) "
     "to 3600"),
    ("    buffer_ms: 0\n",
     "test.yaml:6: rules[0].buffer_ms: 0 is outside 20..1000; use a multiple of 20 from 20 to 1000 "
     "(milliseconds of audio per frame)"),
    ("    metadata: [a, b]\n",
     "test.yaml:6: rules[0].metadata: expected a mapping (sent as a JSON object), got a list; a mapping of names "
     "to text, numbers, true/false, lists or mappings; text without quotes, backslashes or control characters"),
    ("    metadata: {path: 'C:\\\\x'}\n",
     "test.yaml:6: rules[0].metadata.path: the text contains a backslash, which FreeSWITCH treats as an escape "
     "character; a mapping of names to text, numbers, true/false, lists or mappings; text without quotes, "
     "backslashes or control characters"),
    ("    name2: x\n",
     "test.yaml:6: rules[0].name2: unknown key; allowed keys: name, match, mix, rate, buffer_ms, start_delay_s, "
     "max_duration_s, metadata, max_streams, heartbeat_s, deflate, enabled, hook, record, relay"),
])
def test_rule_field_errors(snippet: str, expected: str):
    assert error_of(MINIMAL + snippet) == expected


def test_rule_name_must_be_plain():
    assert error_of(MINIMAL.replace("name: demo", "name: my rule")) == (
        "test.yaml:4: rules[0].name: 'my rule' is not a usable name; "
        "1 to 64 letters, digits, '-', '_' or '.', not starting with '.'")


def test_text_field_refuses_true_false_and_lists():
    assert error_of(MINIMAL.replace('destination: "9999"', "destination: yes")) == (
        "test.yaml:5: rules[0].match.destination: expected text, got true/false; an exact value such as 9999, "
        "or a regular expression between slashes such as /9\\d{3}/ (quote it)")
    assert error_of(MINIMAL.replace('destination: "9999"', "destination: [1, 2]")).startswith(
        "test.yaml:5: rules[0].match.destination: expected text, got a list; ")


def test_unknown_top_level_section():
    assert error_of(MINIMAL + "recordr: {}\n") == (
        "test.yaml:6: recordr: unknown key; allowed keys: esl, recorder, rules, metrics, logging, limits, catalog, "
        "storage, hook, http")


def test_metadata_too_large_for_the_module():
    big = "x" * 9000
    assert error_of(MINIMAL + f"    metadata: {{blob: {big}}}\n") == (
        "test.yaml:6: rules[0].metadata: metadata JSON is 9011 bytes, above the module's limit; a mapping of "
        "names to text, numbers, true/false, lists or mappings; text without quotes, backslashes or control "
        "characters")


def test_logging_level_any_case_and_checked():
    assert parse(MINIMAL + "logging: {level: warning}\n").logging.level == "WARNING"
    assert error_of(MINIMAL + "logging: {level: loud}\n") == (
        "test.yaml:6: logging.level: 'loud' is not a log level; use DEBUG, INFO, WARNING, ERROR, CRITICAL (any case)")


def test_metrics_section_defaults():
    config = parse(MINIMAL + "metrics: {}\n")
    assert (config.metrics.listen_host, config.metrics.listen_port) == ("127.0.0.1", 9464)


@pytest.mark.parametrize("snippet", ["", "metrics:\n", "metrics: {}\n", "metrics: {enabled: true}\n"])
def test_metrics_are_on_unless_switched_off(snippet: str):
    metrics = parse(MINIMAL + snippet).metrics
    assert metrics == MetricsConfig() and (metrics.enabled, metrics.listen_host, metrics.listen_port) == (
        True, "127.0.0.1", 9464)


def test_metrics_switched_off_keeps_the_other_keys_checked():
    metrics = parse(MINIMAL + "metrics: {enabled: false, listen_port: 9100}\n").metrics
    assert (metrics.enabled, metrics.listen_port) == (False, 9100)
    assert error_of(MINIMAL + "metrics: {enabled: no thanks}\n") == (
        "test.yaml:6: metrics.enabled: 'no thanks' is not true or false; use true or false")
    assert error_of(MINIMAL + "metrics: {enabled: false, listen_port: 99999}\n") == (
        "test.yaml:6: metrics.listen_port: 99999 is outside 0..65535; use a port number from 1 to 65535 "
        "(0: any free port)")
    full = load_config(DATA / "valid" / "full.yaml", {**ENV, "RECORDER_TOKEN": "tok_ABCdef-123.456~xyz"})
    assert full.metrics.enabled is False


# ---- the HTTP listener's guard (issue #17) ----

API_TOKEN = "Api-T0ken_abc.def~ghi+jkl/mn=="
AGENT_SECRET = "Bearer ag-S3cret-value"


def test_http_section_defaults_and_values():
    config = parse(MINIMAL)
    assert (config.http.token, config.http.allowed_hosts, config.metrics.public) == (None, (), False)
    config = parse(MINIMAL + "metrics: {public: true}\nhttp:\n  token: ${FSCTL_HTTP_TOKEN}\n"
                             "  allowed_hosts: [Fsctl.Example.NET., other-1.example]\n",
                   {**ENV, "FSCTL_HTTP_TOKEN": API_TOKEN})
    assert config.http == HttpConfig(token=API_TOKEN, allowed_hosts=("fsctl.example.net", "other-1.example"))
    assert config.metrics.public is True


@pytest.mark.parametrize("snippet, expected", [
    ("http: {token: short-one}\n", "test.yaml:6: http.token: the token (9 characters) does not fit the rules; 16 "
     "to 512 letters, digits, '-', '.', '_', '~', '+' or '/' (then any '='), e.g. ${FSCTL_HTTP_TOKEN}; make one "
     "with: openssl rand -base64 32"),
    ("http: {token: 'a token with spaces in it'}\n", "test.yaml:6: http.token: the token (25 characters) does not "
     "fit the rules; 16 to 512"),
    ("http: {token: 'abcdefghijklmnop=x'}\n", "test.yaml:6: http.token: the token (18 characters) does not fit"),
    ("http: {allowed_hosts: fsctl.example.net}\n", "test.yaml:6: http.allowed_hosts: expected a list, got text; a "
     "list of host names (letters, digits, '-' and '.'), e.g. [fsctl.example.net]; IP addresses, localhost and "
     "this machine's name are always allowed"),
    ("http: {allowed_hosts: ['fsctl.example.net:9464']}\n", "test.yaml:6: http.allowed_hosts[0]: "
     "'fsctl.example.net:9464' is not a host name; a list of host names"),
    ("http: {tokn: x}\n", "test.yaml:6: http.tokn: unknown key; allowed keys: token, allowed_hosts"),
    ("metrics: {public: yes please}\n", "test.yaml:6: metrics.public: 'yes please' is not true or false"),
])
def test_http_section_errors(snippet: str, expected: str):
    message = error_of(MINIMAL + snippet)
    assert message.startswith(expected)
    assert "short-one" not in message and "spaces" not in message and "abcdefghijklmnop" not in message


@pytest.mark.parametrize("host", ["0.0.0.0", "'::'", "10.0.0.5", "fsctl.example.net", "'::ffff:10.0.0.5'"])
def test_a_listener_off_loopback_needs_the_token(host: str):
    shown = host.strip("'")
    assert error_of(MINIMAL + f"metrics:\n  listen_port: 9100\n  listen_host: {host}\n") == (
        f"test.yaml:8: metrics.listen_host: {shown} is not a loopback address and http.token is not set: anyone who "
        "can reach port 9100 could list the live calls and make the switch place test calls; set http.token (e.g. "
        "token: ${FSCTL_HTTP_TOKEN} in an http: section), or listen on 127.0.0.1")
    config = parse(MINIMAL + f"metrics: {{listen_host: {host}}}\nhttp: {{token: {API_TOKEN}}}\n")
    assert config.http.token == API_TOKEN


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "'::1'", "localhost", "'::ffff:127.0.0.1'"])
def test_a_loopback_listener_needs_no_token(host: str):
    assert parse(MINIMAL + f"metrics: {{listen_host: {host}}}\n").http.token is None


def test_a_switched_off_listener_needs_no_token():
    assert parse(MINIMAL + "metrics: {enabled: false, listen_host: 0.0.0.0}\n").metrics.enabled is False


RELAY_AT = "test.yaml:6: rules[0].relay.url: "
WS_RULES = ("use wss:// (the agent's certificate is verified), or set insecure: true if the network between is "
            "trusted")


@pytest.mark.parametrize("relay, expected", [
    ("{url: 'ws://agent.example.net/media?key=Ag3ntK3y'}",
     f"{RELAY_AT}ws:// would send the URL's query (a key, not shown) unencrypted to agent.example.net, which is not "
     f"this host; {WS_RULES}"),
    (f"{{url: 'ws://10.0.0.7:8765/media', headers: {{Authorization: '{AGENT_SECRET}', X-Tenant: t1}}}}",
     f"{RELAY_AT}ws:// would send the headers (Authorization, X-Tenant) unencrypted to 10.0.0.7, which is not this "
     f"host; {WS_RULES}"),
    (f"{{url: 'ws://agent.example.net/m?key=Ag3ntK3y', headers: {{Authorization: '{AGENT_SECRET}'}}}}",
     f"{RELAY_AT}ws:// would send the headers (Authorization) and the URL's query (a key, not shown) unencrypted to "
     f"agent.example.net, which is not this host; {WS_RULES}"),
    ("{url: 'ws://agent.example.net/media', ca_file: /dev/null}",
     "test.yaml:6: rules[0].relay.ca_file: '/dev/null' is not a file; the path of a readable PEM file of the CA "
     "certificates that sign the agent's certificate (a relative path is from the working directory)"),
    ("{url: 'wss://agent.example.net/media', insecure: maybe}",
     "test.yaml:6: rules[0].relay.insecure: 'maybe' is not true or false; use true or false"),
])
def test_credentials_to_an_agent_travel_encrypted(relay: str, expected: str):
    message = error_of(MINIMAL + f"    relay: {relay}\n")
    assert message == expected
    assert "Ag3ntK3y" not in message and AGENT_SECRET not in message


@pytest.mark.parametrize("relay", [
    "{url: 'ws://agent.example.net/media'}",  # nothing secret goes over it
    "{url: 'ws://127.0.0.1:8765/media?key=k', headers: {Authorization: Bearer x}}",  # this host
    "{url: 'ws://localhost:8765/media?key=k'}",
    "{url: 'ws://[::1]:8765/media?key=k'}",
    "{url: 'ws://agent.example.net/media?key=k', headers: {Authorization: Bearer x}, insecure: true}",
    "{url: 'wss://agent.example.net/media?key=k', headers: {Authorization: Bearer x}}",
])
def test_an_agent_on_this_host_or_over_wss_or_said_trusted_is_accepted(relay: str):
    assert parse(MINIMAL + f"    relay: {relay}\n").rules[0].relay is not None


def test_a_ca_file_is_for_wss_and_must_hold_certificates(tmp_path: pathlib.Path):
    cert, key = tmp_path / "ca.pem", tmp_path / "ca.key"
    cert.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")  # only the form is checked
    key.write_text("-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n")
    cert, key = str(cert), str(key)
    relay = parse(MINIMAL + f"    relay: {{url: 'wss://agent.example.net/m', ca_file: {cert}}}\n").rules[0].relay
    assert (relay.ca_file, relay.insecure) == (cert, False)
    assert error_of(MINIMAL + f"    relay: {{url: 'ws://127.0.0.1:9/m', ca_file: {cert}}}\n") == (
        "test.yaml:6: rules[0].relay.ca_file: is given but url is not wss://; ca_file verifies the agent's "
        "certificate on wss://; use a wss:// url or leave ca_file out")
    assert error_of(MINIMAL + f"    relay: {{url: 'wss://agent.example.net/m', ca_file: {key}}}\n").startswith(
        f"test.yaml:6: rules[0].relay.ca_file: '{key}' holds no PEM certificate (-----BEGIN CERTIFICATE-----); ")
    missing = tmp_path / "nope.pem"
    assert error_of(MINIMAL + f"    relay: {{url: 'wss://a.example/m', ca_file: {missing}}}\n").startswith(
        f"test.yaml:6: rules[0].relay.ca_file: cannot read '{missing}': No such file or directory; ")


def test_min_free_mb_and_timestamps_defaults_and_values():
    config = parse(MINIMAL)
    assert (config.recorder.min_free_mb, config.logging.timestamps) == (500, "auto")
    full = load_config(DATA / "valid" / "full.yaml", {**ENV, "RECORDER_TOKEN": "tok_ABCdef-123.456~xyz"})
    assert (full.recorder.min_free_mb, full.logging.timestamps) == (2048, "never")
    assert parse(MINIMAL + "recorder: {min_free_mb: 0}\nlogging: {timestamps: always}\n").recorder.min_free_mb == 0


@pytest.mark.parametrize("snippet, expected", [
    ("recorder: {min_free_mb: 10000001}\n",
     "test.yaml:6: recorder.min_free_mb: 10000001 is outside 0..10000000; whole megabytes of free space the "
     "recordings directory should keep, from 0 (no floor) to 10000000"),
    ("recorder: {min_free_mb: 500MB}\n",
     "test.yaml:6: recorder.min_free_mb: '500MB' is not a whole number; whole megabytes of free space the "
     "recordings directory should keep, from 0 (no floor) to 10000000"),
    ("logging: {timestamps: Auto}\n",
     "test.yaml:6: logging.timestamps: 'Auto' is not a timestamps setting; use auto, always or never (auto: none "
     "of our own when run by systemd, whose journal adds them)"),
    ("logging: {timestamps: false}\n",
     "test.yaml:6: logging.timestamps: expected text, got true/false; use auto, always or never (auto: none of our "
     "own when run by systemd, whose journal adds them) (quote it)"),
])
def test_min_free_mb_and_timestamps_errors(snippet: str, expected: str):
    assert error_of(MINIMAL + snippet) == expected


# ---- the finished-recording hook ------------------------------------------------------------------------------

URL_RULES = ("an http:// or https:// URL with a host, e.g. https://archive.example.net/calls; credentials go in "
             "headers, not in the URL")
HEADER_RULES = ("a mapping of header names (letters, digits and !#$%&'*+-.^_`|~) to text without line breaks, "
                "e.g. Authorization: Bearer ${HOOK_TOKEN}")
COMMAND_RULES = "a list: the program, then its arguments, e.g. [/usr/local/bin/archive-call, --site, ber]"


def test_hook_round_trip_global_and_per_rule():
    config = load_config(DATA / "valid" / "full.yaml", {**ENV, "RECORDER_TOKEN": "tok_ABCdef-123.456~xyz"})
    assert config.hook == HookConfig(url="https://archive.example.net:8443/calls?site=ber",
                                     headers={"Authorization": "Bearer hook-s3cret", "X-Site": "ber"},
                                     command=("/usr/local/bin/archive-call", "--site", "ber"),
                                     timeout_s=2.5, max_attempts=3)
    sales, support, _, _ = config.rules
    assert sales.hook is None  # the top-level hook applies
    assert support.hook == HookConfig(command=("/usr/local/bin/archive-call", "--rule", "support.regex"),
                                      max_attempts=1)


def test_hook_defaults():
    config = parse(MINIMAL)
    assert config.hook is None and config.rules[0].hook is None
    hook = parse(MINIMAL + "hook: {url: 'http://10.0.0.9/calls'}\n").hook
    assert (hook.url, hook.headers, hook.command, hook.timeout_s, hook.max_attempts) == (
        "http://10.0.0.9/calls", {}, None, 10.0, 8)
    # ${...} works in headers and command like anywhere else; numbers are read as the text written.
    hook = parse(MINIMAL + "hook:\n  url: https://h/x\n  headers: {Authorization: 'Bearer ${T}', X-Try: 3}\n"
                 "  command: [sleep, 5]\n", {**ENV, "T": "abc"}).hook
    assert hook.headers == {"Authorization": "Bearer abc", "X-Try": "3"}
    assert hook.command == ("sleep", "5")


@pytest.mark.parametrize("snippet, expected", [
    ("hook: /usr/local/bin/archive\n", "test.yaml:6: hook: expected the hook settings (a mapping of keys), got "
                                      "text; allowed keys: url, headers, command, timeout_s, max_attempts"),
    ("hook: {url: http://h, retries: 3}\n", "test.yaml:6: hook.retries: unknown key; allowed keys: url, headers, "
                                             "command, timeout_s, max_attempts"),
    ("hook: {max_attempts: 3}\n", "test.yaml:6: hook: has neither url nor command; give url (the sidecar JSON is "
                                  "POSTed there) and/or command (a list: the program, then its arguments)"),
    ("hook: {url: 'ftp://h/x'}\n", f"test.yaml:6: hook.url: 'ftp://h/x' does not start with http:// or https://; "
                                   f"{URL_RULES}"),
    ("hook: {url: 'h.example.net/x'}\n", "test.yaml:6: hook.url: 'h.example.net/x' does not start with http:// or "
                                         f"https://; {URL_RULES}"),
    ("hook: {url: 'http:///x'}\n", f"test.yaml:6: hook.url: 'http:///x' has no host; {URL_RULES}"),
    ("hook: {url: 'http://h:99999/x'}\n", "test.yaml:6: hook.url: 'http://h:99999/x' has a port that is not a "
                                          f"number from 1 to 65535; {URL_RULES}"),
    ("hook: {url: 'http://h/a b'}\n", f"test.yaml:6: hook.url: 'http://h/a b' contains a space; {URL_RULES}"),
    ("hook: {url: http://h, headers: [Authorization]}\n",
     f"test.yaml:6: hook.headers: expected a mapping of header names to values, got a list; {HEADER_RULES}"),
    ("hook: {url: http://h, headers: {X Site: ber}}\n",
     f"test.yaml:6: hook.headers.X Site: 'X Site' is not a header name; {HEADER_RULES}"),
    ("hook: {url: http://h, headers: {X-Site: }}\n",
     f"test.yaml:6: hook.headers.X-Site: expected text, got nothing (empty); {HEADER_RULES} (quote it)"),
    ("hook:\n  url: http://h\n  headers:\n    X-Site: a\n    x-site: b\n",
     "test.yaml:10: hook.headers.x-site: duplicate header (first on line 9 as X-Site); write each header once "
     "(names are not case-sensitive)"),
    ("hook: {url: http://h, headers: {Content-Length: '0'}}\n",
     "test.yaml:6: hook.headers.Content-Length: is set by the hook from the body it sends; leave it out"),
    ("hook: {command: [x], headers: {X-Site: ber}}\n",
     "test.yaml:6: hook.headers: are given but url is not; headers go with the POST to url; give url or leave "
     "headers out"),
    ("hook: {command: /bin/archive --fast}\n",
     "test.yaml:6: hook.command: expected a list (the program, then its arguments), got text; write it as a list, "
     "e.g. [/usr/local/bin/archive-call, --site, ber]"),
    ("hook: {command: {program: x}}\n", f"test.yaml:6: hook.command: expected a list, got a mapping; {COMMAND_RULES}"),
    ("hook: {command: []}\n", f"test.yaml:6: hook.command: is empty; {COMMAND_RULES}"),
    ("hook: {command: [archive, '']}\n", f"test.yaml:6: hook.command[1]: is empty; {COMMAND_RULES}"),
    ("hook: {command: [archive, [a, b]]}\n", f"test.yaml:6: hook.command[1]: expected text, got a list; "
                                             f"{COMMAND_RULES}"),
    ("hook: {url: http://h, timeout_s: 0}\n", "test.yaml:6: hook.timeout_s: 0 is out of range (must be above 0 and "
                                              "at most 300); seconds per attempt, above 0 and at most 300"),
    ("hook: {url: http://h, max_attempts: 0}\n", "test.yaml:6: hook.max_attempts: 0 is outside 1..100; a whole "
                                                 "number of attempts per recording from 1 to 100 (waits 1 s, doubling "
                                                 "to 300 s, between them)"),
    ("hook: {url: http://h, max_attempts: 101}\n", "test.yaml:6: hook.max_attempts: 101 is outside 1..100; a whole "
                                                   "number of attempts per recording from 1 to 100 (waits 1 s, "
                                                   "doubling to 300 s, between them)"),
    ("    hook: {timeout_s: 5}\n", "test.yaml:6: rules[0].hook: has neither url nor command; give url (the sidecar "
                                   "JSON is POSTed there) and/or command (a list: the program, then its arguments)"),
])
def test_hook_errors(snippet: str, expected: str):
    assert error_of(MINIMAL + snippet) == expected


SECRET_HEADER = "Bearer hd-S3cret-value"


@pytest.mark.parametrize("url_and_headers", [
    f"url: 'https://user:{SECRET_HEADER[7:]}@h/x'",                      # a password in the URL
    f"url: https://h, headers: {{Authorization: \"{SECRET_HEADER}\\nX\"}}",  # a line break in a value
    f"url: https://h, headers: {{Authorization: \"{SECRET_HEADER}\\u0007\"}}",  # a control character
])
def test_hook_secrets_never_appear_in_errors(url_and_headers: str):
    message = error_of(MINIMAL + f"hook: {{{url_and_headers}}}\n")
    assert message.startswith("test.yaml:6: hook.")
    assert SECRET_HEADER[7:] not in message


def test_hook_header_values_are_masked_in_repr():
    config = parse(MINIMAL + f"    hook: {{url: https://h, headers: {{X-Key: '{SECRET_HEADER}'}}}}\n"
                   f"hook: {{url: https://h, headers: {{Authorization: '{SECRET_HEADER}'}}}}\n")
    assert config.hook.headers == {"Authorization": SECRET_HEADER}
    for text in (repr(config), repr(config.hook), repr(config.rules[0]), str(config)):
        assert SECRET_HEADER not in text
    assert "headers={'Authorization': '***'}" in repr(config.hook)
    assert "headers={'X-Key': '***'}" in repr(config.rules[0].hook)


def test_every_secret_field_is_masked_in_its_repr():
    # Whatever the tables mark secret, whichever section it is in.
    secret_fields = [(path, f) for path, f in schema_paths() if f.secret]
    assert {path for path, _ in secret_fields} == {"esl.password", "recorder.token", "hook.headers",
                                                   "rules.relay.url", "rules.relay.headers", "catalog.url",
                                                   "http.token"}
    config = parse(MINIMAL.replace("rules:", "recorder:\n  token: Tok3n-abcdefghijklmnop\nrules:")
                   + f"    relay: {{url: 'wss://agent/x?key=Ag3ntK3y', headers: {{B: '{SECRET_HEADER}'}}}}\n"
                   + f"hook: {{url: https://h, headers: {{A: '{SECRET_HEADER}'}}}}\n"
                   + "http: {token: Api-T0ken-abcdefghijkl}\n")
    text = repr(config)
    for value in (PASSWORD, "Tok3n-abcdefghijklmnop", SECRET_HEADER, "Ag3ntK3y", "Api-T0ken-abcdefghijkl"):
        assert value not in text
    assert "HttpConfig(token='***', allowed_hosts=())" in text


@pytest.mark.parametrize("snippet, expected", [
    ("    relay: {url: 'https://agent/x?key=Ag3ntK3y'}\n",
     "test.yaml:6: rules[0].relay.url: does not start with ws:// or wss://; a ws:// or wss:// URL of the agent with a "
     "host (a key may go in its query; it is never shown)"),
    ("    relay: {url: 'wss://agent', protocol: grpc}\n",
     "test.yaml:6: rules[0].relay.protocol: 'grpc' is not a relay protocol; use twilio or raw (twilio: Twilio Media "
     "Streams; raw: a JSON hello, then the PCM as it comes)"),
    ("    relay: {protocol: raw}\n",
     "test.yaml:6: rules[0].relay.url: is required but missing; give the agent's url, ws:// or wss://"),
    ("    record: false\n",
     "test.yaml:6: rules[0].record: is false and the rule has no relay: the call's audio would go nowhere; keep "
     "record: true, or add a relay"),
    ("    relay: {url: 'wss://agent', custom_parameters: {lang: [en]}}\n",
     "test.yaml:6: rules[0].relay.custom_parameters.lang: expected text, got a list; a mapping of names to text "
     "(numbers and true/false are sent as text)"),
])
def test_relay_field_errors(snippet: str, expected: str):
    message = error_of(MINIMAL + snippet)
    assert message == expected and "Ag3ntK3y" not in message


def test_a_relay_only_rule_reads_its_agent():
    rule = parse(MINIMAL + "    record: false\n    relay:\n      url: wss://agent.example.net/media?key=k\n"
                 "      custom_parameters: {lang: en-GB, tier: 2}\n      talk_back: false\n").rules[0]
    assert rule.record is False
    assert (rule.relay.url, rule.relay.protocol, rule.relay.talk_back) == \
        ("wss://agent.example.net/media?key=k", "twilio", False)
    assert rule.relay.custom_parameters == {"lang": "en-GB", "tier": "2"} and rule.relay.max_queue_s == 2.0


def test_metadata_aliases_cannot_expand_without_bound():
    looped = MINIMAL + "    metadata: &m\n      self: *m\n"
    assert "is nested more than 16 levels deep" in error_of(looped)
    lines = ["    metadata:", "      a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcde", "bcdef"):
        lines.append(f"      {name}: &{name} [{', '.join(['*' + prev] * 10)}]")
    message = error_of(MINIMAL + "\n".join(lines) + "\n")
    assert message.startswith("test.yaml:")
    assert "holds more than 2000 values" in message


def test_every_rule_is_checked_even_when_disabled():
    assert error_of(MINIMAL + "    enabled: false\n    mix: quad\n").startswith("test.yaml:7: rules[0].mix: 'quad' ")


def test_pure_modules_import_no_gevent_and_no_sockets():
    import subprocess
    import sys

    code = ("import sys, controller.config, controller.rules, controller.audio_stream; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gevent', 'socket', 'greenswitch')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"



# ---- no import cycle among the controller's modules ------------------------------------------------------------

def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: pathlib.Path) -> dict[str, set[str]]:
    """Which of the package's modules each module imports (root/*.py and root/*/*.py), from its source.

    Every import statement counts, also those under ``if TYPE_CHECKING:`` and inside functions: a cycle that
    only type checkers or a late call walk is still two modules that cannot be read or moved apart.
    """
    paths = sorted(root.glob("*.py")) + sorted(root.glob("*/*.py"))
    modules = {module_name(path, root): path for path in paths}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                # `from . import audio_stream` imports the module audio_stream; `from .rules import Rule`, rules.
                imported |= {f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target
                             for alias in node.names}
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
        graph[name] = {other for other in imported if other in modules and other != name}
    return graph


def first_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        path.append(module)
        for other in sorted(graph[module]):
            if other in path:
                return path[path.index(other):] + [other]
            if other not in done:
                cycle = visit(other)
                if cycle:
                    return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        if module not in done:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def test_the_controllers_modules_import_each_other_without_a_cycle():
    graph = import_graph(ROOT / "controller")
    assert "controller.config" in graph and "controller.recorder.server" in graph  # both levels were read
    cycle = first_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_sees_relative_and_type_checking_imports(tmp_path: pathlib.Path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    for path in (package / "__init__.py", package / "sub" / "__init__.py", package / "leaf.py"):
        path.write_text("")
    (package / "a.py").write_text("from . import leaf\nfrom .sub.b import B\n")
    (package / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                          "    from ..a import A\n")
    graph = import_graph(package)
    assert graph["pkg.a"] == {"pkg.leaf", "pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.a"}
    assert first_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.a"]
    assert first_cycle({"x": {"y"}, "y": set()}) is None

# ---- the documented example shows every key the loader accepts ------------------------------------------------

# A key, written or commented out: "  port: 8021", "  - name: x", "  # token: ...", "#   url: ...".
_DOC_KEY = re.compile(r"(?P<indent> *)(?:(?P<hash>#)(?P<after> *))?(?P<dash>- +)?(?P<key>[a-z_][a-z0-9_]*):(?: |$)")


def documented_paths(text: str) -> set[str]:
    """Each key in the text as a dotted path ("esl.reconnect.initial_s"; list items add no index), from its
    indentation. A commented-out key counts where its text would stand once the '#' is removed."""
    paths: set[str] = set()
    stack: list[tuple[int, str]] = []  # (column of the key, key) of the keys enclosing the current line
    for line in text.splitlines():
        m = _DOC_KEY.match(line)
        if not m:
            continue
        column = len(m["indent"]) + (len(m["after"]) - 1 if m["hash"] else 0) + len(m["dash"] or "")
        while stack and stack[-1][0] >= column:
            stack.pop()
        stack.append((column, m["key"]))
        paths.add(".".join(key for _, key in stack))
    return paths


def undocumented(text: str) -> list[str]:
    shown = documented_paths(text)
    return [path for path, _ in schema_paths() if path not in shown]


def test_every_key_the_loader_accepts_is_in_the_documented_example():
    assert undocumented((ROOT / "config" / "controller.yaml").read_text(encoding="utf-8")) == []


def test_the_documentation_check_notices_a_key_left_out_or_misplaced():
    text = (ROOT / "config" / "controller.yaml").read_text(encoding="utf-8")
    without_jitter = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("jitter:"))
    assert undocumented(without_jitter) == ["esl.reconnect.jitter"]
    # Under another section it does not count: the path is what is checked, not the word.
    moved = without_jitter.replace("logging:\n", "logging:\n  jitter: 0.2\n")
    assert undocumented(moved) == ["esl.reconnect.jitter"]
    assert "recorder.token" in documented_paths(text)  # commented out, still documented


def uncommented(text: str, key: str) -> str:
    """The text with each commented-out ``# key:`` block made live: '# ' removed after the block's indentation,
    on its first line and on the comment lines below it that are indented deeper."""
    lines, block = [], None
    for line in text.splitlines():
        start = re.match(rf"( *)# {key}:", line)
        if start:
            block = start[1]
        elif block is None or not line.startswith(block + "#  "):
            block = None
            lines.append(line)
            continue
        lines.append(block + line[len(block) + 2:])
    return "\n".join(lines) + "\n"


def test_the_commented_out_hook_examples_load_once_uncommented():
    text = uncommented((ROOT / "config" / "controller.yaml").read_text(encoding="utf-8"), "hook")
    config = parse_config(text, "controller.yaml", {"ESL_PASSWORD": "x", "HOOK_TOKEN": "t0ken"})
    assert config.hook == HookConfig(url="https://archive.example.net/calls", headers={"Authorization": "Bearer t0ken"},
                                     command=("/usr/local/bin/archive-call", "--site", "ber"))
    assert config.rules[0].hook == HookConfig(command=("/usr/local/bin/support-archive",))


def test_the_commented_out_http_example_loads_once_uncommented():
    text = uncommented((ROOT / "config" / "controller.yaml").read_text(encoding="utf-8"), "http")
    config = parse_config(text, "controller.yaml", {"ESL_PASSWORD": "x", "FSCTL_HTTP_TOKEN": API_TOKEN})
    assert config.http == HttpConfig(token=API_TOKEN, allowed_hosts=("fsctl.example.net",))


def test_documented_paths_reads_indentation_lists_and_comments():
    text = "a:\n  b: 1\n  # c: 2\n  d:\n    - e: 3\n      f: 4\n# g:\n#   h: 5\nthe end: no\n"
    assert documented_paths(text) == {"a", "a.b", "a.c", "a.d", "a.d.e", "a.d.f", "g", "g.h"}
