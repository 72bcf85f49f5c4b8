"""Provenance: citations resolve inside the repository, and the authors'-code configs differ from the
paper-text configs in exactly the keys their headers document (docs/sources.md section 1)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from repro.config import load_config, read_yaml_text, to_dict

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "docs" / "sources.md"

# Folders that hold no project text: the virtualenv, git, run outputs, datasets, caches.
SKIP_DIRS = {".git", ".venv", "runs", "data", "results", "__pycache__", ".pytest_cache", "node_modules"}
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".txt", ".sh", ".toml", ".cfg", ".ini", ".ipynb", ".json"}
TEXT_NAMES = {"Makefile", "Dockerfile", "run"}

# "docs/sources.md section 3", "docs/sources.md sections 1-3", "docs/sources.md section 6's"
CITATION = re.compile(r"docs/sources\.md,?\s+sections?\s+(\d+)(?:\s*[-–]\s*(\d+))?")
# Files outside the repository that citations used to point to; spelled in pieces so that this file
# does not match itself.
FORBIDDEN = [re.compile(p) for p in (r"facts" r"\.md", r"anchors" r"\.md", r"shared/" r"reference",
                                     r"\(facts" r"[:)]", r"\bfacts" r" section")]

AUTHORS_DATASETS = ("cifar10", "cifar100", "stl10")
DOCUMENTED_DIFF_HEADER = "# differs from frossl.yaml in"
DOCUMENTED_DIFF_LINE = re.compile(r"^#\s+([a-z_]+\.[a-z_]+):\s+(\S.*?)\s+<-")


def project_text_files() -> list[Path]:
    files = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if any(part in SKIP_DIRS for part in rel.parts) or not path.is_file():
            continue
        if path.suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES:
            files.append(path)
    return files


def section_numbers() -> set[int]:
    return {int(m.group(1)) for m in re.finditer(r"^## (\d+)\. ", SOURCES.read_text(), re.MULTILINE)}


def test_sources_has_the_six_numbered_sections():
    assert section_numbers() == {1, 2, 3, 4, 5, 6}


def test_every_sources_citation_names_an_existing_section():
    sections = section_numbers()
    bad = []
    cited = 0
    for path in project_text_files():
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for match in CITATION.finditer(line):
                first = int(match.group(1))
                last = int(match.group(2) or first)
                cited += 1
                if first > last or not set(range(first, last + 1)) <= sections:
                    bad.append(f"{path.relative_to(ROOT)}:{lineno}: {match.group(0)}")
    assert cited > 20, "the citation pattern no longer matches the tree's citations"
    assert not bad, "citations of sections that docs/sources.md lacks:\n" + "\n".join(bad)


def test_no_file_cites_reference_files_outside_the_repository():
    bad = []
    for path in project_text_files():
        if path == Path(__file__).resolve():
            continue
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if any(p.search(line) for p in FORBIDDEN):
                bad.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()[:100]}")
    assert not bad, ("cite docs/sources.md section N (or the paper by arXiv id) instead of files outside "
                     "the repository:\n" + "\n".join(bad))


def documented_differences(path: Path) -> dict[str, object]:
    """The `key: value` lines under the header's 'differs from frossl.yaml in' line."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(DOCUMENTED_DIFF_HEADER))
    documented = {}
    for line in lines[start + 1:]:
        match = DOCUMENTED_DIFF_LINE.match(line)
        if not match:
            break
        documented[match.group(1)] = read_yaml_text(match.group(2))
    return documented


def flat_config(path: Path) -> dict[str, object]:
    out = {}
    for section, values in to_dict(load_config(path)).items():
        if isinstance(values, dict) and section != "loss":
            out.update({f"{section}.{key}": value for key, value in values.items()})
        else:
            out[section] = values
    return out


@pytest.mark.parametrize("dataset", AUTHORS_DATASETS)
def test_authors_config_differs_from_the_paper_config_in_exactly_the_documented_keys(dataset):
    folder = ROOT / "repro" / "configs" / dataset
    authors_path = folder / "frossl_authors.yaml"
    documented = documented_differences(authors_path)
    assert documented, f"{authors_path} documents no differences"
    paper, authors = flat_config(folder / "frossl.yaml"), flat_config(authors_path)
    differing = {key for key in paper if paper[key] != authors[key]} - {"name"}
    assert differing == set(documented)
    for key, value in documented.items():
        expected = list(value) if isinstance(value, (list, tuple)) else value
        assert authors[key] == expected, f"{key}: header says {value!r}, config has {authors[key]!r}"


def test_authors_configs_name_their_fork_commit():
    for dataset in AUTHORS_DATASETS:
        header = (ROOT / "repro" / "configs" / dataset / "frossl_authors.yaml").read_text()
        assert re.search(r"OFSkean/FroSSL at commit [0-9a-f]{7}\s+(#\s+)?\(\d{4}-\d{2}-\d{2}", header), dataset
