"""The `distributor` command. Exit status: 0 done, 1 some deliveries failed or are uncertain,
2 bad input, 3 the run stopped early (a later run resumes it)."""
from __future__ import annotations

import argparse
import os
import sys

from distributor.commands import (
    bounces,
    check,
    migrate,
    preview,
    publish,
    schedule,
    serve,
    status,
    subscribe_form,
    subscribers,
    worker,
)
from distributor.errors import EXIT_BAD_INPUT, EXIT_STOPPED, InputError, StorageError
from distributor.settings import load_settings

# In the order `distributor --help` lists them; each module's convention is in distributor/commands/__init__.py.
COMMANDS = (preview, publish, status, check, serve, subscribe_form, subscribers, bounces, schedule, worker, migrate)


def main(argv: list[str] | None = None) -> int:
    """Run the command line `argv` and return the exit status."""
    try:
        args = _parser().parse_args(argv)     # the parser lists the installed channels: a broken one is an error
        settings = load_settings(args.settings or os.environ.get("DISTRIBUTOR_SETTINGS"))
        return args.run(args, settings)
    except InputError as exc:
        print(f"distributor: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StorageError as exc:
        print(f"distributor: error: {exc}", file=sys.stderr)
        return EXIT_STOPPED
    except KeyboardInterrupt:
        print("distributor: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distributor", description=__doc__.split("\n")[0])
    parser.add_argument("--settings", metavar="FILE",
                        help="settings YAML (default: $DISTRIBUTOR_SETTINGS, else built-in defaults)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser
