"""Render benchmark: time `render_issue` per channel, and for all three channels at once, on the
bundled example and on the largest Markdown file of the corpus (../shared/corpus).

    .venv/bin/python bench/render.py              # 7 timed runs per row
    .venv/bin/python bench/render.py --runs 15 path/to/issue.md

Each row is one `render_issue(path, Settings(), channels=...)` call timed end to end (load,
Markdown, templates, CSS inlining), after one untimed warm-up call for that row.
"""
from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from distributor import registry
from distributor.render.renditions import render_issue
from distributor.settings import Settings

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
EXAMPLES = REPO / "distributor" / "examples"
CHANNEL_SETS = tuple((name,) for name in registry.names()) + (registry.names(),)


@dataclass(frozen=True)
class Timing:
    """The timed calls of one (file, channels) row, in milliseconds."""

    path: Path
    channels: tuple[str, ...]
    milliseconds: tuple[float, ...]
    error: str | None = None


def largest_corpus_file() -> Path | None:
    """Return the largest *.md or *.markdown file under the corpus, or None when it is absent."""
    files = [path for pattern in ("*.md", "*.markdown") for path in CORPUS.rglob(pattern)
             if path.name != "SOURCES.md"]
    return max(files, key=lambda path: path.stat().st_size) if files else None


def time_render(path: Path, channels: tuple[str, ...], runs: int, settings: Settings) -> Timing:
    """Call `render_issue` once untimed, then `runs` times timed; an error ends the row."""
    samples = []
    try:
        render_issue(path, settings, channels=channels)
        for _ in range(runs):
            started = time.perf_counter()
            render_issue(path, settings, channels=channels)
            samples.append(1000 * (time.perf_counter() - started))
    except Exception as exc:   # a benchmark reports a failing file and goes on with the others
        return Timing(path, channels, tuple(samples), f"{type(exc).__name__}: {exc}")
    return Timing(path, channels, tuple(samples))


def format_row(timing: Timing) -> str:
    """Return one table line: file, channels, median and minimum milliseconds."""
    label = "+".join(timing.channels) if len(timing.channels) > 1 else timing.channels[0]
    name = timing.path.name if len(timing.path.name) <= 52 else timing.path.name[:49] + "..."
    if timing.error:
        return f"{name:<52} {label:<18} error: {timing.error}"
    median = statistics.median(timing.milliseconds)
    return f"{name:<52} {label:<18} {median:>9.1f} {min(timing.milliseconds):>9.1f}"


def main() -> None:
    """Time every channel set on the example, the largest corpus file and any given files."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="more issues to time")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per row (default 7)")
    args = parser.parse_args()
    files = sorted(EXAMPLES.glob("*.md"))[:1]
    corpus_file = largest_corpus_file()
    if corpus_file is None:
        print(f"# corpus not found at {CORPUS}: skipping the largest corpus file")
    else:
        files.append(corpus_file)
    files += args.files
    settings = Settings()
    print(f"# {args.runs} timed runs per row after one warm-up; milliseconds per render_issue call")
    print(f"{'file':<52} {'channels':<18} {'median_ms':>9} {'min_ms':>9}")
    for path in files:
        print(f"# {path} ({path.stat().st_size:,} bytes)")
        for channels in CHANNEL_SETS:
            print(format_row(time_render(path, channels, args.runs, settings)), flush=True)


if __name__ == "__main__":
    main()
