"""The ``maskmine`` console script: one entry point, one module per subcommand.

Each subcommand lives in its own module exposing ``DESCRIPTION`` (its --help
text after the one-line help of :data:`SUBCOMMANDS`), ``add_arguments(parser)``
and ``run(args, extra) -> int``; the flags several commands share come from
:mod:`maskmine.pipelines.cli_options`. ``extra`` holds the arguments argparse did
not recognise; only ``mine`` accepts them (they are Beam pipeline options), every
other subcommand rejects them. A library :class:`SettingError` is printed as the
flag that set the value (``argument --mask-threshold: must be ...``), and every
setting a library error or warning names (`` `steps` ``) as its flag (``--steps``).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

from maskmine.pipelines import endings
from maskmine.pipelines.cli_options import FlagWords, flag_error, flag_words
from maskmine.transforms.errors import SettingError, UserError

# name -> (module, one-line help): the one home of each command's one-line help (``maskmine --help``
# lists it, ``maskmine COMMAND --help`` starts with it). Only the chosen subcommand's module is
# imported: the others pull in torch, Beam or a web server for nothing.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "sample": ("maskmine.pipelines.sample_cli", "generate the sample scene set (COCO captions/instances + semantic layout) for running offline"),
    "pretrain-sample-clip": ("maskmine.pipelines.pretrain_cli", "train the small sample CLIP (--clip-model sample) on the sample set's whole images and captions"),
    "pretrain-sample-proposals": ("maskmine.pipelines.pretrain_proposals_cli", "train the small class-agnostic Mask2Former (--proposal-checkpoint sample) on the sample set's instance masks"),
    "mine": ("maskmine.pipelines.mine_cli", "mine mask-noun pairs from captioned images into WebDataset shards (Apache Beam)"),
    "verify": ("maskmine.pipelines.verify_cli", "check a mining run: shards readable, checksums and counts, Parquet equals shards, keys unique"),
    "audit": ("maskmine.pipelines.audit_cli", "write an HTML report of a mining run: statistics, plots, galleries, spot-check sheet"),
    "train": ("maskmine.pipelines.train_cli", "finetune CLIP on mined shards as OVSeg does: mask prompt tuning and/or full finetuning"),
    "eval": ("maskmine.pipelines.eval_cli", "evaluate open-vocabulary segmentation (proposals + CLIP) on a benchmark: mIoU, fwIoU, mACC, pACC"),
    "demo": ("maskmine.pipelines.demo_cli", "serve a local web page to segment an uploaded image into your own class names"),
}

PASSTHROUGH = {"mine"}  # subcommands that forward unknown flags (Beam options)

# What to do after an interruption or a full disk, per subcommand: the end of its one line
# (pipelines/endings.py); the others' work is redone by running them again.
RESUME_HINTS: dict[str, str] = {
    "mine": "rerun the same command to resume",
    "train": "rerun it with --resume to continue from the newest checkpoint",
    "eval": "rerun the same command to resume (finished predictions are kept)",
}
DEFAULT_HINT = "rerun the same command"


def chosen_command(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the first word that is one), if any."""
    for word in argv:
        if word in SUBCOMMANDS:
            return word
        if not word.startswith("-"):
            return None
    return None


class UsageError(Exception):
    """A command-line error argparse found; ``main`` prints it as one line and returns 2."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, ``maskmine COMMAND: error: ...`` (status 2), like every UserError."""

    def error(self, message: str):  # noqa: D102 - argparse API
        raise UsageError(self.prog, message)


def fail(command: str | None, message: str) -> int:
    """The one place a command's user error is printed: one line on stderr; returns status 2."""
    print(f"maskmine{' ' + command if command else ''}: error: {message}", file=sys.stderr)
    return 2


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; flags are added for the chosen subcommand only (all of them when ``argv`` is None)."""
    parser = OneLineParser(
        prog="maskmine",
        description="Mine mask-noun pairs from captioned images, adapt CLIP to masked "
        "regions, and evaluate open-vocabulary segmentation.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = None if argv is None else chosen_command(argv)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if argv is not None and name != chosen:
            sub.add_parser(name, help=help_text, description=help_text)
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(
            name,
            help=help_text,
            description=f"{help_text}.\n\n{module.DESCRIPTION}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_module=module, _parser=p)
    return parser


class DropBeamImportNoise(logging.Filter):
    """Beam warns at import that the optional GCP client is absent; maskmine does not use it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("apitools not found")


