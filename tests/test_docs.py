"""The design lives in the repository, and what points at it points at something that exists.

    .venv/bin/python -m pytest tests/test_docs.py -q

Every ``docs/<name>.md`` named in the code or the docs is a file of the repository; every section a
comment cites by name (``docs/design.md, "Running other people's code"``, also across a line break
and as ``"A" and "B"``) is a heading of that file; every ``SPEC.md`` section number cited is a
heading (or a numbered check) of protocol/SPEC.md; relative links in README.md and docs/ resolve;
no file mentions the design documents that lived outside the repository.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SPEC = ROOT / "protocol" / "SPEC.md"
PACKAGES = ("protocol", "store", "trainer", "ralph", "node", "scripts", "tests", "docs")
SUFFIXES = {".py", ".js", ".md", ".html", ".css", ".toml", ".sh", ""}  # "" : scripts/start, scripts/bench/*
# Spelled in two halves so that this file does not match itself.
GONE = ("DESIGN" + ".md", "STYLE" + ".md", "docs/INTERNALS" + ".md")

# A newline, the indentation after it and a comment marker: a citation may wrap inside a comment.
_WRAP = re.compile(r"\n[ \t]*(?:#|//|\*)?[ \t]*")
_CITATION = re.compile(r'(docs/[\w./-]+\.md),\s*("[^"\n]+"(?:\s*(?:and|,)\s*"[^"\n]+")*)')
_NAME = re.compile(r'"([^"\n]+)"')
_DOC_PATH = re.compile(r"(?<![\w/.-])(docs/[\w./-]+\.md)(#[\w-]+)?")
_SPEC_SECTION = re.compile(r"SPEC\.md`?,?\s*(?:sections?\s+)?(\d+(?:\.\d+)?)(?![\d.]*\d)")
_SPEC_NAME = re.compile(r'protocol/SPEC\.md`?,\s*"([^"\n]+)"')
_LINK = re.compile(r"\]\(([^)\s]+)\)")
# A path in another repository: "hoytech/negentropy ``docs/negentropy-protocol-v1.md``".
_OTHER_REPO = re.compile(r"\b[\w.-]+/[\w.-]+\s+`*$")


def project_files() -> list[Path]:
    files = [ROOT / "README.md"]
    for top in PACKAGES:
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_file() and path.suffix in SUFFIXES and "__pycache__" not in path.parts:
                files.append(path)
    return files


def read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return ""


def headings(path: Path) -> list[str]:
    """The Markdown headings of ``path`` (outside fenced code), without their leading #s."""
    out, fenced = [], False
    for line in read(path).splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            out.append(line.lstrip("#").strip())
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\s-]", "", heading.lower())
    return re.sub(r"\s", "-", text.strip())


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def citations() -> list[tuple[str, str, str]]:
    """(citing file, cited doc, section name) for every ``docs/<doc>.md, "Name"`` in the project."""
    out = []
    for path in project_files():
        text = _WRAP.sub(" ", read(path))
        for match in _CITATION.finditer(text):
            for name in _NAME.findall(match.group(2)):
                out.append((rel(path), match.group(1), name))
    return out


def test_design_documents_are_in_the_repository():
    assert (DOCS / "design.md").is_file() and (DOCS / "internals.md").is_file()
    readme = read(ROOT / "README.md")
    assert "](docs/design.md)" in readme and "](docs/internals.md)" in readme


def test_nothing_points_at_documents_outside_the_repository():
    found = [f"{rel(path)}:{n}: {gone}" for path in project_files()
             for n, line in enumerate(read(path).splitlines(), 1) for gone in GONE if gone in line]
    assert not found, "references to design documents that are not in the repository:\n" + "\n".join(found)


def test_every_docs_path_names_a_file():
    missing = []
    for path in project_files():
        for n, line in enumerate(read(path).splitlines(), 1):
            for match in _DOC_PATH.finditer(line):
                if _OTHER_REPO.search(line[:match.start()]):
                    continue
                target = ROOT / match.group(1)
                if not target.is_file():
                    missing.append(f"{rel(path)}:{n}: {match.group(1)}")
                elif match.group(2) and match.group(2)[1:] not in {slug(h) for h in headings(target)}:
                    missing.append(f"{rel(path)}:{n}: {match.group(0)} (no such heading)")
    assert not missing, "\n".join(missing)


def test_code_cites_the_design_by_sections_that_exist():
    found = citations()
    assert len(found) >= 40, found  # the sweep that moved the design in cites it from every package
    missing = []
    for source, doc, name in found:
        target = ROOT / doc
        if target.is_file() and name not in headings(target):
            missing.append(f'{source}: {doc}, "{name}"')
    assert not missing, "cited sections that are not headings:\n" + "\n".join(missing)


@pytest.mark.parametrize("name", ["Evaluation", "The budget", "The inner loop", "Spot check first",
                                  "Running other people's code", "Ranking and trust", "Gossip and sync",
                                  "Discovery and swarms", "Reproduction and voting", "The outer loop",
                                  "What a user sees", "Layout", "Conventions", "The wire", "Words"])
def test_design_has_the_sections_code_relies_on(name):
    assert name in headings(DOCS / "design.md")


def test_spec_sections_cited_exist():
    spec = read(SPEC)
    numbers = {h.split()[0].rstrip(".") for h in headings(SPEC) if h[:1].isdigit()}
    numbers |= set(re.findall(r"^\| (\d+\.\d+)′? \|", spec, re.M))  # numbered receiver checks (4.1 ... 4.10)
    names = headings(SPEC)
    missing = []
    for path in project_files():
        text = _WRAP.sub(" ", read(path))
        for match in _SPEC_SECTION.finditer(text):
            if match.group(1) not in numbers:
                missing.append(f"{rel(path)}: SPEC.md {match.group(1)}")
        for match in _SPEC_NAME.finditer(text):
            if not any(match.group(1) in h for h in names):
                missing.append(f"{rel(path)}: the SPEC section named {match.group(1)!r}")
    assert not missing, "SPEC.md sections cited that it does not have:\n" + "\n".join(missing)


def test_relative_links_in_the_docs_resolve():
    missing = []
    for path in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        for target in _LINK.findall(read(path)):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            file, _, anchor = target.partition("#")
            resolved = (path.parent / file).resolve()
            if not resolved.exists():
                missing.append(f"{rel(path)}: {target}")
            elif anchor and anchor not in {slug(h) for h in headings(resolved)}:
                missing.append(f"{rel(path)}: {target} (no such heading)")
    assert not missing, "\n".join(missing)
