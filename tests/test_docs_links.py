"""The README is a short front door and docs/ holds the rest: every relative link in them resolves.

A link resolves when its file exists and, with a ``#anchor``, when the target Markdown file has a
heading whose GitHub anchor is that name (GitHub's rule: lower case, punctuation dropped, spaces
to hyphens, ``-1``, ``-2`` … for repeats). Links inside code (fenced blocks, inline backticks) are
not links. External links (``http(s)://``, ``mailto:``) are not checked: the tests run offline.
"""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
README_MAX_LINES = 250  # issue 22: the README is a front door; reference and measurements live in docs/

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`[^`]*`")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the lines outside fenced code blocks, inline code removed."""
    out, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, INLINE_CODE.sub("", line)))
    return out


def slug(heading: str) -> str:
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings (code spans keep their text, backticks go)."""
    seen: dict[str, int] = {}
    found = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = re.match(r"^#{1,6} +(.*?) *#*$", line)
        if fenced or not match:
            continue
        base = slug(match.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def broken_links(path: Path) -> list[str]:
    problems = []
    for number, line in prose_lines(path):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            where = f"{shown(path)}:{number}: {target}"
            if not resolved.exists():
                problems.append(f"{where}: no such file")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                problems.append(f"{where}: no heading with that anchor in {shown(resolved)}")
    return problems


def test_slug_follows_githubs_rule():
    assert slug("Does it work? The sample-world benchmark") == "does-it-work-the-sample-world-benchmark"
    assert slug("The small proposal model (`--proposal-checkpoint sample`)") == (
        "the-small-proposal-model---proposal-checkpoint-sample"
    )
    assert slug("Against open_clip's trainer (`benchmarks.vs_open_clip`)") == (
        "against-open_clips-trainer-benchmarksvs_open_clip"
    )


def test_broken_links_are_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [gone](missing.md) [bad anchor](#nowhere) [file](page.md#title)\n"
                    "`[code](x.md)`\n```\n[fenced](y.md)\n```\n")
    problems = broken_links(page)
    assert len(problems) == 2, problems
    assert any("missing.md: no such file" in p for p in problems)
    assert any("#nowhere: no heading" in p for p in problems)


def test_every_relative_link_in_readme_and_docs_resolves():
    problems = [p for path in markdown_files() for p in broken_links(path)]
    assert not problems, "\n".join(problems)


def test_readme_is_a_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move reference text into docs/"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {
        (README.parent / target.partition("#")[0]).resolve()
        for _, line in prose_lines(README)
        for target in LINK.findall(line)
    }
    orphans = [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert not orphans, f"docs pages the README does not link: {orphans}"
