"""Send benchmark: `distributor publish` against Postfix's smtp-sink on 127.0.0.1, side by side
with two references over the same number of connections: a bare aiosmtplib loop sending one
pre-built message, and Postfix's C client `smtp-source -d` (the anchor, ratio 1.0).

    .venv/bin/python bench/send.py                  # 20,000 subscribers, 20 connections
    .venv/bin/python bench/send.py --count 5000 --sessions 10
    .venv/bin/python bench/send.py --memory         # peak RSS of publish for 1,000 and 100,000
    .venv/bin/python bench/send.py --memory --audience both   # the same, from a file and from the store
    .venv/bin/python bench/send.py --dkim           # publish unsigned and DKIM-signed in the same run

See bench/README.md for the columns. Installs Postfix (unconfigured, disabled) when smtp-sink
or smtp-source is missing. Every process started here is stopped on exit, Ctrl-C included.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from measure import run_client, wait_for_quiet
from postfix_sink import HOST, SMTP_SOURCE, SmtpSink, check_no_mta, ensure_postfix_tools, free_port
from report import Row, machine_line, table, targets

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
MEMORY_COUNTS = (1_000, 100_000)
MEMORY_LIMIT_MB = 50
AUDIENCES = ("file", "store")   # a subscriber CSV, or the readers of the list `weekly` in the ledger
STORE_LIST = "weekly"


@dataclass(frozen=True)
class Message:
    """The issue's email as publish renders it: CRLF bytes for aiosmtplib, LF lines for smtp-source."""

    issue: Path
    crlf_path: Path
    lf_path: Path
    wire_bytes: int


def python_executable() -> str:
    """Return the repository's venv Python, else the one running this script."""
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def pick_issue(explicit: Path | None) -> Path:
    """Return `explicit`, else the largest TinyLab corpus post, else the bundled example."""
    if explicit is not None:
        return explicit
    posts = sorted((CORPUS / "tinylab").glob("*.md"), key=lambda path: path.stat().st_size)
    if posts:
        return posts[-1]
    return sorted((REPO / "distributor" / "examples").glob("*.md"))[0]


def prepare_message(issue: Path, workdir: Path) -> Message:
    """Render the issue's email with `distributor preview` and keep its bytes in two forms."""
    out = workdir / "preview"
    subprocess.run([python_executable(), "-m", "distributor", "preview", str(issue), "--channel", "email",
                    "--out", str(out)], cwd=REPO, check=True, timeout=180, stdout=subprocess.DEVNULL)
    crlf = (out / "email.eml").read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    crlf_path, lf_path = workdir / "message.crlf.eml", workdir / "message.lf.eml"
    crlf_path.write_bytes(crlf)
    lf_path.write_bytes(crlf.replace(b"\r\n", b"\n"))   # smtp-source -F adds the CR itself
    return Message(issue, crlf_path, lf_path, len(crlf))


def write_subscribers(path: Path, count: int) -> None:
    """Write a subscriber CSV with `count` rows (the addresses the references send to, too)."""
    with path.open("w", encoding="utf-8") as out:
        out.write("email,name\n")
        out.writelines(f"user{i:05d}@example.org,User {i}\n" for i in range(1, count + 1))


def fill_store(ledger_path: Path, count: int) -> float:
    """Put the same `count` readers in the ledger's subscriber store, active on STORE_LIST, in one
    transaction; return the seconds it took (not part of any figure of publish)."""
    from distributor.ledger.store import Ledger
    from distributor.ledger.subscribers import SubscriberStore
    started = time.monotonic()
    with Ledger(ledger_path) as ledger, ledger.transaction():
        store = SubscriberStore(ledger)
        for i in range(1, count + 1):
            address = f"user{i:05d}@example.org"
            store.save(address, name=f"User {i}")
            store.set_status(address, STORE_LIST, "active", source="import")
    return time.monotonic() - started


def write_settings(path: Path, subscribers: Path | None, port: int, pool_size: int, ledger: Path,
                   dkim_key: Path | None = None) -> None:
    """Write a settings file sending only email, plainly, to the sink on `port`: to the subscriber file,
    or (None) to the store's STORE_LIST; signed with `dkim_key` when given."""
    audience = {"subscribers": str(subscribers)} if subscribers else {"lists": [STORE_LIST]}
    smtp: dict[str, object] = {"host": HOST, "port": port, "security": "plain", "pool_size": pool_size}
    if dkim_key is not None:
        smtp["dkim"] = {"domain": "example.org", "selector": "bench", "private_key_file": str(dkim_key)}
    path.write_text(json.dumps({   # JSON is YAML
        "channels": {"email": {**audience, "from_address": "newsletter@example.org"},
                     "text": {"enabled": False}, "wechat": {"enabled": False}},
        "smtp": smtp,
        "ledger": {"path": str(ledger)},
    }, indent=2))


