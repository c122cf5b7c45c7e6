"""The docs stay true to the tree: every relative link in README.md and docs/*.md points at a file
that exists (and at a heading that exists, when it names one), and every repository path written
in backticks under engine/, certification/, benchmarks/ or policies/ exists.

Reads text only (no imports of the engine), so it runs in milliseconds.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CHECKED_ROOTS = ("engine/", "certification/", "benchmarks/", "policies/")

FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:, ...
PLACEHOLDER = re.compile(r"[<>{}]|\.\.\.")


def prose(text: str) -> str:
    """The text without fenced code blocks (a link or path inside one is an example, not a claim)."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lower case, punctuation removed, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(prose(path.read_text(encoding="utf-8"))):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(doc: Path) -> list[str]:
    return LINK.findall(prose(doc.read_text(encoding="utf-8")))


def link_problem(doc: Path, target: str) -> str | None:
    """Why a link of `doc` is broken, or None. External links and pure in-page anchors of files
    other than Markdown are not followed; a link must not leave the repository."""
    if EXTERNAL.match(target):
        return None
    path_part, _, fragment = target.partition("#")
    dest = (doc.parent / path_part).resolve() if path_part else doc.resolve()
    try:
        dest.relative_to(REPO)
    except ValueError:
        return f"{target}: points outside the repository"
    if not dest.exists():
        return f"{target}: no such file {dest.relative_to(REPO)}"
    if fragment and dest.suffix == ".md" and fragment not in anchors(dest):
        return f"{target}: no heading with anchor #{fragment} in {dest.relative_to(REPO)}"
    return None


def cited_paths(doc: Path) -> list[str]:
    """Repository paths in backticks (whole spans or their words) under the checked roots; spans
    with placeholders (`<lane>`, `{seed}`, `...`) name families of files and are skipped."""
    out = []
    for span in CODE_SPAN.findall(doc.read_text(encoding="utf-8")):
        for word in span.split():
            word = word.strip(",;:()")
            if word.startswith(CHECKED_ROOTS) and not PLACEHOLDER.search(word):
                out.append(word.rstrip("."))
    return out


def path_problem(rel: str) -> str | None:
    if any(ch in rel for ch in "*?["):
        return None if any(REPO.glob(rel)) else f"{rel}: the pattern matches no file"
    return None if (REPO / rel).exists() else f"{rel}: no such path in the repository"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(doc):
    problems = [p for t in links(doc) if (p := link_problem(doc, t))]
    assert not problems, f"{doc.relative_to(REPO)}: broken links:\n" + "\n".join(problems)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_cited_paths_exist(doc):
    problems = [p for rel in cited_paths(doc) if (p := path_problem(rel))]
    assert not problems, f"{doc.relative_to(REPO)}: paths that do not exist:\n" + "\n".join(problems)


def test_every_doc_is_indexed():
    index = (REPO / "docs" / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in DOCS if p.parent.name == "docs" and p.name != "README.md" and f"({p.name})" not in index]
    assert not missing, f"docs/README.md does not list {missing}"


def test_the_checks_can_fail(tmp_path):
    """The helpers report a missing file, a missing heading, an escaping link and a missing path."""
    doc = tmp_path / "x.md"
    doc.write_text("# Title\n", encoding="utf-8")
    assert link_problem(REPO / "README.md", "docs/no-such-file.md")
    assert link_problem(REPO / "README.md", "docs/architecture.md#no-such-heading")
    assert link_problem(REPO / "README.md", "../outside.md")
    assert link_problem(REPO / "README.md", "docs/architecture.md#layout") is None
    assert path_problem("engine/no_such_module.py")
    assert path_problem("engine/rng.py") is None
    assert slug("Identity law (`engine/identity.py`)") == "identity-law-engineidentitypy"
