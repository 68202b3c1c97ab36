"""The demo behind scripts/demo: a simulated FreeSWITCH (this process) and the controller (a child process,
exactly as a user runs it) record one call to 9999; then the WAV is checked against what the switch sent.

Both take free ports (the simulator's Event Socket, the recorder), so the demo also runs on a machine where a
real FreeSWITCH already listens on 8021. Exit status 0 only if the WAV holds, byte for byte, the audio the
simulated mod_audio_stream sent.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pathlib  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import wave  # noqa: E402
from importlib import resources  # noqa: E402

import yaml  # noqa: E402

from controller.config import ConfigError, load_config  # noqa: E402
from controller.simulator import Simulator, signals  # noqa: E402
from controller.simulator.listen import find  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))
import echo_agent  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def fail(message: str, controller: subprocess.Popen | None = None) -> int:
    print(f"demo FAILED: {message}", file=sys.stderr)
    if controller is not None and controller.poll() is None:
        controller.kill()
    return 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", default=str(ROOT / "config" / "demo.yaml"))
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds from answer to hangup (default 8; 14 with --agent)")
    parser.add_argument("--agent", action="store_true",
                        help="also relay the call to the example echo agent (examples/echo_agent.py, Twilio Media "
                             "Streams) and check that the caller hears their own words back")
    args = parser.parse_args()
    if args.duration is None:
        args.duration = 14.0 if args.agent else 8.0
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2

    sim = Simulator(host=config.esl.host, esl_port=0, password=config.esl.password)
    try:
        sim.start()
    except OSError as exc:
        return fail(f"cannot listen on {config.esl.host} for the simulator: {exc}")
    print(f"simulated FreeSWITCH: Event Socket on {config.esl.host}:{sim.esl_port} (a free port, so a real "
          f"FreeSWITCH on {config.esl.port} is left alone)")
    run_dir = tempfile.TemporaryDirectory(prefix="fsctl-demo-")
    run_config = pathlib.Path(run_dir.name) / "demo.yaml"
    agent = None
    if args.agent:
        agent = echo_agent.make_server("127.0.0.1", 0, pause_s=0.3)
        agent.start()
        print(f"echo agent (examples/echo_agent.py): ws://127.0.0.1:{agent.server_port}/media, Twilio Media Streams")
    run_config.write_text(with_free_ports(pathlib.Path(args.config).read_text(), sim.esl_port,
                                          agent_url=f"ws://127.0.0.1:{agent.server_port}/media" if agent else None))
    controller = subprocess.Popen([sys.executable, "-m", "controller", "-c", str(run_config)], cwd=ROOT,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        try:
            sim.wait_for_command("event ", timeout=20)  # the controller has connected and subscribed
        except TimeoutError:
            return fail("the controller did not connect to the simulator within 20 s", controller)
        speech = resources.files("controller.simulator") / "data" / "demo_speech_8k.wav"
        with resources.as_file(speech) as speech_path:
            utterance, _ = signals.read_wav(str(speech_path))
            # With the agent, the caller says their sentence and listens; nothing else plays on the call.
            call = sim.place_call("9999", caller_id_number="1000", caller_id_name="Demo Caller",
                                  speech=str(speech_path), duration_s=args.duration,
                                  # An agent call's dialplan: answer, endless_playback of silence (a break,
                                  # which ends each reply, would end a sleep and hang the caller up).
                                  **({"plays": None, "app": "endless_silence"} if args.agent else {}))
        print(f"placed call {call.uuid} to 9999 ({args.duration:g} s)")
        if not call.hung_up.wait(args.duration + 15):
            return fail("the call did not end", controller)
        streams = sim.streams_for(call.uuid)
        if not streams:
            return fail("the controller never started a stream for the call", controller)
        print(f"the recorder took a free port too: the switch streamed to {streams[0].url}")
        for stream in streams:
            stream.ended.wait(10)
    finally:
        if controller.poll() is None:
            controller.send_signal(signal.SIGTERM)
        try:
            status = controller.wait(15)
        except subprocess.TimeoutExpired:
            controller.kill()
            status = "killed after 15 s"
        sim.stop()
        if agent is not None:
            agent.stop(timeout=1)
        run_dir.cleanup()
    if status != 0:
        return fail(f"the controller exited with {status}")

    directory = (ROOT / config.recorder.directory).resolve()
    found = sorted(directory.rglob(f"*{call.uuid}*.wav"))
    if len(found) != 1:
        return fail(f"expected one WAV for {call.uuid} under {directory}, found {len(found)}")
    path = found[0]
    with wave.open(str(path), "rb") as wav:
        rate, channels, frames = wav.getframerate(), wav.getnchannels(), wav.getnframes()
        pcm = wav.readframes(frames)
    sent = b"".join(stream.sent_pcm for stream in streams)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    print(f"\nWAV:       {path}")
    print(f"duration:  {frames / rate:.2f} s")
    print(f"rate:      {rate} Hz")
    print(f"channels:  {channels}")
    print(f"sidecar:   {path.with_suffix('.json')} (closed: {sidecar.get('close_reason')})")
    if pcm != sent:
        return fail(f"the WAV's audio ({len(pcm)} bytes) differs from what the switch sent ({len(sent)} bytes)")
    print(f"check:     the WAV's {len(pcm)} bytes of PCM equal what the simulated switch sent, byte for byte")
    if args.agent:
        relay = sidecar.get("relay") or {}
        score, delay = find(call.heard, utterance)
        print(f"agent:     {relay.get('agent')}: {relay.get('sent_ms', 0) / 1000:.2f} s of the caller sent, "
              f"{relay.get('agent_ms', 0) / 1000:.2f} s back, in {relay.get('talk_back_chunks', 0)} piece(s) and "
              f"{relay.get('talk_back_broadcasts', 0)} broadcast(s)")
        if score < 0.9:
            return fail(f"the caller did not hear their own words back (best correlation {score:.3f})")
        print(f"check:     the caller heard their own {len(utterance) / 16000:.2f} s sentence back from the agent "
              f"{delay:.2f} s after the call began (correlation {score:.3f})")
    return 0


def with_free_ports(config_text: str, esl_port: int, agent_url: str | None = None) -> str:
    """The demo configuration pointed at the simulator's port, its recorder on any free port, no metrics
    (and its rule relayed to the agent, if one is given)."""
    data = yaml.safe_load(config_text)
    if agent_url is not None:
        for rule in data["rules"]:
            rule["relay"] = {"url": agent_url, "protocol": "twilio"}
    data["esl"]["port"] = esl_port
    recorder = data.setdefault("recorder", {})
    recorder["listen_port"] = 0
    recorder.pop("public_url", None)  # derived from the port the recorder gets
    # Metrics are on by default; the demo has no use for them and 9464 may be taken.
    data["metrics"] = {**(data.get("metrics") or {}), "enabled": False}
    return yaml.safe_dump(data, sort_keys=False)


if __name__ == "__main__":
    sys.exit(main())
