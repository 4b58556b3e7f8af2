"""Which issue a ledger key stands for: checked before anything is sent, recorded once a run commits.

An issue's key is its permalink, else its whole file stem with the date (`2024-06-10-weekly`).
The ledger remembers, per key, the date and title of the issue that first came to it; another
file with that key but another date or another title (compared exactly, blanks at either end
aside) is refused, with the permalink that would give it a key of its own. An edited issue (same
key, date and title) goes on as before.

`check_identity` only reads: a run refused later (bad input, a publisher answering "no") leaves
no identity behind, so the corrected file is not refused for it. `record_identity` writes it once
the run commits to the issue (after the confirmation, before the first delivery or WeChat step).

Versions before this one keyed a dated file without a permalink by its slug alone (`weekly`).
When today's key is new but the slug has rows made from this very file (same sha256, or a
scheduled job of this path), those rows are taken over under today's key (`take_over_legacy_rows`,
before the plan), so nobody gets a second copy after an upgrade.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TextIO

from distributor.errors import InputError
from distributor.ledger.store import Ledger
from distributor.models import Issue
from distributor.render.issue import legacy_key

_DATED_STEM = re.compile(r"^\d{4}-\d{2}-\d{2}-")


@dataclass(frozen=True)
class IdentityClaim:
    """What a run will record for its issue's key, and the slug whose rows it takes over (if any)."""

    issue: Issue
    date: str                   # ISO date, "" for an undated issue
    path: str                   # the file, resolved
    legacy_key: str | None      # an earlier version's key for this very file, whose rows become this key's


def check_identity(ledger: Ledger, issue: Issue, err: TextIO) -> IdentityClaim:
    """Refuse (`InputError`) a file whose key the ledger knows as another issue; find the rows an
    earlier version recorded for this file under its slug. Nothing is written."""
    date = issue.date.date().isoformat() if issue.date else ""
    path = str(issue.source_path.expanduser().resolve())
    known = ledger.issue_identity(issue.key)
    if known is not None and (known[0], known[1]) != (date, issue.title):
        raise InputError(_conflict(ledger, issue, date, known), path=str(issue.source_path))
    legacy = _legacy_rows_of_this_file(ledger, issue, path, err) if known is None else None
    return IdentityClaim(issue, date, path, legacy)


def take_over_legacy_rows(ledger: Ledger, claim: IdentityClaim, err: TextIO, *, dry_run: bool) -> None:
    """Move the rows an earlier version kept under this file's slug to its key (in a dry run's
    in-memory copy only, and then say it would)."""
    if claim.legacy_key is None:
        return
    moved = ledger.adopt_issue_rows(claim.legacy_key, claim.issue.key)
    done = "would take" if dry_run else "took"
    print(f"distributor: note: {claim.issue.source_path}: {done} over {moved} rows an earlier version kept under "
          f"{claim.legacy_key!r} for this file; its key is now {claim.issue.key!r}", file=err)


def record_identity(ledger: Ledger, claim: IdentityClaim) -> None:
    """Remember the issue's identity under its key, unless the key has one; refuse (`InputError`)
    when another run recorded another issue under it meanwhile."""
    issue = claim.issue
    known = ledger.remember_issue_identity(issue.key, claim.date, issue.title, claim.path)
    if (known[0], known[1]) != (claim.date, issue.title):
        raise InputError(_conflict(ledger, issue, claim.date, known), path=str(issue.source_path))


def _legacy_rows_of_this_file(ledger: Ledger, issue: Issue, path: str, err: TextIO) -> str | None:
    """Return the slug an earlier version kept this file's rows under, when there are such rows
    and they are this file's (else None, with a note when they are another file's)."""
    old_key = legacy_key(issue)
    if old_key is None or ledger.issue_recorded(issue.key) or ledger.issue_identity(old_key) is not None:
        return None
    rows, hashes, job_paths = ledger.recorded_versions(old_key)
    if not rows:
        return None
    scheduled_here = path in job_paths
    if not scheduled_here and issue.content_hash not in hashes:
        print(f"distributor: note: {issue.source_path}: the ledger has {rows} rows under {old_key!r} (how earlier "
              f"versions keyed files named *-{old_key}) made from another file; this issue is {issue.key!r}",
              file=err)
        return None
    if not scheduled_here and len(hashes) > 1:
        raise InputError(f"the ledger has rows under {old_key!r} (how earlier versions keyed this file) made from "
                         f"{len(hashes)} versions of a file, one of them this one: add `permalink: {old_key}` to the "
                         f"front matter to go on with them, or `permalink: /{issue.source_path.stem}/` to send this "
                         "file as an issue of its own", path=str(issue.source_path))
    return old_key


def _conflict(ledger: Ledger, issue: Issue, date: str, known: tuple[str, str, str, float]) -> str:
    known_date, known_title, known_path, _ = known
    differs = "date" if known_date != date else "title"
    reached = sum(statuses.get(status, 0) for statuses in ledger.counts(issue.key).values()
                  for status in ("sent", "uncertain"))
    again = (f"; {reached} recipients already got the issue under {issue.key!r}: a new permalink starts a new issue "
             f"that goes to everyone again (if this file is that issue, keep its {differs} as it was)"
             if reached else "")
    return (f"the ledger knows the key {issue.key!r} as another issue (another {differs}): {known_path} "
            f"({known_date or 'no date'}, {known_title!r}); this file is {date or 'undated'}, {issue.title!r}. "
            f"Give each issue a key of its own: add `permalink: {_free_permalink(ledger, issue)}` to this file's "
            f"front matter ({known_path} keeps the key {issue.key!r}){again}")


def _free_permalink(ledger: Ledger, issue: Issue) -> str:
    """Suggest a permalink from the file name (with the issue's date) that no issue has yet."""
    stem = issue.source_path.stem
    base = stem if _DATED_STEM.match(stem) or issue.date is None else f"{issue.date:%Y-%m-%d}-{stem}"
    candidates = [f"/{base}/", *(f"/{base}-{number}/" for number in range(2, 100))]
    return next((permalink for permalink in candidates
                 if permalink != issue.key and not ledger.issue_recorded(permalink)), candidates[-1])
