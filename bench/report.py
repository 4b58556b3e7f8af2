"""Format the send benchmark's results: the machine line, the table and the target checks."""
from __future__ import annotations

import datetime as dt
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from measure import ClientRun


@dataclass(frozen=True)
class Row:
    """One client's result: its label, the count it was asked to send and what was measured."""

    label: str
    expected: int
    client_sent: int | None   # what the client itself reports; None when it reports nothing
    run: ClientRun

    @property
    def rate(self) -> float:
        """Messages per second over the sink-observed sending phase (0 when it did not finish)."""
        phase = self.run.phase_seconds
        return self.run.phase_messages / phase if phase else 0.0

    def problems(self) -> list[str]:
        """Return what went wrong: exit status, deadline, or counts that do not match."""
        found = []
        if self.run.returncode != 0:
            found.append(f"exit status {self.run.returncode}")
        if self.run.timed_out:
            found.append("stopped at the deadline")
        if self.run.sink_messages != self.expected:
            found.append(f"sink counted {self.run.sink_messages} of {self.expected}")
        if self.client_sent is not None and self.client_sent != self.run.sink_messages:
            found.append(f"client says {self.client_sent} sent, sink counted {self.run.sink_messages}")
        return found


def machine_line() -> str:
    """Return the date, core count and CPU model of this run."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"# {now}  nproc={os.cpu_count()}  cpu={model}  python={platform.python_version()}"


def table(rows: list[Row], anchor: Row | None, message_bytes: int) -> str:
    """Return the results table; `ratio` is msgs/s relative to `anchor`."""
    head = (f"{'variant':<30} {'msgs':>7} {'phase_s':>8} {'msgs/s':>8} {'MB/s':>6} {'ratio':>6} "
            f"{'cpu_us/msg':>10} {'sink_cpu':>8} {'peak_rss':>9} {'proc_s':>7} {'steal':>6} {'others':>6}")
    lines = [head]
    for row in rows:
        run = row.run
        ratio = f"{row.rate / anchor.rate:.3f}" if anchor and anchor.rate else "NA"
        phase = f"{run.phase_seconds:.3f}" if run.phase_seconds else "NA"
        per_message = 1e6 * run.cpu_seconds / max(run.sink_messages, 1)
        lines.append(
            f"{row.label:<30} {run.sink_messages:>7} {phase:>8} {row.rate:>8.1f} "
            f"{row.rate * message_bytes / 1e6:>6.1f} {ratio:>6} {per_message:>10.0f} "
            f"{run.sink_cpu_seconds:>7.2f}s {run.peak_rss_kb / 1024:>7.1f}MB {run.process_seconds:>6.2f}s "
            f"{run.steal_percent:>5.1f}% {run.other_cores:>6.2f}")
        lines += [f"  ! {row.label}: {problem}" for problem in row.problems()]
        if row.problems() and run.output_tail:
            lines += ["    | " + line for line in run.output_tail.splitlines()]
    return "\n".join(lines)


def targets(publish: Row, anchor: Row, bare: Row) -> str:
    """Return the line checking publish >= 0.6 x smtp-source and >= 2 x bare aiosmtplib."""
    checks = []
    for name, reference, wanted in (("smtp-source", anchor, 0.6), ("bare aiosmtplib", bare, 2.0)):
        if not (publish.rate and reference.rate) or publish.problems():
            checks.append(f"publish / {name} = NA (>= {wanted}: NOT MET)")
            continue
        ratio = publish.rate / reference.rate
        checks.append(f"publish / {name} = {ratio:.2f} (>= {wanted}: {'met' if ratio >= wanted else 'NOT MET'})")
    if not publish.problems() and publish.run.process_seconds and anchor.run.process_seconds:
        # Whole processes, start-up and planning included: messages over each process's life.
        whole = anchor.run.process_seconds / publish.run.process_seconds
        verdict = "met" if whole >= 0.6 else "NOT MET"
        checks.append(f"whole-process publish / smtp-source = {whole:.2f} (>= 0.6: {verdict})")
    return "targets: " + "; ".join(checks)
