"""The user's pages: the README stays a short page, every relative link in README.md and docs/
resolves (file and #anchor, GitHub's heading slugs), and each paper target's cost is one figure:
the string `make help` prints for it (the estimator's), wherever README or docs state a cost."""
import os
import re
import subprocess

import pytest

from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# a GPU-time figure in any other form than the estimator's string is a second figure
OTHER_COST = re.compile(r"\d\s*(?:GPU-h\b|GPU-hours?|GPU hours?|H100-hours?|h of GPU)", re.I)
EST_COST = re.compile(r"est\. [^|\]\n]*?GPU-h(?:, \d+ runs)?")
PLAN_TARGET = re.compile(r"# plan: ([a-z0-9_-]+): (\d+) distinct training runs")
PLAN_HOURS = re.compile(r"# plan: GPU-hours: .*?\(([^ ]+) for the whole plan\)")


def prose_lines(path):
    """The lines outside fenced code blocks, with their numbers."""
    inside = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line):
            inside = not inside
        elif not inside:
            yield number, line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path):
    seen: dict[str, int] = {}
    for _, line in prose_lines(path):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            yield base if count == 0 else f"{base}-{count}"


def help_costs() -> dict[str, str]:
    """Each paper target's cost as `make help` prints it: `  make TARGET description  [cost]`."""
    result = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env={**os.environ, "MAKEFLAGS": ""})
    assert result.returncode == 0, result.stderr
    group = result.stdout.split("\nReproduce the paper", 1)[1].split("\n\n", 1)[0]
    costs = dict(re.findall(r"^  make (\S+) .*?  \[([^\[\]]+)\]$", group, re.M))
    assert {"table2", "figure4", "all"} <= set(costs) and "GPU-h" in costs["table2"], costs
    return costs


def test_readme_is_a_short_page_that_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    first_block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in first_block.splitlines()] == ["make demo", "make test"]
    head = "\n".join(text.splitlines()[:20])
    assert "arxiv.org/abs/" in head and "](docs/deviations.md)" in head and "](LICENSE)" in head


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    bad = []
    for number, line in prose_lines(page):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue                       # http(s):, mailto:
            file, _, anchor = target.partition("#")
            resolved = (page.parent / file).resolve() if file else page
            if not resolved.exists():
                bad.append(f"{page.name}:{number}: {target}: no such file")
            elif anchor and resolved.suffix == ".md" and anchor not in set(anchors(resolved)):
                bad.append(f"{page.name}:{number}: {target}: no heading with that anchor")
    assert not bad, "\n".join(bad)


def test_slugs_follow_github():
    assert slug("Reading the check table (`make check`)") == "reading-the-check-table-make-check"
    assert slug("1. Where the paper and the authors' code disagree") == "1-where-the-paper-and-the-authors-code-disagree"
    assert slug("Tests (CPU)") == "tests-cpu"


def test_each_paper_target_has_one_cost_figure_the_estimators():
    costs = help_costs()
    readme = (ROOT / "README.md").read_text()
    for target, cost in costs.items():
        rows = [line for line in readme.splitlines()
                if line.startswith("|") and re.search(rf"`make {re.escape(target)}[ `]", line)]
        assert rows, f"README's claims table has no row for make {target}"
        for row in rows:
            assert cost in row, f"README row of make {target} lacks `make help`'s cost {cost!r}: {row[:120]}"
    bad = []
    for page in PAGES:
        name = page.relative_to(ROOT)
        text = page.read_text()
        for number, line in enumerate(text.splitlines(), 1):
            for found in EST_COST.findall(line):
                named = {t for t in costs if re.search(rf"`(?:make )?{re.escape(t)}[ `]", line)}
                if len(named) != 1 or found != costs[named.pop()]:
                    bad.append(f"{name}:{number}: {found!r} is not `make help`'s cost of the one target on the line")
            if OTHER_COST.search(EST_COST.sub("", line)):
                bad.append(f"{name}:{number}: a GPU-time figure other than the estimator's: {line.strip()[:100]}")
        # an example of `make -n TARGET`'s plan lines shows that target's figures
        for target, runs, hours in re.findall(PLAN_TARGET.pattern + r"[^\n]*\n\s*" + PLAN_HOURS.pattern, text):
            if hours not in costs.get(target, "") or f"{runs} runs" not in costs.get(target, ""):
                bad.append(f"{name}: the plan example of {target} ({hours} GPU-h, {runs} runs) is not {costs.get(target)!r}")
    assert not bad, "\n".join(bad)
