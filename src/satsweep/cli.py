"""The ``satsweep`` command line: the edge where user errors become one line.

Heavy libraries (TensorFlow, MLflow, Optuna) are imported inside the commands,
so ``satsweep --help`` and config errors answer at once.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from satsweep.errors import MissingDataset, UserError
from satsweep.quiet import load_tensorflow, quiet_libraries, quiet_tensorflow
from satsweep.redact import redact
from satsweep.server import DEFAULT_BACKEND

if TYPE_CHECKING:
    from satsweep.search.job import SweepJob

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
LOG = logging.getLogger("satsweep")
TRAINS_IN_PROCESS = ("train", "reproduce", "eda")  # the rest leave TensorFlow to workers


def _configure_logging(debug: bool) -> None:
    from rich.logging import RichHandler

    handler = RichHandler(show_path=False, show_time=False, markup=False, rich_tracebacks=False)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[handler])
    LOG.setLevel(logging.DEBUG if debug else logging.INFO)


def _print_config(overrides: Sequence[str]) -> int:
    """Hydra's ``--cfg job``: the composed config as written (interpolations kept), once valid."""
    from omegaconf import OmegaConf

    from satsweep.config import compose_config, to_container, validate

    composed = compose_config(overrides)
    validate(to_container(composed))  # a config that could not run is an error, not a print
    print(redact(OmegaConf.to_yaml(composed, resolve=False)), end="")
    return 0


def _print_sweep_job(job: SweepJob) -> int:
    """``--cfg job`` for a sweep: its base experiment and ``sweep`` node, validated and resolved."""
    from omegaconf import OmegaConf

    from satsweep.schema import as_plain

    tree = {**as_plain(job.base), "sweep": {**job.sweep_node, "params": job.space_params}}
    print(redact(OmegaConf.to_yaml(OmegaConf.create(tree))), end="")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """``satsweep train``: one run, or ``--cfg job`` to print the composed config."""
    if args.cfg:
        return _print_config(args.overrides)
    from satsweep import api

    result = api.train(args.overrides, from_run=args.from_run)
    from satsweep.console import print_train_summary  # after: config errors answer at once

    print_train_summary(result)
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """``satsweep reproduce``: re-run a logged run; exit 1 when its metrics differ."""
    if args.run_id and "=" in args.run_id:  # an override, with --study and no RUN_ID
        args.overrides.insert(0, args.run_id)
        args.run_id = None
    if bool(args.run_id) == bool(args.study):
        raise UserError("give a RUN_ID, or --study NAME with --final, --best or --trial N")
    if args.study and [args.final, args.best, args.trial is not None].count(True) != 1:
        raise UserError("with --study, give exactly one of --final, --best or --trial N")
    load_tensorflow()  # before reproduction imports Keras, which would print TensorFlow's notes
    from satsweep import api
    from satsweep.console import print_verdict

    run_id = args.run_id or api.run_of_study(args.study, args.overrides, args.trial, args.final)
    verdict = api.reproduce(
        run_id,
        args.overrides,
        allow_data_change=args.allow_data_change,
        tolerance=args.tolerance,
    )
    print_verdict(verdict)
    return 0 if verdict.matches else 1


def cmd_sweep(args: argparse.Namespace) -> int:
    """``satsweep sweep``: run a sweep to its budget and print its leaderboard."""
    if args.cfg:
        from satsweep.search.job import prepare_job

        return _print_sweep_job(prepare_job(args.overrides))
    from satsweep import api

    result = api.sweep(args.overrides, workers=args.workers or None)
    from satsweep.console import print_sweep_summary  # after: config errors answer at once

    print_sweep_summary(result.job, result.leaderboard, result.noise, result.lessons)
    return result.exit_code


