"""The ``maskmine`` console script: one entry point, one module per subcommand.

Each subcommand lives in its own module exposing ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args, extra) -> int``. ``extra`` holds the
arguments argparse did not recognise; only ``mine`` accepts them (they are Beam
pipeline options), every other subcommand rejects them.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from transforms.errors import UserError

# name -> module; the module is imported only when its subcommand runs or
# when --help needs its flags.
SUBCOMMANDS: dict[str, str] = {
    "mine": "pipelines.mine_cli",
    "audit": "pipelines.audit_cli",
}

PASSTHROUGH = {"mine"}  # subcommands that forward unknown flags (Beam options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskmine",
        description="Mine mask-noun pairs from captioned images, adapt CLIP to masked "
        "regions, and evaluate open-vocabulary segmentation.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if extra and args.command not in PASSTHROUGH:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args._module.run(args, extra) or 0)
    except UserError as exc:
        print(f"maskmine {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