def write_dkim_key(path: Path) -> Path:
    """A fresh RSA-2048 signing key, as `smtp.dkim.private_key_file` reads it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def run_smtp_source(sink: SmtpSink, message: Message, count: int, sessions: int, deadline: float,
                    workdir: Path) -> Row:
    """Run `smtp-source -d -s SESSIONS` for `count` messages, each to a unique recipient."""
    command = [SMTP_SOURCE, "-s", str(sessions), "-d", "-N", "-m", str(count), "-F", str(message.lf_path),
               "-f", "newsletter@example.org", "-t", "user@example.org", "-M", "bench.example.org",
               f"{HOST}:{sink.port}"]
    run = run_client(command, sink, deadline, workdir / "smtp-source.log")
    return Row(f"smtp-source -s{sessions} -d", count, None, run)


def run_bare_aiosmtplib(sink: SmtpSink, message: Message, count: int, sessions: int, deadline: float,
                        workdir: Path) -> Row:
    """Run the bare aiosmtplib loop in its own process and read the count it reports."""
    log = workdir / "aiosmtplib.log"
    command = [python_executable(), str(Path(__file__).with_name("aio_reference.py")), "--port",
               str(sink.port), "--count", str(count), "--sessions", str(sessions), "--message",
               str(message.crlf_path), "--deadline", str(deadline)]
    run = run_client(command, sink, deadline + 30, log)
    try:
        sent = json.loads(log.read_text().strip().splitlines()[-1])["sent"]
    except (ValueError, IndexError, KeyError):
        sent = -1
    return Row(f"aiosmtplib K={sessions} prebuilt", count, sent, run)


def run_publish(sink: SmtpSink, message: Message, count: int, sessions: int, deadline: float,
                workdir: Path, audience: str = "file", dkim_key: Path | None = None) -> Row:
    """Run `distributor publish` for `count` subscribers (in a file, or in the store of the fresh ledger),
    each mail DKIM-signed with `dkim_key` when given."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"publish-{audience}-{count}-", dir=workdir))
    subscribers, settings, ledger = run_dir / "subscribers.csv", run_dir / "settings.yaml", run_dir / "ledger.sqlite3"
    if audience == "store":
        seconds = fill_store(ledger, count)
        print(f"# store: {count:,} readers put in the ledger in {seconds:.1f} s", flush=True)
        write_settings(settings, None, sink.port, sessions, ledger, dkim_key)
    else:
        write_subscribers(subscribers, count)
        write_settings(settings, subscribers, sink.port, sessions, ledger, dkim_key)
    command = [python_executable(), "-m", "distributor", "--settings", str(settings), "publish",
               str(message.issue), "--channel", "email", "--yes"]
    env = {**os.environ, "DISTRIBUTOR_UNSUBSCRIBE_SECRET": "bench-only-secret"}
    env.pop("DISTRIBUTOR_SETTINGS", None)
    run = run_client(command, sink, deadline, run_dir / "publish.log", env=env)
    signed = " dkim" if dkim_key is not None else ""
    return Row(f"publish {audience}{signed} pool={sessions} n={count}", count, None, run)


def throughput(args: argparse.Namespace, sink: SmtpSink, message: Message, workdir: Path) -> None:
    """Run the anchor, the bare aiosmtplib loop and publish for --count messages; print the table."""
    run_smtp_source(sink, message, 200, args.sessions, args.deadline, workdir)   # warm-up, not shown
    anchor = run_smtp_source(sink, message, args.count, args.sessions, args.deadline, workdir)
    bare = run_bare_aiosmtplib(sink, message, args.count, args.sessions, args.deadline, workdir)
    publishes = [run_publish(sink, message, args.count, args.sessions, args.deadline, workdir, audience)
                 for audience in audiences(args)]
    signed = [run_publish(sink, message, args.count, args.sessions, args.deadline, workdir, audience,
                          write_dkim_key(workdir / "dkim.pem")) for audience in audiences(args)] if args.dkim else []
    print(table([anchor, bare, *publishes, *signed], anchor, message.wire_bytes))
    for audience, publish in zip(audiences(args), publishes, strict=True):
        print(f"{targets(publish, anchor, bare)}  ({audience})")
    for audience, unsigned, dkim in zip(audiences(args), publishes, signed, strict=False):
        print(dkim_line(unsigned, dkim, anchor) + f"  ({audience})")


