"""The command layer: one module per `distributor` command; the only code that prints.

Every command module has the same two parts:

- `add_parser(subparsers) -> None` adds the command's parser to the `distributor` command line and
  sets `run` on it with `set_defaults(run=run)`. A command with actions (`schedule add|list|cancel`,
  `subscribers list|unsubscribe|...`), or a module with two commands of one kind (`run-due` and
  `worker`), sets one `run_<name>` on each of its parsers instead, called as `run` is.
  A command that reads the clock takes it as `now` (seconds since the epoch, `time.time` unless a
  test sets it) and hands it to its run functions.
- `run(args, settings) -> int` does the command with the parsed arguments and the loaded settings,
  prints what it has to say and returns the exit status (distributor.errors). It raises
  `InputError` for bad input and `StorageError` for a ledger or file that cannot be used;
  `distributor.cli` turns those into exit statuses 2 and 3 with one line on stderr.

`distributor.cli` lists the modules in the order `distributor --help` shows them.
"""
from __future__ import annotations

import signal
import sys
import threading

from distributor import registry

TITLE_HELP = "the issue's title, instead of the file's own (needed when it has no front matter and no '# ' line)"


def channel_names() -> tuple[str, ...]:
    """Return the names of the channels, in the order `--channel` offers them and `all` runs them."""
    return registry.names()


def stop_on_signals(notice: str) -> threading.Event:
    """Return an event set by the first Ctrl-C or SIGTERM, after printing `notice`: the work in flight
    finishes and nothing new starts. A second Ctrl-C stops at once."""
    interrupt = threading.Event()

    def stop_gracefully(signum: int, frame: object) -> None:
        if interrupt.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        print(f"\ndistributor: {notice}", file=sys.stderr, flush=True)
        interrupt.set()

    signal.signal(signal.SIGINT, stop_gracefully)
    signal.signal(signal.SIGTERM, stop_gracefully)
    return interrupt
