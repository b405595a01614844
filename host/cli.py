"""The `soxbms` command."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from host import export
from host.broker import make_broker
from host.devices import add_device, host_credentials, write_broker_auth
from host.service import PASSWORD_ENV, IngestService
from host.store import open_store
from soxcommon import wire

DEFAULT_STATE = "run"
NO_ESTIMATE_HELP = ("the board does not estimate (default: it runs its SoC, SoH and SoS estimators with the board "
                    "model of the scenario's cell, models/board/<cell>.json, or one made into the output folder)")
DEFAULT_SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "us06_short.toml"
DEFAULT_ESTIMATOR = Path(__file__).resolve().parent.parent / "models" / "board" / "estimator.json"


def _db_url(args: argparse.Namespace) -> str:
    return args.db or str(Path(args.state) / "soxbms.sqlite")


def _wire_seconds(text: str | None) -> int | None:
    """An ISO 8601 time (UTC when no zone is given) as seconds since 2000-01-01, the wire's epoch."""
    if text is None:
        return None
    stamp = datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return int(stamp.timestamp()) - wire.EPOCH_2000_UNIX_S


def cmd_serve(args: argparse.Namespace) -> int:
    store = open_store(_db_url(args))
    service = IngestService(args.broker, store, client_id=args.client_id, group=args.group,
                            user=args.user, password=args.password or os.environ.get(PASSWORD_ENV),
                            batch_max=args.batch, batch_ms=args.batch_ms)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        service.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.ready_file:
        ready = Path(args.ready_file)

        def mark_ready() -> None:
            ready.write_text(str(time.time()))

        service.on_ready = mark_ready
    service.run()
    store.close()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    store = open_store(_db_url(args))
    rows = store.status()
    summary = {"devices": [vars(r) for r in rows], "quarantined": store.count("quarantine"),
               "gaps": [list(g) for g in store.gaps()]}
    store.close()
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    print(f"{'device':<14} {'online':<7} {'last seen (UTC)':<20} {'samples':>9} {'gaps':>6} {'dropped':>8} "
          f"{'SoC %':>7} {'SoS':<8}  firmware")
    for r in rows:
        seen = datetime.fromtimestamp(r.last_seen, UTC).strftime("%Y-%m-%d %H:%M:%S") if r.last_seen else "never"
        # the latest sample's board estimates: SoC mean over the cells, state of safety
        soc = "-" if r.soc_pct is None else f"{r.soc_pct:.2f}"
        sos = "-" if r.sos_level is None else wire.SOS_LEVELS[r.sos_level]
        print(f"{r.device:<14} {'yes' if r.online else 'no':<7} {seen:<20} {r.samples:>9} {r.gaps:>6} "
              f"{r.dropped:>8} {soc:>7} {sos:<8}  {r.firmware or '-'}")
    print(f"quarantined messages: {summary['quarantined']}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    store = open_store(_db_url(args))
    out = open(args.output, "w", newline="") if args.output else sys.stdout  # noqa: SIM115
    try:
        rows = store.samples(args.device, _wire_seconds(args.start), _wire_seconds(args.end), estimates=True)
        write = export.write_csv if args.format == "csv" else functools.partial(export.write_jsonld, args.device)
        n = write(rows, out, estimates=True)
    finally:
        if out is not sys.stdout:
            out.close()
        store.close()
    print(f"exported {n} cell readings of {args.device}", file=sys.stderr)
    return 0


def _estimate_progress() -> Callable[[str, int, int | None], None]:
    """Progress lines on stderr once a run takes long: one every 2 s, and the last once any was shown."""
    last_s = [time.monotonic()]
    shown = [False]

    def show(stage: str, done: int, total: int | None) -> None:
        now_s = time.monotonic()
        if now_s - last_s[0] < 2.0 and not (done == total and shown[0]):
            return
        last_s[0], shown[0] = now_s, True
        what = f"{done} samples read" if total is None else f"{done}/{total} cell-steps ({100 * done // total} %)"
        print(f"estimate: {what}", file=sys.stderr)

    return show


def cmd_estimate(args: argparse.Namespace) -> int:
    from hil.replay import parse_starts
    from host.estimate import cellmodel, stored

    if args.model is None:
        print("error: the board does not report its cell model on the wire: give --model "
              "models/board/<cell>.json, the file its config's sox.cell_model names", file=sys.stderr)
        return 2
    try:
        model = cellmodel.load(args.model)
        cfg = json.loads(Path(args.estimator).read_text(encoding="utf-8"))
        soc0 = parse_starts(args.soc0)
        window = _wire_seconds(args.t_from), _wire_seconds(args.t_to)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    store = open_store(_db_url(args))
    try:
        comparison = stored.estimate(store, args.device, model, cfg, args.filter, *window, soc0, _estimate_progress())
    except ValueError as e:  # stored.EstimateError, or the estimator config's
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(comparison.text())
    if args.json:
        Path(args.json).write_text(json.dumps(comparison.as_dict(), indent=1) + "\n")
    if args.csv:
        with open(args.csv, "w", newline="") as out:
            comparison.write_csv(out)
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    state = Path(args.state)
    store = open_store(_db_url(args))
    auth = write_broker_auth(state, store) if args.prefer == "mosquitto" else (None, None)
    store.close()
    broker = make_broker(state / "broker", port=args.port, prefer=args.prefer, password_file=auth[0],
                         acl_file=auth[1])
    broker.start()
    print(f"{broker.kind} {broker.version} listening on {broker.url} (config {broker.conf_path}); Ctrl-C stops it")
    if broker.kind == "mosquitto":
        print(f"host user: {host_credentials(state).user} (password in {state}/host-credentials.json)")
    try:
        assert broker.proc is not None
        broker.proc.wait()
    except KeyboardInterrupt:
        broker.stop()
    return 0


def cmd_device(args: argparse.Namespace) -> int:
    store = open_store(_db_url(args))
    try:
        if args.action == "add":
            creds = add_device(store, args.device)
            write_broker_auth(Path(args.state), store)
            print(json.dumps({"device_id": creds.user, "broker": {"user": creds.user, "password": creds.password}}))
            print("the password is shown once: put it in the board's config.json", file=sys.stderr)
        elif args.action == "remove":
            if not store.remove_device(args.device):
                print(f"no device {args.device}", file=sys.stderr)
                return 1
            write_broker_auth(Path(args.state), store)
        else:
            for device, _ in store.device_credentials():
                print(device)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


def _run_and_print(run: Callable[[], dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    """Run a rig job; print its score as JSON. Exit status: 2 on bad input (the score is then empty), 1 when
    anything the board sent was lost or duplicated, else 0."""
    try:
        score = run()
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2, {}
    print(json.dumps(score, indent=1))
    return (0 if score.get("lost", 0) == 0 and score.get("duplicates", 0) == 0 else 1), score


def cmd_run(args: argparse.Namespace) -> int:
    from hil.scenario_run import run_scenario, run_summary

    print(f"soxbms run: {args.scenario} through rig, MicroPython board, broker and host (lockstep)", file=sys.stderr)
    status, score = _run_and_print(lambda: run_scenario(Path(args.scenario), Path(args.state), cells=args.cells,
                                                        db_url=args.db, broker_prefer=args.prefer,
                                                        estimate=not args.no_estimate))
    if score:
        print(run_summary(score), file=sys.stderr)
    return status


def cmd_bench(args: argparse.Namespace) -> int:
    from hil import bench_hil, bench_link, bench_soc

    benches = {"link": bench_link.run, "hil": bench_hil.run, "soc": bench_soc.run}
    out = Path(args.json) if args.json else None
    result = benches[args.name](out, args.quick, Path(args.state) / f"bench-{args.name}")
    print(json.dumps(result, indent=1))
    failed = [name for name, ok in result["bounds"].items() if ok is False]
    unmeasured = [name for name, ok in result["bounds"].items() if ok is None]
    print(f"bounds not met: {', '.join(failed)}" if failed else "all measured bounds met", file=sys.stderr)
    if unmeasured:
        print(f"not measured: {', '.join(unmeasured)}", file=sys.stderr)
    return 0


def cmd_hil_run(args: argparse.Namespace) -> int:
    from hil.scenario_run import run_scenario

    return _run_and_print(lambda: run_scenario(Path(args.scenario), Path(args.state), cells=args.cells,
                                               realtime=args.realtime, truth=args.truth,
                                               sensor_ranges=args.sensor_ranges,
                                               estimate=not args.no_estimate))[0]


def cmd_hil_rig(args: argparse.Namespace) -> int:
    import threading

    from hil.bench_port import serve_port

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())  # Ctrl-C ends the run and still writes the truth
    return _run_and_print(lambda: serve_port(Path(args.scenario), Path(args.state), args.port, baudrate=args.baud,
                                             realtime=args.realtime, cells=args.cells, truth=args.truth,
                                             stop=stop))[0]


def cmd_hil_replay(args: argparse.Namespace) -> int:
    from hil.replay import options_from_args, parse_starts, replay

    def run() -> dict[str, Any]:
        options = options_from_args(args.columns, args.scale, args.time_unit, args.current_sign, args.delimiter)
        return replay(args.logs, Path(args.state), options, period_ms=args.period_ms, cell=args.cell,
                      capacity_Ah=args.capacity_Ah, full_at_s=args.full_at_s, soc_column=args.soc_column,
                      soc_from=args.soc_from, limit_s=args.limit_s, max_hold_s=args.max_hold_s, name=args.name,
                      estimate=args.estimate, soc0=parse_starts(args.soc0))

    return _run_and_print(run)[0]


def cmd_cell(args: argparse.Namespace) -> int:
    from hil import cellfit

    return cellfit.main(args.args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="soxbms", description="soxbms fleet host, HIL rig and benchmarks")
    # The shared options are accepted before and after the command name.
    common = argparse.ArgumentParser(add_help=False)
    for parser, default in ((p, None), (common, argparse.SUPPRESS)):
        parser.add_argument("--state", default=default or DEFAULT_STATE,
                            help="state folder (database, broker config, boards; default ./run)")
        parser.add_argument("--db", default=default, help="database URL: a path or sqlite:///PATH "
                            "(default STATE/soxbms.sqlite) or postgresql://...")
        parser.add_argument("-v", "--verbose", action="store_true", default=default or False)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", parents=[common], help="ingest the fleet's telemetry into the database")
    s.add_argument("--broker", required=True, help="mqtt://HOST:PORT")
    s.add_argument("--user")
    s.add_argument("--password", help=f"better: the environment variable {PASSWORD_ENV} (a command line is "
                   "visible to every user of the machine)")
    s.add_argument("--client-id", default="soxbms-host")
    s.add_argument("--group", help="shared subscription group, to share the fleet between services")
    s.add_argument("--batch", type=int, default=500, help="most messages per database transaction")
    s.add_argument("--batch-ms", type=int, default=20, help="longest wait to fill a transaction")
    s.add_argument("--ready-file", help="written once subscribed (for supervisors and tests)")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("status", parents=[common], help="devices, last seen, online, counts, gaps, drops, quarantine")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("export", parents=[common], help="export one device's samples (streamed)")
    s.add_argument("device")
    s.add_argument("--format", choices=("csv", "jsonld"), default="csv")
    s.add_argument("--start", help="ISO 8601 time, UTC unless a zone is given")
    s.add_argument("--end", help="ISO 8601 time (exclusive)")
    s.add_argument("-o", "--output", help="file (default: standard output)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("estimate", parents=[common], help="re-estimate a device's stored telemetry with the float64 "
                       "host reference and compare with the SoC the board reported")
    s.add_argument("device")
    s.add_argument("--model", help="the board's cell model, models/board/<cell>.json (required: the board does not "
                   "report which it runs)")
    s.add_argument("--estimator", default=str(DEFAULT_ESTIMATOR), help="estimator configuration (default: the "
                   "shipped %(default)s)")
    s.add_argument("--filter", choices=("ekf", "ukf"), default="ekf", help="host filter (default: ekf, the board's)")
    s.add_argument("--from", dest="t_from", help="ISO 8601 time, UTC unless a zone is given (synced samples only)")
    s.add_argument("--to", dest="t_to", help="ISO 8601 time (exclusive)")
    s.add_argument("--soc0", help="start SoC fraction(s), one for all cells or one per cell, comma-separated "
                   "at every start (default: the board's reported SoC of each cell there)")
    s.add_argument("--json", help="write the comparison here as JSON")
    s.add_argument("--csv", help="write board and host SoC per sample and cell here")
    s.set_defaults(func=cmd_estimate)

    s = sub.add_parser("broker", parents=[common], help="start Mosquitto with our config (amqtt where it is missing)")
    s.add_argument("--port", type=int, help="default: a free port")
    s.add_argument("--prefer", choices=("mosquitto", "amqtt"), default="mosquitto")
    s.set_defaults(func=cmd_broker)

    s = sub.add_parser("device", parents=[common], help="register boards and their broker credentials")
    s.add_argument("action", choices=("add", "list", "remove"))
    s.add_argument("device", nargs="?")
    s.set_defaults(func=cmd_device)

    hil = sub.add_parser("hil", parents=[common], help="the HIL rig: `soxbms hil run SCENARIO.toml`, "
                         "`soxbms hil replay LOG [LOG ...]`")
    hil_sub = hil.add_subparsers(dest="action", required=True)
    s = hil_sub.add_parser("run", parents=[common], help="a scenario through the whole chain, simulated cells as truth")
    s.add_argument("scenario", help="scenario file (TOML), e.g. scenarios/us06_short.toml")
    s.add_argument("--cells", type=int, help="override the scenario's cell count")
    s.add_argument("--realtime", action="store_true", help="the rig follows the wall clock (default: lockstep)")
    s.add_argument("--truth", choices=("ecm", "spme", "dfn"), help="cell physics: the scenario's cell file (ecm), "
                   "PyBaMM SPMe or DFN (default: the scenario's `truth`, else ecm)")
    s.add_argument("--sensor-ranges", type=Path, help="sensor coefficient ranges to draw from instead of the "
                   "scenario's (default hil/sensors/ranges.json): a draw nobody tuned on")
    s.add_argument("--no-estimate", action="store_true", help=NO_ESTIMATE_HELP)
    s.set_defaults(func=cmd_hil_run)
    s = hil_sub.add_parser("rig", parents=[common], help="the rig alone on a serial port, for a real board on a bench")
    s.add_argument("scenario", help="scenario file (TOML)")
    s.add_argument("--port", required=True, help="serial port of the board's UART, e.g. /dev/ttyUSB0")
    s.add_argument("--baud", type=int, default=921600)
    s.add_argument("--cells", type=int, help="override the scenario's cell count")
    s.add_argument("--realtime", action="store_true", help="follow the wall clock (default: lockstep)")
    s.add_argument("--truth", choices=("ecm", "spme", "dfn"), help="cell physics (default: the scenario's)")
    s.set_defaults(func=cmd_hil_rig)
    s = hil_sub.add_parser("replay", parents=[common], help="recorded cycler logs (.csv, MATLAB v5 .mat) fed to the "
                           "firmware as if measured; several logs play in order")
    s.add_argument("logs", nargs="+", type=Path, metavar="LOG", help="cycler log, e.g. "
                   "../shared/data/panasonic-18650pf/us06_25degC.mat")
    s.add_argument("--cell", type=Path, help="the logged cell's parameter file, e.g. "
                   "models/cells/panasonic_ncr18650pf_25C.json (its nominal capacity is the default capacity)")
    s.add_argument("--capacity-Ah", type=float, help="capacity for the coulomb-counted reference SoC")
    s.add_argument("--full-at-s", type=float, help="replay time of the full-charge point (SoC 1) of the coulomb "
                   "counting (default: the first row; --estimate needs it stated, e.g. 0 for a log that starts full)")
    s.add_argument("--soc-column", help="reference SoC from this logged column (a fraction; --scale soc=0.01 for "
                   "percent) instead of coulomb counting")
    s.add_argument("--soc-from", choices=("current", "ah"), default="current", help="coulomb counting of the logged "
                   "current (default), or of the tester's Ah column, which also holds steps the log left out")
    s.add_argument("--period-ms", type=int, default=1000, help="the board's sample period (100 for 10 Hz)")
    s.add_argument("--current-sign", type=int, choices=(1, -1), default=1, help="+1: the log counts charging current "
                   "as positive (ours, the Panasonic files'); -1: the opposite")
    s.add_argument("--time-unit", default="s", help="s, ms, min, h, or for CSV a strptime format such as "
                   "'%%Y-%%m-%%d %%H:%%M:%%S'")
    s.add_argument("--columns", help="role=name,... for roles time, voltage, current, temperature, ah, soc "
                   "(CSV default: Battery Data Format names; MAT default: the Panasonic fields); an empty name: "
                   "not logged")
    s.add_argument("--scale", help="role=factor,... to V, A, Ah or a SoC fraction (e.g. voltage=1e-3 for mV)")
    s.add_argument("--delimiter", default=",", help="CSV delimiter")
    s.add_argument("--max-hold-s", type=float, help="a held row older than this is a gap, sent absent (default: "
                   "10 median time steps of the log, at least 2 sample periods)")
    s.add_argument("--limit-s", type=float, help="replay only the first S seconds")
    s.add_argument("--name", help="output folder STATE/hil/replay-NAME (default: the first log's name)")
    s.add_argument("--estimate", action="store_true", help="run every SoC estimator of `bench soc` over the samples "
                   "as the board read them and score them against the reference SoC (needs --cell, and --soc-column "
                   "or --full-at-s); figures in score.json under \"estimation\", a table on stderr")
    s.add_argument("--soc0", help="with --estimate: start SoC fraction(s), comma-separated (default: 30 %% below and "
                   "30 %% above the reference at the first sample)")
    s.set_defaults(func=cmd_hil_replay)

    s = sub.add_parser("cell", help="cell parameter files: `soxbms cell fit C20 PULSE --name N --out F`")
    s.add_argument("action", choices=("fit",))
    s.add_argument("args", nargs=argparse.REMAINDER, help="see `soxbms cell fit --help`")
    s.set_defaults(func=cmd_cell)

    s = sub.add_parser("bench", parents=[common], help="benchmarks: measured figures as JSON")
    s.add_argument("name", choices=("link", "hil", "soc"))
    s.add_argument("--json", help="write the figures here too")
    s.add_argument("--quick", action="store_true", help="a small, fast run with the same checks (for tests)")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("run", parents=[common],
                       help="a scenario through the whole chain on this machine: broker, host, rig, MicroPython board")
    s.add_argument("scenario", nargs="?", default=str(DEFAULT_SCENARIO), help="scenario file (default: %(default)s)")
    s.add_argument("--cells", type=int, help="override the scenario's cell count")
    s.add_argument("--prefer", choices=("mosquitto", "amqtt"), default="mosquitto",
                   help="broker to start (amqtt is also the fallback where Mosquitto is not installed)")
    s.add_argument("--no-estimate", action="store_true", help=NO_ESTIMATE_HELP)
    s.set_defaults(func=cmd_run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "device" and args.action in ("add", "remove") and not args.device:
        print("error: device add/remove needs a device id", file=sys.stderr)
        return 2
    try:
        result: int = args.func(args)
    except BrokenPipeError:
        # The reader went away (`soxbms export ... | head`): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return result


if __name__ == "__main__":
    sys.exit(main())