def dkim_line(unsigned: Row, signed: Row, anchor: Row) -> str:
    """Compare the signed publish with the unsigned one: the ratio of their rates to the anchor and the
    CPU each message cost, against the target of at most 20 % slower."""
    if not (unsigned.rate and signed.rate and anchor.rate) or unsigned.problems() or signed.problems():
        return "dkim: NA (a publish row did not finish cleanly)"
    cost = [1e6 * row.run.cpu_seconds / max(row.run.sink_messages, 1) for row in (unsigned, signed)]
    slower = 1 - signed.rate / unsigned.rate
    return (f"dkim: ratio to smtp-source {unsigned.rate / anchor.rate:.3f} unsigned, {signed.rate / anchor.rate:.3f} "
            f"signed; signed is {100 * slower:.1f} % slower (<= 20 %: {'met' if slower <= 0.2 else 'NOT MET'}); "
            f"cpu {cost[0]:.0f} -> {cost[1]:.0f} us/msg (+{cost[1] - cost[0]:.0f})")


def memory(args: argparse.Namespace, sink: SmtpSink, message: Message, workdir: Path) -> None:
    """Run publish for 1,000 and 100,000 subscribers of each audience and compare their peak RSS."""
    rows = {audience: [run_publish(sink, message, count, args.sessions, args.deadline, workdir, audience)
                       for count in MEMORY_COUNTS] for audience in audiences(args)}
    print(table([row for pair in rows.values() for row in pair], None, message.wire_bytes))
    for audience, pair in rows.items():
        small, large = (row.run.peak_rss_kb / 1024 for row in pair)
        verdict = "met" if large - small < MEMORY_LIMIT_MB and not any(row.problems() for row in pair) else "NOT MET"
        print(f"memory ({audience}): peak RSS {small:.1f} MB at {MEMORY_COUNTS[0]:,}, {large:.1f} MB at "
              f"{MEMORY_COUNTS[1]:,}; difference {large - small:.1f} MB (< {MEMORY_LIMIT_MB} MB: {verdict})")


def audiences(args: argparse.Namespace) -> tuple[str, ...]:
    return AUDIENCES if args.audience == "both" else (args.audience,)


def main() -> None:
    """Set up, start the sink, run the chosen measurement and stop everything on the way out."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20_000, help="subscribers / messages (default 20000)")
    parser.add_argument("--sessions", type=int, default=20, help="SMTP connections for every client")
    parser.add_argument("--memory", action="store_true", help="peak RSS of publish for 1,000 and 100,000")
    parser.add_argument("--audience", choices=(*AUDIENCES, "both"), default="file",
                        help="publish to a subscriber file (default), to the store's list weekly, or both")
    parser.add_argument("--dkim", action="store_true", help="a DKIM-signed publish row next to each unsigned one")
    parser.add_argument("--issue", type=Path, help="issue to send (default: largest TinyLab post)")
    parser.add_argument("--port", type=int, default=2525, help="first port to try for the sink")
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds per client before TERM")
    parser.add_argument("--quiet-wait", type=float, default=60.0, help="max seconds to wait for idle CPUs")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # run the clean-up below on TERM too
    ensure_postfix_tools()
    check_no_mta()
    with tempfile.TemporaryDirectory(prefix="distributor-bench-") as tmp:
        workdir = Path(tmp)
        message = prepare_message(pick_issue(args.issue), workdir)
        others = wait_for_quiet(args.quiet_wait)
        print(machine_line())
        print(f"# issue={message.issue.name}  message={message.wire_bytes:,} B on the wire  "
              f"sessions={args.sessions}  others busy before start: {others:.2f} cores")
        with SmtpSink(free_port(args.port), workdir, max_seconds=int(4 * args.deadline + 600)) as sink:
            if args.memory:
                memory(args, sink, message, workdir)
            else:
                print(f"# count={args.count:,}")
                throughput(args, sink, message, workdir)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted; every process started here was stopped")
