"""Run the simulated FreeSWITCH on its own, logging what happens (for the demo).

    python -m controller.simulator --esl-port 8021 --password ClueCon --call 9999 --duration 3
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402

from .switch import Simulator  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fs-simulator",
        description="A stand-in FreeSWITCH 1.10.12 + mod_audio_stream: Event Socket on TCP, "
        "calls on demand, the module's WebSocket streaming.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--esl-port", type=int, default=8021, help="Event Socket port (default 8021; 0 = any)")
    parser.add_argument("--password", default="ClueCon", help="Event Socket password (default ClueCon)")
    parser.add_argument("--call", metavar="DEST", help="place calls to this destination (e.g. 9999)")
    parser.add_argument("--caller", default="1000", help="caller id number of placed calls (default 1000)")
    parser.add_argument("--speech", metavar="WAV", help="the caller's speech: a mono 16-bit WAV (default: generated)")
    parser.add_argument("--duration", type=float, help="seconds from answer to hangup (default: speech length or 5)")
    parser.add_argument("--count", type=int, default=1, help="how many calls to place (default 1)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between placed calls (default 5)")
    parser.add_argument("--first-call-after", type=float, default=2.0,
                        help="seconds to wait before the first call, for the controller to connect (default 2)")
    parser.add_argument("--bridge-to", metavar="DEST", help="bridge each call to an outbound B-leg dialled as DEST")
    parser.add_argument("--reject-acl", action="store_true", help="refuse every Event Socket client (rude rejection)")
    parser.add_argument("--silent-accept", action="store_true", help="accept clients but never send auth/request")
    parser.add_argument("--without-audio-stream", action="store_true",
                        help="as if mod_audio_stream were not loaded (uuid_audio_stream: Command not found)")
    parser.add_argument("--module-rate", type=int, metavar="HZ",
                        help="the module streams at this rate whatever start asks for (a sample-rate mismatch)")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    args = parser.parse_args(argv)
    if args.module_rate is not None and (args.module_rate <= 0 or args.module_rate % 8000):
        parser.error("--module-rate must be a positive multiple of 8000")
    if args.count < 0:
        parser.error("--count must be 0 or more")
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration must be more than 0 seconds")
    if args.call is None and (args.speech or args.duration or args.bridge_to):
        parser.error("--speech, --duration and --bridge-to describe calls: give --call DEST too")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sim = Simulator(args.host, args.esl_port, args.password,
                    reject_acl=args.reject_acl, silent_accept=args.silent_accept)
    sim.audio_stream_loaded = not args.without_audio_stream
    sim.module_stream_rate = args.module_rate
    try:
        sim.start()
    except OSError as exc:
        print(f"fs-simulator: cannot listen on {args.host}:{args.esl_port}: {exc}", file=sys.stderr)
        return 1
    done = Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, done.set)
    if args.call:
        gevent.spawn(place_calls, sim, args, done)
    done.wait()
    sim.stop()
    return 0


def place_calls(sim: Simulator, args: argparse.Namespace, done: Event) -> None:
    if done.wait(args.first_call_after):
        return
    for number in range(args.count):
        try:
            call = sim.place_call(args.call, caller_id_number=args.caller, speech=args.speech,
                                  duration_s=args.duration, bridge_to=args.bridge_to)
        except ValueError as exc:
            logging.getLogger("controller.simulator").error("cannot place the call: %s", exc)
            done.set()
            return
        if number + 1 < args.count and done.wait(args.every):
            return
    call.hung_up.wait()


if __name__ == "__main__":
    sys.exit(main())
