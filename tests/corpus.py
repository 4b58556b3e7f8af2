"""The real newsletter sources in ../shared/corpus beside the checkout, for the tests that read them.

The corpus is not part of the repository: where it is absent, every test that reads it is skipped
with `ABSENT` as the reason, never passed silently."""
from __future__ import annotations

from pathlib import Path

import pytest

from distributor.render.source import read_source

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
FIDELITY = CORPUS.parent / "tools" / "fidelity.py"    # compares a rendering with the site's own
SOURCES = ("tinylab", "this-week-in-rust", "python-weekly", "rust-gamedev")
ABSENT = f"the newsletter corpus is not at {CORPUS} (it sits beside the checkout, in shared/corpus)"
_SUFFIXES = (".md", ".markdown")


def corpus_files(pattern: str = "**/*") -> list[Path]:
    """The issue sources (`.md`, `.markdown`) that `pattern`, a glob relative to the corpus, matches,
    in path order: the site's reference renderings and the corpus's own SOURCES.md are not issues.
    Empty when the corpus is absent."""
    if not CORPUS.is_dir():
        return []
    return sorted(path for path in CORPUS.glob(pattern) if path.suffix in _SUFFIXES and path.is_file()
                  and path.name != "SOURCES.md" and path.relative_to(CORPUS).parts[0] != "reference")


def corpus_params(paths: list[Path]) -> list:
    """Parametrise over `paths`, each named by its path in the corpus, or over one case that is
    skipped with `ABSENT` when there are none."""
    if paths:
        return [pytest.param(path, id=path.relative_to(CORPUS).as_posix()) for path in paths]
    return [pytest.param(None, id="absent", marks=pytest.mark.skip(reason=ABSENT))]


def require_corpus() -> Path:
    """Return the corpus folder, or skip the calling test with `ABSENT`."""
    if not CORPUS.is_dir():
        pytest.skip(ABSENT)
    return CORPUS


def issue_body(path: Path) -> str:
    """The Markdown body of an issue file as the loader hands it over: header removed (YAML front
    matter, a Pelican block, or the `# ` title line), BOM and CR line ends gone."""
    return read_source(path).body