def drop_beam_import_noise() -> None:
    """Put the filter on the root logger (once), before a subcommand's module imports Beam."""
    root = logging.getLogger()
    if not any(isinstance(f, DropBeamImportNoise) for f in root.filters):
        root.addFilter(DropBeamImportNoise())


def drop_implicit_root_handler() -> None:
    """Remove the handler a library's import-time ``logging.warning`` made (Beam's), so ``basicConfig`` applies.

    ``logging.warning`` on a root logger without handlers calls ``basicConfig()`` itself; after that
    maskmine's own ``basicConfig`` (level, ``-v``, format) would do nothing. Only that implicit handler
    (a plain ``StreamHandler`` with logging's ``BASIC_FORMAT``) is removed; handlers others installed stay.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        fmt = getattr(handler.formatter, "_fmt", None)
        if type(handler) is logging.StreamHandler and fmt == logging.BASIC_FORMAT:
            root.removeHandler(handler)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    drop_beam_import_noise()
    try:
        parser = build_parser(argv)
        args, extra = parser.parse_known_args(argv)
        if extra and args.command not in PASSTHROUGH:
            raise UsageError(f"maskmine {args.command}", f"unrecognized arguments: {' '.join(extra)}")
    except UsageError as exc:
        print(f"{exc.prog}: error: {exc} (see {exc.prog} --help)", file=sys.stderr)
        return 2
    drop_implicit_root_handler()
    # maskmine's own lines at INFO; other libraries' (Beam's workers and type hints, open_clip's model
    # building) only from WARNING, unless -v, which shows everything at DEBUG
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("maskmine").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    flags = FlagWords(args._parser)  # the settings maskmine's warnings name, as this command's flags
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:  # a stop by signal or full disk is one line, not Beam's traceback
        handler.addFilter(endings.QuietStop())
        handler.addFilter(flags)
    try:
        return int(args._module.run(args, extra) or 0)
    except SettingError as exc:  # a value the library refused: worded as the flag that set it
        return fail(args.command, flag_error(args._parser, exc))
    except UserError as exc:  # its settings named as their flags
        return fail(args.command, flag_words(args._parser, str(exc)))
    finally:  # a caller's later library calls log in the library's words
        for handler in handlers:
            handler.removeFilter(flags)


def console_main() -> None:
    """The ``maskmine`` console script: ``main``, then an explicit end of the process.

    Native libraries keep worker threads alive until the process ends: Arrow's
    global CPU and I/O thread pools (started by any Parquet read), OpenBLAS,
    jemalloc. Left to the interpreter's normal exit, C++ static destructors
    tear these pools down while their workers still run, and libstdc++ aborts
    ("terminate called without an active exception", exit 134) after the
    command has already printed its result — seen in 1 of 16 runs of
    ``maskmine verify`` on a loaded machine. So once the command has returned
    and Python's own state is flushed (stdout, stderr, logging), the process
    ends with ``os._exit(status)``, which runs no static destructors: every
    command exits with its own status, every time.

    SIGINT and SIGTERM, and a full disk, end a command with one line and the
    conventional status (:mod:`maskmine.pipelines.endings`); any other
    exception is a bug, shown with its traceback (status 1).
    """
    argv = sys.argv[1:]
    command = chosen_command(argv) or ""
    hint = RESUME_HINTS.get(command, DEFAULT_HINT)
    endings.install_signal_handlers(command, hint)
    status = 1
    try:
        status = main(argv)
        signum = endings.received_signal()
        if signum is not None:  # the command caught the interrupt itself (the demo's server loop)
            print(endings.interrupted_line(command, signum, hint), file=sys.stderr)
            status = endings.signal_status(signum)
    except SystemExit as exc:  # --help, --version
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except BaseException as exc:  # noqa: BLE001 - every ending is reported here, once
        end = endings.ending(command, exc, hint)
        if end is None:
            traceback.print_exc()
        else:
            print(end[0], file=sys.stderr)
            status = end[1]
    finally:
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe (maskmine ... | head)
                pass
    os._exit(status)


if __name__ == "__main__":
    console_main()
