"""Time `distributor subscribers import` of 1,000 and 100,000 rows, the same import again, and the export.

    .venv/bin/python bench/import_subscribers.py
    .venv/bin/python bench/import_subscribers.py --rows 1000 --rows 250000

For each size: a CSV of N rows (`user000001@example.org,User 1,tag1 tag2`) and a fresh ledger in a
temporary folder, then `python -m distributor --settings S subscribers import FILE --list weekly`
run as its own process twice: the first import (every row new) and the second (every row
unchanged: it writes nothing); then `subscribers export FILE` of the store the imports made. Each
row prints the wall seconds of the whole process (start-up included), its user+system CPU seconds
(steadier than the wall time on a shared machine) and its peak RSS, `ru_maxrss`, both of that child
from `os.wait4` (getrusage(RUSAGE_CHILDREN) would give the largest of all the
children so far, hiding a smaller later one), and the command's summary line. Every command is
stopped after --deadline seconds; the folder is removed at the end.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Run:
    rows: int
    which: str
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    returncode: int
    summary: str


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8") as stream:
        stream.write("email,name,tags\n")
        for number in range(rows):
            stream.write(f"user{number:06d}@example.org,User {number},tag{number % 7} tag{number % 11}\n")


COMMANDS = {"first": ("import", "readers.csv", "--list", "weekly"),
            "again": ("import", "readers.csv", "--list", "weekly"),
            "export": ("export", "exported.csv")}


def run_command(folder: Path, rows: int, which: str, deadline: float) -> Run:
    """Run one `subscribers` command as a child process; measure its wall time and its own peak RSS."""
    action, file, *rest = COMMANDS[which]
    command = [sys.executable, "-m", "distributor", "--settings", str(folder / "settings.yaml"), "subscribers",
               action, str(folder / file), *rest]
    output = folder / "output.txt"
    with output.open("wb") as sink:
        start = time.monotonic()
        child = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
        status, usage = _wait(child, deadline)
        seconds = time.monotonic() - start
    lines = output.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return Run(rows, which, seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, status,
               lines[-1] if lines else "")


def _wait(child: subprocess.Popen, deadline: float) -> tuple[int, os.struct_rusage]:  # type: ignore[name-defined]
    """Wait for the child at most `deadline` seconds (then TERM it, KILL it 3 s later); return its
    exit status and its rusage."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            child.returncode = os.waitstatus_to_exitcode(status)
            return child.returncode, usage
        time.sleep(0.02)
    child.send_signal(signal.SIGTERM)
    for _ in range(150):
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            child.returncode = os.waitstatus_to_exitcode(status)
            return child.returncode, usage
        time.sleep(0.02)
    child.kill()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, usage


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, action="append", help="rows per file (default: 1000 and 100000)")
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds each command may take (600)")
    args = parser.parse_args()
    sizes = args.rows or [1000, 100_000]
    if any(not 1 <= size <= 2_000_000 for size in sizes):
        parser.error("--rows must be between 1 and 2,000,000")
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="import-bench-") as temporary:
        for size in sizes:
            folder = Path(temporary) / str(size)
            folder.mkdir()
            (folder / "settings.yaml").write_text(
                f"channels:\n  email:\n    lists: [weekly]\nledger:\n  path: {folder / 'ledger.sqlite3'}\n",
                encoding="utf-8")
            write_csv(folder / "readers.csv", size)
            for which in COMMANDS:
                runs.append(run_command(folder, size, which, args.deadline))
    print(f"{'rows':>8}  {'run':<6}  {'seconds':>8}  {'cpu_s':>6}  {'peak_rss_MB':>11}  summary")
    for run in runs:
        status = "" if run.returncode == 0 else f"  ! exit {run.returncode}"
        print(f"{run.rows:>8}  {run.which:<6}  {run.seconds:>8.2f}  {run.cpu_seconds:>6.2f}  {run.peak_rss_mb:>11.1f}"
              f"  {run.summary}{status}")
    return 0 if all(run.returncode == 0 for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
