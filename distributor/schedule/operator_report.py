"""The short report after a scheduled job: printed, and mailed to `schedule.operator_email` if set."""
from __future__ import annotations

import asyncio
import dataclasses
import email.policy
import email.utils
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import TextIO

from distributor.channels.mail.relay import smtp_config
from distributor.channels.mail.smtp import SmtpPool, to_wire
from distributor.delivery.run_report import PublishResult
from distributor.errors import DeliveryError, InputError
from distributor.ledger.status import Problem
from distributor.settings import Settings

_PROBLEMS_SHOWN = 20
_LABELS = {"sent": "sent", "failed": "failed", "uncertain": "uncertain", "pending": "not sent"}


@dataclass(frozen=True)
class JobReport:
    """What one job did: its end state and why, and the issue's deliveries per channel and status."""

    job_id: int
    issue_path: str
    issue_key: str | None
    state: str
    reason: str | None
    scheduled_for: str               # the run time as shown to the operator
    counts: Mapping[str, Mapping[str, int]]
    problems: tuple[Problem, ...] = ()
    publish: PublishResult | None = None     # how the job's last publish went, when one ran

    def subject(self) -> str:
        return f"distributor: job {self.job_id} {self.state}: {self.issue_key or self.issue_path}"

    def body(self) -> str:
        """Return the report as plain text lines."""
        lines = [f"job {self.job_id}: {self.state}", f"issue: {self.issue_path}",
                 f"scheduled for: {self.scheduled_for}"]
        if self.reason:
            lines.append(f"reason: {self.reason}")
        if self.publish is not None:
            lines.append("this run:")
            lines += self.publish.lines(f"distributor status {self.issue_path}")
            for name, state in self.publish.steps.items():
                if state is not None:
                    lines += [f"{name}: {line}" for line in state.lines()]
        for channel, by_status in sorted(self.counts.items()):
            lines.append(f"{channel}: " + ", ".join(f"{by_status.get(status, 0)} {label}"
                                                    for status, label in _LABELS.items()))
        if not self.counts:
            lines.append("no deliveries recorded")
        for problem in self.problems[:_PROBLEMS_SHOWN]:
            lines.append(f"  {problem.state} {problem.channel}: {problem.recipient}: "
                         f"{problem.reply or problem.error or ''}")
        if len(self.problems) > _PROBLEMS_SHOWN:
            lines.append(f"  ... and {len(self.problems) - _PROBLEMS_SHOWN} more (distributor status ISSUE)")
        return "\n".join(lines) + "\n"


def deliver_report(report: JobReport, settings: Settings, out: TextIO, err: TextIO) -> None:
    """Print the report to `out` and mail it to `schedule.operator_email` when that is set; a report
    the relay does not take is a warning on `err`, not a failed job."""
    out.write(report.body())
    operator = settings.schedule.operator_email
    if not operator:
        return
    try:
        mail_report(report, settings, operator)
    except (DeliveryError, InputError) as exc:
        print(f"distributor: warning: the report for job {report.job_id} was not mailed to {operator}: {exc}",
              file=err)
    else:
        print(f"job {report.job_id}: report mailed to {operator}", file=out)


def report_message(report: JobReport, settings: Settings, operator: str) -> EmailMessage:
    """Build the report as a UTF-8 plain-text message from the newsletter's sender to `operator`."""
    sender = settings.channels.email
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = email.utils.formataddr((sender.from_name, sender.from_address))
    message["To"] = operator
    message["Subject"] = report.subject()
    message["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = email.utils.make_msgid(domain=sender.from_address.rpartition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(report.body(), charset="utf-8")
    return message


def mail_report(report: JobReport, settings: Settings, operator: str) -> str:
    """Send the report to `operator` (`schedule.operator_email`) over one relay session; return the
    relay's reply. Raises `DeliveryError` when the relay does not take it."""
    message = report_message(report, settings, operator)
    envelope_from = settings.channels.email.return_path or settings.channels.email.from_address
    wire = to_wire(message.as_bytes())
    return asyncio.run(_send(settings, envelope_from, operator, wire))


async def _send(settings: Settings, envelope_from: str, recipient: str, wire: bytes) -> str:
    pool = SmtpPool(dataclasses.replace(smtp_config(settings), pool_size=1))
    await pool.open()
    try:
        return await pool.send(envelope_from, recipient, wire)
    finally:
        await pool.close()

