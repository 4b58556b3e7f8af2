"""`distributor preview`: write each rendition of an issue to a folder and summarise it, or serve them
side by side on a page that reloads as the issue changes; send nothing."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distributor.commands import TITLE_HELP, channel_names
from distributor.errors import EXIT_OK
from distributor.files import write_files
from distributor.render.preview import preview_files, summarise
from distributor.render.renditions import render_issue
from distributor.settings import Settings


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add `preview` to the `distributor` command line."""
    preview = subparsers.add_parser("preview", help="write every rendition to a folder; send nothing")
    preview.add_argument("issue", type=Path)
    preview.add_argument("--channel", choices=(*channel_names(), "all"), default="all")
    preview.add_argument("--title", metavar="TEXT", help=TITLE_HELP)
    preview.add_argument("--out", type=Path, default=Path("preview"), help="folder (default: ./preview)")
    preview.add_argument("--serve", action="store_true",
                         help="serve a live page with the renditions side by side on 127.0.0.1 instead")
    preview.add_argument("--port", type=int, default=8000, help="port of --serve (default 8000; 0: any free port)")
    preview.set_defaults(run=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Write the renditions of `args.issue` to `args.out` and print a summary of each (or serve them)."""
    if args.serve:
        from distributor.web.preview_server import serve_preview
        return serve_preview(args.issue, settings, port=args.port, out=sys.stdout, title=args.title)
    channels = channel_names() if args.channel == "all" else (args.channel,)
    renditions = render_issue(args.issue, settings, channels, title=args.title)
    write_files(preview_files(renditions, settings), args.out)
    print(f"{renditions.issue.title}  [{renditions.issue.key}]  → {args.out}/")
    for summary in summarise(renditions):
        print("  " + summary.line())
        for warning in summary.warnings:
            print(f"    warning: {warning}")
    return EXIT_OK
