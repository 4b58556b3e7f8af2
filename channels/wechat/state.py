"""An issue's WeChat steps as the ledger records them, read back for `distributor status`: each step
done, the last run's failure with its reason, what the state means, and the command that goes on."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from distributor.channel import RecordedSteps, StepFailure


@dataclass(frozen=True)
class WechatState:
    images: str | None                  # "uploaded/total" of the article's own images
    cover_media_id: str | None
    draft_media_id: str | None
    draft_is_current: bool | None       # the draft was made (or last updated) from the issue file as it is
    publish_id: str | None
    article_url: str | None
    mass_msg_id: str | None
    failed_step: str | None             # the step the last run ended at, and why
    failure_kind: str | None            # failed | uncertain | stopped | bad input
    failure: str | None
    held_by: str | None                 # the run doing the steps right now, if one is
    meaning: str                        # what the state means for the publisher
    next_command: str | None            # the command that goes on from here (None: nothing to do)

    def lines(self) -> list[str]:
        """Say each step done, the last failure, what the state means and the command to run next."""
        draft = self.draft_media_id and f"media_id {self.draft_media_id}" + (
            "" if self.draft_is_current else " (made from an earlier version of the issue file)")
        done = {"images uploaded": self.images,
                "cover": self.cover_media_id and f"media_id {self.cover_media_id}",
                "draft": draft,
                "publish_id": self.publish_id,
                "article": self.article_url,
                "mass send": self.mass_msg_id and f"msg_id {self.mass_msg_id}",
                "in progress": self.held_by}
        lines = [f"{label}: {value}" for label, value in done.items() if value]
        if self.failure:
            lines.append(f"{self.failure_kind} at {self.failed_step}: {self.failure}")
        lines.append(self.meaning)
        if self.next_command:
            lines.append(f"next: {self.next_command}")
        return lines


def wechat_state(recorded: RecordedSteps, content_hash: str, publish_command: str, mode: str) -> WechatState | None:
    """Return what is recorded of the issue's WeChat steps (None when nothing is), read against the
    issue file as it is now (`content_hash`) and the configured `mode`; `publish_command` is the
    command line that publishes the issue on WeChat."""
    steps, failure = recorded.steps, recorded.failure
    if not steps and failure is None and recorded.holder is None:
        return None
    draft_hash = steps.get("draft_hash") if "draft" in steps else None
    held_by = None
    if recorded.holder is not None and recorded.held_until is not None:
        until = datetime.fromtimestamp(recorded.held_until).astimezone()
        held_by = f"{recorded.holder} (its lease runs until {until:%Y-%m-%d %H:%M:%S %z}, renewed while it works)"
    meaning, go_on = _meaning(steps, failure, draft_hash != content_hash if draft_hash else False, mode)
    return WechatState(
        images=steps.get("images"), cover_media_id=steps.get("cover"), draft_media_id=steps.get("draft"),
        draft_is_current=None if draft_hash is None else draft_hash == content_hash,
        publish_id=steps.get("publish_id"), article_url=steps.get("published"), mass_msg_id=steps.get("mass_msg_id"),
        failed_step=failure.step if failure else None, failure_kind=failure.kind if failure else None,
        failure=failure.reason if failure else None,
        held_by=held_by,
        meaning="another run is doing these steps now; `status` again once it has ended" if held_by else meaning,
        next_command=None if held_by or not go_on else publish_command)


def _meaning(steps: Mapping[str, str], failure: StepFailure | None, edited: bool, mode: str) -> tuple[str, bool]:
    """Say what the recorded steps mean, and whether publishing again would do something."""
    if "publish_refused" in steps and "publish_id" not in steps and "published" not in steps:
        if edited:
            return ("WeChat refused to publish the draft; the issue file was edited since: publishing again "
                    "updates the draft and submits it again"), True
        return ("WeChat refused to publish the draft: edit the issue file, then publish again: the draft is "
                "updated and submitted again (without an edit the same refusal is only reported)"), True
    if failure:
        return {
            "uncertain": "the last run could not tell whether its last call took effect: publishing again "
                         "looks in the account before making anything again",
            "stopped": "the last run stopped early: fix what the reason says, then publish again; it resumes "
                       "after the last step recorded",
            "bad input": "fix the issue file or the settings as the reason says, then publish again",
        }.get(failure.kind, "fix what the reason says, then publish again"), True
    if "published" in steps or "mass_msg_id" in steps:
        out = "published" if "published" in steps else "mass-sent"
        if edited:
            return f"{out}; the issue file changed after the article went out: that edit is not sent", False
        return f"{out}: nothing left to do", False
    if "publish_id" in steps:
        return ("still publishing when the last run ended: publishing again checks on it (it does not "
                "submit again)"), True
    if "publish_started" in steps:
        return ("a submit got no reply: publishing again looks among the published articles first, and "
                "submits again only once it is clear nothing was published"), True
    if "draft" in steps:
        if mode == "draft":
            if edited:
                return ("the draft waits in the account's draft box; the issue file changed since: publishing "
                        "again updates the draft"), True
            return "the draft waits in the account's draft box for an editor", False
        if edited:
            verb = "publishes" if mode == "publish" else "mass-sends"
            return f"the draft is made; publishing again updates it with the edited issue file and {verb} it", True
        return f"the draft is made but not {'published' if mode == 'publish' else 'mass-sent'} yet", True
    return "no draft yet: publishing again goes on from the last step recorded", True