def cmd_worker(args: argparse.Namespace) -> int:
    """``satsweep worker``: run trials of a sweep's study until its budget is spent."""
    from satsweep.search.worker import WorkerOptions, check_joinable, launched, worker_job

    options = WorkerOptions(args.threads, args.worker_index, args.final_fit, args.time_left)
    job = worker_job(args.overrides)
    if args.cfg:
        return _print_sweep_job(job)
    check_joinable(job, options)
    load_tensorflow()
    from satsweep.search.stopping import stop_with_launcher
    from satsweep.search.worker import serve

    if launched():
        stop_with_launcher()
    ran = serve(job, options)
    if not options.final_fit:
        LOG.info("worker ran %d trial(s)", ran)
    return 0


def cmd_next(args: argparse.Namespace) -> int:
    """``satsweep next``: write the next round's sweep file from a study's results."""
    from pathlib import Path

    from satsweep.search.next_round import write_next_round

    plan = write_next_round(args.study, args.overrides, Path(args.out) if args.out else None)
    print(f"wrote {plan.path}: the next round of study {args.study}, study {plan.study_name}")
    print(f"run it with: {plan.command}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``satsweep compare``: print a study's leaderboard, optionally to CSV."""
    from pathlib import Path

    from satsweep.console import print_leaderboard
    from satsweep.search.compare import compare

    table = compare(args.study, args.overrides)
    print_leaderboard(table, f"study {args.study}")
    if args.csv:
        try:
            Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
            table.to_csv(args.csv, index=False)
        except OSError as error:  # a folder, a path under a file, no permission, a full disk
            raise UserError(
                f"cannot write the leaderboard to --csv {args.csv} ({error.strerror or error}): "
                "give the path of a file in a folder you can write"
            ) from error
        print(f"wrote {args.csv}")
    return 0


def cmd_repair_journal(args: argparse.Namespace) -> int:
    """``satsweep repair-journal``: rewrite a damaged journal from its intact operations."""
    from pathlib import Path

    from satsweep.search.journal import repair_journal

    repair = repair_journal(Path(args.journal))
    dropped = ", ".join(map(str, repair.dropped)) or "none"
    print(
        f"repaired {args.journal}: kept {repair.kept} operations, left out damaged line(s) "
        f"{dropped}, set aside {repair.set_aside} line(s) after a damaged trial or study "
        f"creation; the original is {repair.backup}"
    )
    return 0


def cmd_compare_backends(args: argparse.Namespace) -> int:
    """``satsweep compare-backends``: the backend race of the benchmarks."""
    from satsweep.search.job import prepare_job

    job = prepare_job(args.overrides)  # config errors before the heavy imports
    if args.cfg:
        return _print_sweep_job(job)
    from satsweep.benchmarks.backends import compare_backends

    compare_backends(args.overrides)
    return 0


def cmd_eda(args: argparse.Namespace) -> int:
    """``satsweep eda``: the dataset report, logged to MLflow."""
    if args.cfg:
        return _print_config(args.overrides)
    from satsweep import api

    result = api.eda(args.overrides)
    metrics = result.report.metrics
    print(
        f"{metrics['images']:.0f} images in {metrics['classes']:.0f} classes, imbalance ratio "
        f"{metrics['imbalance_ratio']:.2f}, {metrics['unreadable_files']:.0f} unreadable, "
        f"{metrics['duplicate_groups']:.0f} duplicate group(s), "
        f"{metrics['leaked_images']:.0f} leaked across splits"
    )
    print(f"report: {result.html_path}")
    print(f"MLflow run id: {result.run_id}")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    """``satsweep sync``: upload what sweeps spooled while MLflow was unreachable."""
    from satsweep.sync import sync

    report = sync(args.overrides)
    print(
        f"synced {report.writes} spooled write(s) from {report.files} file(s): "
        f"{report.runs_created} run(s) created, {report.trials_relinked} trial(s) re-linked"
    )
    if report.set_aside:  # delivered the rest; these never will be: say so in the exit code
        print(
            f"set aside {report.set_aside} write(s) the store refused or that could not be "
            f"read: see {report.rejected} for each one and why",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    """``satsweep server``: an MLflow tracking server on PostgreSQL."""
    from pathlib import Path

    from satsweep.config import load_environment
    from satsweep.server import ServerSettings, serve

    outputs = Path(load_environment([]).paths.outputs)  # conf/config.yaml's paths.outputs
    serve(
        ServerSettings(
            args.host,
            args.port,
            args.backend_store_uri,
            Path(args.artifacts_destination or outputs / "server-artifacts"),
            args.workers,
        )
    )
    return 0


def _config_groups() -> str:
    """The config groups and their options, read from conf/, experiments/ and sweeps/."""
    from satsweep.config import TOP_LEVEL_GROUPS, group_options, project_root

    folder = project_root() / "conf"
    if not folder.is_dir():
        return ""
    files = {group.name: list(group.glob("*.yaml")) for group in folder.iterdir() if group.is_dir()}
    files |= {group: group_options(group) for group in TOP_LEVEL_GROUPS}
    lines = ["config groups (choose with GROUP=OPTION, e.g. model=cnn; see --cfg job):"]
    for group, paths in sorted(files.items()):
        options = sorted(p.stem for p in paths if not p.stem.startswith("_"))
        prefix = "+" if group == "experiment" else ""
        lines.append(f"  {prefix + group:<12} {', '.join(options)}")
    return "\n".join(lines)


def _add_cfg_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--cfg", choices=["job"], help="print the composed, validated config and exit"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command; overrides stay Hydra's, untouched."""
    parser = argparse.ArgumentParser(
        prog="satsweep",
        description="Hyper-parameter experiments for Keras image classifiers: "
        "Hydra configs, Optuna sweeps, MLflow tracking.",
        epilog=_config_groups(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train one model and log it to MLflow",
        description="Train one model. OVERRIDES use Hydra's grammar, e.g. model=mlp "
        "optimizer.lr=0.01 +experiment=aid_port_binary.",
    )
    train.add_argument("overrides", nargs="*", metavar="OVERRIDE")
    _add_cfg_option(train)
    train.add_argument(
        "--from-run", metavar="RUN_ID", help="start from this run's logged config, OVERRIDES on top"
    )
    train.set_defaults(handler=cmd_train)

    reproduce = commands.add_parser(
        "reproduce",
        help="re-run a logged run and compare its metrics",
        description="Re-run RUN_ID from its logged config.yaml and compare every final metric "
        "and the confusion matrix. OVERRIDES may only say where to log (tracking=..., paths...).",
    )
    reproduce.add_argument("run_id", nargs="?", metavar="RUN_ID")
    reproduce.add_argument("overrides", nargs="*", metavar="OVERRIDE")
    reproduce.add_argument("--study", help="a sweep's study name, with --final, --best or --trial")
    reproduce.add_argument("--best", action="store_true", help="the study's best trial")
    reproduce.add_argument(
        "--final", action="store_true", help="the study's final model (its final fit)"
    )
    reproduce.add_argument("--trial", type=int, help="the study's trial number N")
    reproduce.add_argument(
        "--allow-data-change",
        action="store_true",
        help="run even if the data digest differs from the logged one",
    )
    reproduce.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="largest accepted |difference| per metric (default 0)",
    )
    reproduce.set_defaults(handler=cmd_reproduce)

    eda = commands.add_parser(
        "eda",
        help="the dataset report: balance, samples, channels, duplicates, leakage",
        description="Report on the data a run would see (same loading and split as train). "
        "OVERRIDES pick the data: data=folder data.path=/my/images.",
    )
    eda.add_argument("overrides", nargs="*", metavar="OVERRIDE")
    _add_cfg_option(eda)
    eda.set_defaults(handler=cmd_eda)

    sweep = commands.add_parser(
        "sweep",
        help="run an Optuna sweep: sweep=NAME picks a file in sweeps/",
        description="Run a hyper-parameter sweep. OVERRIDES use Hydra's grammar: "
        "sweep=quick sweep.n_trials=20 data.image_size=48 'model.blocks=choice(2,3)'.",
    )
    sweep.add_argument("overrides", nargs="*", metavar="OVERRIDE")
    sweep.add_argument(
        "--workers",
        type=int,
        default=0,
        help="worker processes on this machine (default: sweep.workers)",
    )
    _add_cfg_option(sweep)
    sweep.set_defaults(handler=cmd_sweep)

    worker = commands.add_parser(
        "worker",
        help="join a sweep's study and run trials until it is done",
        description="Join the study of sweep=NAME (same storage) from any terminal or machine.",
    )
    worker.add_argument("overrides", nargs="*", metavar="OVERRIDE")
    worker.add_argument(
        "--threads", type=int, default=0, help="TensorFlow threads for this worker (0: all cores)"
    )
    worker.add_argument(
        "--worker-index",
        type=int,
        default=None,
        help="offset of this worker's sampler seed (set by `satsweep sweep`); "
        "without it the worker draws a random seed, so workers never repeat each other",
    )
    worker.add_argument(
        "--time-left",
        type=float,
        default=None,
        help="seconds of sweep.timeout left (set by a worker that re-executes itself)",
    )
    worker.add_argument(
        "--final-fit",
        action="store_true",
        help="retrain the study's best trial with sweep.final_fit (what `satsweep sweep` "
        "does once the trials are done)",
    )
    _add_cfg_option(worker)
    worker.set_defaults(handler=cmd_worker)

    sync = commands.add_parser(
        "sync",
        help="upload to MLflow what sweeps spooled while it was unreachable",
        description="Replay outputs/spool into the MLflow store (tracking=... as for the sweep).",
    )
    sync.add_argument("overrides", nargs="*", metavar="OVERRIDE")
    sync.set_defaults(handler=cmd_sync)

    server = commands.add_parser(
        "server",
        help="an MLflow tracking server on PostgreSQL, for many workers",
        description="Start `mlflow server` with a PostgreSQL backend store; prints the URI.",
    )
    server.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind (default 127.0.0.1; 0.0.0.0 for a cluster)",
    )
    server.add_argument("--port", type=int, default=5000)
    server.add_argument(
        "--workers",
        type=int,
        default=4,
        help="processes serving requests (default 4, as `mlflow server`; 1 on a small machine)",
    )
    server.add_argument(
        "--backend-store-uri",
        default=os.environ.get("SATSWEEP_MLFLOW_BACKEND", DEFAULT_BACKEND),
        help="SQLAlchemy URL of the run store ($SATSWEEP_MLFLOW_BACKEND)",
    )
    server.add_argument(
        "--artifacts-destination",
        help="folder (or s3://...) for artifacts (default outputs/server-artifacts)",
    )
    server.set_defaults(handler=cmd_server)

    compare = commands.add_parser(
        "compare",
        help="leaderboard of a sweep's trials",
        description="Print the trials of study STUDY sorted by the objective.",
    )
    compare.add_argument("study", help="the study name (sweep.study_name)")
    compare.add_argument(
        "overrides", nargs="*", metavar="OVERRIDE", help="e.g. storage=postgres tracking=server"
    )
    compare.add_argument("--csv", help="also write the leaderboard to this CSV file")
    compare.set_defaults(handler=cmd_compare)

    following = commands.add_parser(
        "next",
        help="write the next round's sweep file from what a study showed",
        description="Narrow what mattered, fix what did not (beyond the noise band), and write "
        "sweeps/STUDY_r2.yaml, a sweep file to edit or run. OVERRIDES say where the study is.",
    )
    following.add_argument("study", help="the study name (sweep.study_name)")
    following.add_argument("overrides", nargs="*", metavar="OVERRIDE")
    following.add_argument("--out", help="write the sweep file here instead of sweeps/")
    following.set_defaults(handler=cmd_next)

    repair = commands.add_parser(
        "repair-journal",
        help="rewrite a damaged Optuna journal file from its intact operations",
        description="Keep every intact operation of JOURNAL that can be kept; the original is "
        "saved beside it as JOURNAL.damaged-N.",
    )
    repair.add_argument("journal", metavar="JOURNAL", help="e.g. outputs/optuna.journal")
    repair.set_defaults(handler=cmd_repair_journal)

    backends = commands.add_parser(
        "compare-backends",
        help="race Optuna and KerasTuner methods on equal wall-clock budgets",
        description="Run every method of sweep.compare.methods on the sweep's space for "
        "sweep.compare.budget seconds per seed; print and log the comparison. "
        "OVERRIDES as for sweep: sweep=quick sweep.compare.budget=120 'sweep.compare.seeds=[0,1]'.",
    )
    backends.add_argument("overrides", nargs="*", metavar="OVERRIDE")
    _add_cfg_option(backends)
    backends.set_defaults(handler=cmd_compare_backends)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Run one command: user errors become one line and exit code 2, Ctrl-C exit code 130."""
    quiet_libraries()
    _stop_like_ctrl_c()
    args = _parse(build_parser(), argv)
    quiet_tensorflow(args.command in TRAINS_IN_PROCESS)
    _configure_logging(args.debug)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except UserError as error:
        if args.debug:
            raise
        said = str(error) + _open_alternatives(error, sys.argv[1:] if argv is None else argv)
        print(f"satsweep: error: {redact(said)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as error:
        if error.errno != errno.ENAMETOOLONG or args.debug:
            raise
        name = str(error.filename)
        shown = name if len(name) <= 120 else f"{name[:60]}...{name[-40:]}"
        print(
            f"satsweep: error: a path is too long for the file system ({len(name)} characters, "
            f"{shown}): shorten its folder or file names",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("satsweep: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


# Open image sets any machine can use in place of a missing one: (what, the overrides).
OPEN_ALTERNATIVES = (
    ("on EuroSAT (downloaded, its MD5 checked)", "data=eurosat data.download.enabled=true"),
    ("on your own class-per-folder images", "data=folder data.path=DIR"),
)


def _open_alternatives(error: UserError, argv: Sequence[str]) -> str:
    """For a named dataset not on this machine: the same command on data that can be had."""
    if not isinstance(error, MissingDataset) or error.data_name in ("eurosat", "folder"):
        return ""
    kept = [shlex.quote(a) for a in argv if not a.startswith(("data=", "data.path=", "+data"))]
    commands = [
        f"{what}: `satsweep {' '.join([*kept, extra])}`" for what, extra in OPEN_ALTERNATIVES
    ]
    return f". Or run the same {'; or '.join(commands)}"


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Options and overrides in any order: ``sweep sweep=quick --workers 1 sweep.n_trials=1``.

    argparse fills a ``nargs="*"`` positional once; overrides after an option come
    back unparsed, and join the command's overrides here.
    """
    args, extra = parser.parse_known_args(argv)
    stray = [text for text in extra if text.startswith("-") or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def _stop_like_ctrl_c() -> None:
    """SIGTERM (a scheduler's time limit, ``timeout``) stops a command as Ctrl-C does.

    Left to its default, SIGTERM ends the process before it closes its MLflow run,
    which stays RUNNING; and a shell starts background jobs with SIGINT ignored,
    so ``kill -INT`` would do nothing. Workers install their own, gentler handler.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main() -> NoReturn:
    """The ``satsweep`` console script."""
    _exit_without_teardown(run())


def _exit_without_teardown(code: int) -> NoReturn:
    """End the process as soon as its work is saved, skipping the interpreter's teardown.

    Freeing TensorFlow's and MLflow's modules takes a process 1-2 s after it is
    done: a sweep paid it in each worker, then in its launcher, before the shell
    got its prompt back. The interpreter's own first exit steps still run, in its
    order: threads are stopped and joined (thread pools shut down first), every
    ``atexit`` handler runs, the streams are flushed. Only freeing memory, which
    the kernel reclaims, is skipped.
    """
    threading._shutdown()  # type: ignore[attr-defined]  # what Py_FinalizeEx calls first
    atexit._run_exitfuncs()  # then this (logging's shutdown among them)
    with contextlib.suppress(BrokenPipeError):  # a reader that left early (``| head``)
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)
