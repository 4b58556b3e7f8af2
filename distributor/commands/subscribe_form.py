"""`distributor subscribe-form`: print the signup form as an HTML snippet to paste into a static site's
page (Jekyll, Hugo), posting to `<public_url>subscribe` on `distributor serve`."""
from __future__ import annotations

import argparse

from distributor.audience import signup
from distributor.errors import EXIT_OK, InputError, SettingsError
from distributor.settings import Settings
from distributor.web import signup_pages

HELP = """Print an HTML form for a static site's page that posts to <public_url>subscribe (signup.public_url,
or the folder of channels.email.unsubscribe_url). It has the fields of the form `distributor serve` shows
at /subscribe (email, name, the list, the language and a hidden honeypot) but no form token, which only
the server can give: the reader's first POST gets the server's form back, filled in, to send once more.
The honeypot is hidden by an inline style; a page whose Content-Security-Policy refuses inline styles
shows it, labelled to be left empty."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `subscribe-form` to the `distributor` command line."""
    command = subparsers.add_parser("subscribe-form", help="print an embeddable HTML signup form",
                                    description=HELP)
    command.add_argument("--list", required=True, dest="list_name", metavar="NAME", help="the list it signs up to")
    command.add_argument("--lang", choices=signup_pages.LANGUAGES,
                         help="the form's language (default: site.language)")
    command.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print the snippet for `--list`, which must be a list the form offers."""
    offered = signup_pages.offered_lists(settings)
    if args.list_name not in offered:
        shown = ", ".join(offered) or "none: set channels.email.lists or signup.lists"
        raise InputError(f"--list: {args.list_name!r} is not a list the signup form offers ({shown})")
    url = signup.public_url(settings)
    if url is None:
        raise SettingsError("signup.public_url: set it to where readers reach `distributor serve`; it cannot be "
                            "derived from channels.email.unsubscribe_url")
    language = args.lang or settings.site.language.split("-")[0]
    print(signup_pages.snippet(settings, args.list_name, language if language in signup_pages.LANGUAGES else "en",
                               f"{url}subscribe"), end="")
    return EXIT_OK
