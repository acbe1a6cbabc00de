"""The ``satsweep`` command line: the edge where user errors become one line.

Heavy libraries (TensorFlow, MLflow, Optuna) are imported inside the commands,
so ``satsweep --help`` and config errors answer at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from satsweep.errors import UserError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
LOG = logging.getLogger("satsweep")


def _quiet_libraries() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    for noisy in ("absl", "alembic", "mlflow", "optuna", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # We log models without a signature on purpose: inputs are raw uint8 chips.
    logging.getLogger("mlflow.keras.save").setLevel(logging.ERROR)


def _configure_logging(debug: bool) -> None:
    from rich.logging import RichHandler

    handler = RichHandler(show_path=False, show_time=False, markup=False, rich_tracebacks=False)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[handler])
    LOG.setLevel(logging.DEBUG if debug else logging.INFO)


def _print_config(overrides: Sequence[str]) -> int:
    from omegaconf import OmegaConf

    from satsweep.config import compose_config

    print(OmegaConf.to_yaml(compose_config(overrides), resolve=False), end="")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    if args.cfg:
        return _print_config(args.overrides)
    from satsweep.config import load_run_config

    cfg = load_run_config(args.overrides)  # validated before anything heavy is imported
    from satsweep.report import print_train_summary
    from satsweep.train import train

    result = train(cfg)
    print_train_summary(result)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="satsweep",
        description="Hyper-parameter experiments for Keras image classifiers: "
        "Hydra configs, Optuna sweeps, MLflow tracking.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train one model and log it to MLflow",
        description="Train one model. OVERRIDES use Hydra's grammar, e.g. model=mlp "
        "optimizer.lr=0.01 +experiment=aid_port_binary.",
    )
    train.add_argument("overrides", nargs="*", metavar="OVERRIDE")
    train.add_argument("--cfg", choices=["job"], help="print the composed config and exit")
    train.set_defaults(handler=cmd_train)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    _quiet_libraries()
    args = build_parser().parse_args(argv)
    _configure_logging(args.debug)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except UserError as error:
        if args.debug:
            raise
        print(f"satsweep: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("satsweep: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def main() -> None:
    sys.exit(run())
