"""The words of a reader's standing, shared by subscriber files, the signup and the subscriber store."""
from __future__ import annotations

STATUSES = ("unconfirmed", "active", "unsubscribed", "bounced", "complained")
# Statuses no import or signup may turn into `active` on its own: the reader or their mailbox said no.
REFUSING = ("unsubscribed", "bounced", "complained")
LANGUAGES = ("zh", "en")
# Suppression sources the reader made themself (the one-click link, the unsubscribe page's button): the
# only ones a confirmed signup or a ticked preference lifts, and the only ones a later bounce, complaint
# or command replaces. Any other source (a bounce, a complaint, a command) stays until the publisher acts.
READER_SOURCES = ("one-click", "page")
