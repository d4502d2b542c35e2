"""Every relative Markdown link in README.md and docs/ points at a file of the repository, and every
anchor into a Markdown file names one of its headings (GitHub's slug rules). External links
(http, https, mailto, any other URL scheme) are not checked."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]

FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
#: [text](target) and ![alt](target), with an optional "title".
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]"  # [text], brackets nested one level
    r"\(\s*<?([^()\s<>]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)"  # (target "title")
)
#: [label]: target (reference definitions).
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ANCHOR = re.compile(r"<a\s[^>]*(?:id|name)=[\"']([^\"']+)[\"']", re.IGNORECASE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    out, fence = [], None
    for n, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if m:
            mark = m.group(1)
            if fence is None:
                fence = mark
            elif mark[0] == fence[0] and len(mark) >= len(fence):
                fence = None
            continue
        if fence is None:
            out.append((n, line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: rendered text, lower case, everything but letters,
    digits, spaces, hyphens and underscores dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images -> their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors a Markdown file offers: heading slugs (repeats get -1, -2, ...) and HTML ids."""
    seen: Counter[str] = Counter()
    out: set[str] = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if m:
            base = slug(m.group(2))
            out.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
            seen[base] += 1
        out.update(HTML_ANCHOR.findall(line))
    return out


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link in a Markdown file, code excluded."""
    out = []
    for n, line in prose_lines(path.read_text(encoding="utf-8")):
        ref = REFERENCE.match(line)
        if ref:
            out.append((n, ref.group(1)))
            continue
        # code spans may sit inside link text ([`file`](file)); keep the brackets, drop the code
        line = CODE_SPAN.sub("code", line)
        out.extend((n, target) for target in INLINE_LINK.findall(line))
    return out


def problems(md: Path, root: Path) -> list[str]:
    """What is wrong with the relative links of ``md`` (empty: nothing)."""
    out = []
    for n, target in links(md):
        if not target or SCHEME.match(target):
            continue
        where = f"{md.relative_to(root)}:{n}: {target}"
        path_part, _, anchor = target.partition("#")
        dest = md if not path_part else (md.parent / unquote(path_part)).resolve()
        if not dest.is_relative_to(root):
            out.append(f"{where} points outside the repository")
        elif not dest.exists():
            out.append(f"{where} does not exist")
        elif anchor and dest.suffix.lower() == ".md" and unquote(anchor) not in anchors(dest):
            out.append(f"{where} names no heading of {dest.relative_to(root)}")
    return out


def documents(root: Path) -> list[Path]:
    readme = root / "README.md"
    return ([readme] if readme.exists() else []) + sorted((root / "docs").rglob("*.md"))


@pytest.mark.parametrize("md", documents(REPO), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(md: Path) -> None:
    assert problems(md, REPO) == []


def test_the_docs_exist_and_link_somewhere() -> None:
    docs = documents(REPO)
    assert REPO / "docs" / "architecture.md" in docs and REPO / "docs" / "benchmarks.md" in docs
    assert any(links(md) for md in docs)


def test_github_slugs() -> None:
    assert slug("Real data: the VLM against the trees") == "real-data-the-vlm-against-the-trees"
    assert slug("Grounded 64 px defaults, one-pass cleaner (2026-11-28)") == (
        "grounded-64-px-defaults-one-pass-cleaner-2026-11-28"
    )
    assert slug("`data/raw/wafers.parquet` (`wafersage.wafers.rawtable.SCHEMA`)") == (
        "datarawwafersparquet-wafersagewafersrawtableschema"
    )
    assert slug("Ingest — and [scale](x.md)") == "ingest--and-scale"


def test_broken_links_are_reported(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## Part\n\n## Part\n", encoding="utf-8")
    (tmp_path / "README.md").write_text(
        "[ok](docs/a.md) [ok](docs/a.md#part-1) [ok](#top) [web](https://example.com/x)\n"
        "[gone](docs/missing.md) [bad anchor](docs/a.md#nowhere) [out](../elsewhere.md)\n"
        "`[code](not/checked.md)`\n\n```\n[fenced](not/checked.md)\n```\n\n# Top\n",
        encoding="utf-8",
    )
    (tmp_path / "elsewhere.md").write_text("x", encoding="utf-8")
    found = [p for md in documents(tmp_path) for p in problems(md, tmp_path)]
    assert found == [
        "README.md:2: docs/missing.md does not exist",
        "README.md:2: docs/a.md#nowhere names no heading of docs/a.md",
        "README.md:2: ../elsewhere.md points outside the repository",
    ]
