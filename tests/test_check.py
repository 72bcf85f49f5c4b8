"""The checker on hand-written result files: PASS, FAIL (exit 1), MISSING, NOT-COMPARABLE, claims;
and the transcription of the paper's tables is self-consistent."""
import json
import subprocess
import sys

import pytest
import yaml

from repro.check import EXPECTED_DIR, load_expected, run_check
from tests.conftest import ROOT


def write_result(folder, experiment, cells, *, profile="paper", variant=""):
    folder.mkdir(parents=True, exist_ok=True)
    name = experiment + (f"-{profile}" if profile != "paper" else "") + ("-variant" if variant else "")
    (folder / f"{name}.json").write_text(json.dumps(
        {"experiment": experiment, "profile": profile, "variant": variant, "cells": cells}))


def cell(value, comparable=True, reason=""):
    return {"value": value, "comparable": comparable, "reason": reason, "n": 1, "std": None, "runs": []}


def by_cell(rows, experiment):
    return {r.cell: r for r in rows if r.experiment == experiment}


def run_cli(results):
    return subprocess.run([sys.executable, "-m", "repro.check", "--results", str(results)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_pass_fail_missing_not_comparable(tmp_path):
    results = tmp_path / "results"
    write_result(results, "table2", {"cifar10/frossl": cell(92.3),          # 92.8 - 0.5: inside +-1.0
                                     "cifar100/frossl": cell(68.0)})        # 70.6 - 2.6: outside
    write_result(results, "table2", {"cifar10/frossl": cell(91.0, False, "optim.epochs: 1000 -> 100")},
                 variant="EPOCHS=100")
    rows = run_check(results)
    paper = by_cell(rows, "table2")
    assert paper["cifar10/frossl"].status == "PASS" and paper["cifar10/frossl"].delta == pytest.approx(-0.5)
    assert paper["cifar100/frossl"].status == "FAIL"
    assert paper["stl10/frossl"].status == "MISSING"            # absent from the result file
    assert paper["cifar10/simclr"].status == "MISSING"
    assert paper["average/frossl"].status == "MISSING"
    assert "stl10/corinfomax" not in paper                      # the paper's "-" and nothing measured
    variant = by_cell(rows, "table2[EPOCHS=100]")
    assert variant["cifar10/frossl"].status == "NOT-COMPARABLE"  # never PASS, even if close
    assert "cifar100/frossl" not in variant                     # a variant lists what it measured
    # every experiment of expected_results/ is listed, MISSING when nothing was measured
    assert {r.experiment for r in rows} >= {"figure2", "table2", "table3", "figure3", "figure4"}
    assert all(r.status == "MISSING" for r in rows if r.experiment == "table3")

    result = run_cli(results)
    assert result.returncode == 1, result.stdout + result.stderr   # a FAIL fails the check
    header = result.stdout.splitlines()[0].split()
    assert header == ["experiment", "cell", "paper", "measured", "delta", "tolerance", "status"]
    assert (results / "check.txt").read_text() == result.stdout
    saved = json.loads((results / "check.json").read_text())
    assert saved["counts"]["FAIL"] == 1 and saved["counts"]["PASS"] == 1


def test_missing_and_not_comparable_do_not_fail(tmp_path):
    results = tmp_path / "results"
    write_result(results, "table2", {"cifar10/frossl": cell(10.0, False, "cached probe")})  # far off, but not comparable
    result = run_cli(results)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "NOT-COMPARABLE" in result.stdout and "MISSING" in result.stdout
    assert " PASS " not in result.stdout.split("\n\n")[0]
    strict = subprocess.run([sys.executable, "-m", "repro.check", "--results", str(results), "--strict"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert strict.returncode == 1  # --strict: MISSING is not good enough either


def test_no_results_folder_everything_missing(tmp_path):
    rows = run_check(tmp_path / "absent")
    assert rows and all(r.status == "MISSING" for r in rows)


def test_claims_pass_fail_and_infinity(tmp_path):
    results = tmp_path / "results"
    spectra = {"condition_number/frossl": cell(3.0), "condition_number/vicreg": cell(9.0),
               "condition_number/barlow_twins": cell(12.0), "condition_number/simclr": cell(5.0),
               "entropy/frossl": cell(2.5), "entropy/vicreg": cell(2.6),           # FroSSL not the highest
               "entropy/barlow_twins": cell(2.0), "entropy/simclr": cell(2.2),
               "saturation_step/frossl": cell(300), "saturation_step/vicreg": cell("inf"),
               "saturation_step/barlow_twins": cell(900), "saturation_step/simclr": cell(1200)}
    write_result(results, "figure3", spectra)
    write_result(results, "figure2", {"saturation_t_top10/eq8": cell(220.0), "saturation_t_top10/barlow": cell("inf")})
    rows = run_check(results)
    figure3 = by_cell(rows, "figure3")
    assert figure3["lowest_condition_number"].status == "PASS"
    assert figure3["highest_entropy"].status == "FAIL"
    assert figure3["earliest_saturation"].status == "PASS"        # inf = never saturated
    assert figure3["condition_number/frossl"].status == "NO-REFERENCE"  # not printed in the paper's text
    assert by_cell(rows, "figure2")["eq8_saturates_first"].status == "PASS"
    # a claim needing a value that is absent is MISSING, not PASS
    del spectra["entropy/simclr"]
    write_result(results, "figure3", spectra)
    assert by_cell(run_check(results), "figure3")["highest_entropy"].status == "MISSING"
    # a claim on non-comparable values is NOT-COMPARABLE
    write_result(results, "figure2", {"saturation_t_top10/eq8": cell(220.0, False, "other settings"),
                                      "saturation_t_top10/barlow": cell("inf")})
    assert by_cell(run_check(results), "figure2")["eq8_saturates_first"].status == "NOT-COMPARABLE"


def test_only_and_rows_filters(tmp_path):
    results = tmp_path / "results"
    write_result(results, "table2", {"cifar10/frossl": cell(92.8), "cifar10/frossl_nologs": cell(88.9)})
    rows = run_check(results, only=["table2"], rows={"frossl", "frossl_nologs"})
    assert {r.experiment for r in rows} == {"table2"}
    assert {r.cell.split("/")[-1] for r in rows if "/" in r.cell} == {"frossl", "frossl_nologs"}
    assert any(r.cell == "frossl_beats_nologs" and r.status == "MISSING" for r in rows)  # needs CIFAR-100, STL-10


def test_transcription_of_tables_is_consistent():
    specs = load_expected()
    table2, table3 = specs["table2"], specs["table3"]
    assert len(table2["cells"]) == 12 * 4 and len(table3["cells"]) == 11 * 5
    for row in table2["rows"]:  # the paper's Average column is the mean of its three columns
        values = [table2["cells"][f"{d}/{row}"]["paper"] for d in ("cifar10", "cifar100", "stl10")]
        average = table2["cells"][f"average/{row}"]["paper"]
        if None in values:
            assert average is None
        else:
            assert abs(sum(values) / 3 - average) <= 0.051, (row, values, average)
    assert table2["cells"]["cifar10/frossl"]["paper"] == 92.8
    assert table2["cells"]["stl10/frossl_nologs"]["paper"] == 82.4
    assert table3["cells"]["epoch3/frossl"]["paper"] == 44.8 and table3["cells"]["epoch100/simsiam"]["paper"] == 77.1
    assert specs["figure4"]["cells"]["final_top5/barlow_twins"]["paper"] == 77.5
    for spec in specs.values():  # every file states its source, metric, protocol and tolerance rationale
        for key in ("title", "source", "metric", "protocol"):
            assert spec.get(key), (spec["experiment"], key)
        assert spec["tolerance"]["rationale"]


# ---- bad input: one line `error: <problem>: <fix>`, exit 2, nothing saved -------------------------

def check_cli(*args):
    return subprocess.run([sys.executable, "-m", "repro.check", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def one_error_line(result):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""  # no table, not even an empty one
    return lines[0]


def copy_expected(tmp_path):
    expected = tmp_path / "expected"
    expected.mkdir()
    for path in EXPECTED_DIR.glob("*.yaml"):
        (expected / path.name).write_text(path.read_text())
    return expected


def test_non_numeric_value_is_one_line_naming_file_and_cell(tmp_path):
    results = tmp_path / "results"
    write_result(results, "table2", {"cifar10/frossl": cell("about 92")})
    line = one_error_line(check_cli("--results", results))
    assert str(results / "table2.json") in line and "cifar10/frossl" in line and "not a number" in line
    assert "collect table2" in line                      # the fix
    assert not (results / "check.txt").exists()
    write_result(results, "table2", {"cifar10/frossl": cell("inf")})   # "inf" is a number: a FAIL, not an error
    assert check_cli("--results", results).returncode == 1


def test_malformed_expected_yaml_is_one_line_naming_the_file(tmp_path):
    expected = copy_expected(tmp_path)
    (expected / "table2.yaml").write_text("experiment: table2\ncells: {cifar10/frossl: {paper: 92.8\n")
    line = one_error_line(check_cli("--results", tmp_path / "results", "--expected", expected))
    assert str(expected / "table2.yaml") in line and "not valid YAML" in line and "git checkout" in line
    # well-formed YAML, wrong content: the key is named
    (expected / "table2.yaml").write_text(yaml.safe_dump({"experiment": "table2", "tolerance": {"default": 1.0},
                                                          "cells": {"cifar10/frossl": {"paper": "92.8%"}}}))
    line = one_error_line(check_cli("--results", tmp_path / "results", "--expected", expected))
    assert "cells.cifar10/frossl.paper" in line and "not a number" in line
    (expected / "table2.yaml").write_text(yaml.safe_dump({"experiment": "table2", "cells": ["cifar10/frossl"]}))
    assert "'cells' must be a mapping" in one_error_line(check_cli("--results", tmp_path / "r", "--expected", expected))


def test_unknown_only_and_profile_are_one_line_errors(tmp_path):
    results = tmp_path / "results"
    write_result(results, "table2", {"cifar10/frossl": cell(92.8)})
    line = one_error_line(check_cli("--results", results, "--only", "table2,tabel3"))
    assert "--only tabel3" in line and "table3" in line.split("choose from")[1]
    line = one_error_line(check_cli("--results", results, "--profile", "shrt"))
    assert "--profile shrt" in line and "paper or claims or claims-all or claims-quick" in line
    assert not (results / "check.txt").exists()
    assert check_cli("--results", results, "--only", "table2", "--profile", "paper").returncode == 0


def test_corrupt_result_json_keeps_the_saved_check(tmp_path):
    results = tmp_path / "results"
    write_result(results, "table2", {"cifar10/frossl": cell(92.8)})
    assert check_cli("--results", results).returncode == 0
    saved = {name: (results / name).read_text() for name in ("check.txt", "check.json")}
    (results / "table2.json").write_text('{"experiment": "table2", "cells": {"cifar10/frossl": {"value": 9')  # cut
    line = one_error_line(check_cli("--results", results))
    assert str(results / "table2.json") in line and "not valid JSON" in line and "collect" in line
    assert {name: (results / name).read_text() for name in saved} == saved


def test_a_crash_while_saving_leaves_the_previous_check_whole(tmp_path, monkeypatch):
    """check.txt/check.json are written to a temporary file and renamed: a failure in between (here
    os.replace raising, as a kill or a full disk would) keeps the previous files and no temporary."""
    import os

    from repro.check import save
    results = tmp_path / "results"
    write_result(results, "table2", {"cifar10/frossl": cell(92.8)})
    save(run_check(results), results)
    before = {p.name: p.read_text() for p in results.iterdir()}

    def crash(src, dst):
        raise OSError("simulated crash during the rename")

    write_result(results, "table2", {"cifar10/frossl": cell(50.0)})   # a new table would differ
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        save(run_check(results), results)
    monkeypatch.undo()
    after = {p.name: p.read_text() for p in results.iterdir()}
    assert after["check.txt"] == before["check.txt"] and after["check.json"] == before["check.json"]
    assert set(after) == set(before)                                 # no temporary file left behind


# ---- sources and second references (expected_results/*.yaml, repro/references.py) ---------------

def test_value_equal_to_the_second_reference_gives_both_verdicts_on_one_line(tmp_path):
    """SimCLR CIFAR-10: the paper prints Ermolov et al.'s 91.8, solo-learn published 90.74. A run
    landing on 90.74 FAILs against the paper (|delta| 1.06 > 1.0) and PASSes against solo-learn;
    the exit status follows the paper."""
    results = tmp_path / "results"
    write_result(results, "table2", {"cifar10/simclr": cell(90.74), "cifar10/frossl": cell(92.8),
                                     "stl10/frossl": cell(70.0, False, "cached probe")})
    rows = by_cell(run_check(results), "table2")
    simclr = rows["cifar10/simclr"]
    assert simclr.status == "FAIL" and simclr.second_status == "PASS"
    assert simclr.second_value == 90.74 and simclr.second_delta == pytest.approx(0.0)
    assert rows["cifar10/frossl"].status == "PASS" and rows["cifar10/frossl"].second_status is None
    assert rows["stl10/frossl"].status == "NOT-COMPARABLE" and rows["stl10/frossl"].second_status is None
    assert rows["cifar100/simclr"].status == "MISSING" and rows["cifar100/simclr"].second_status is None
    result = run_cli(results)
    assert result.returncode == 1, result.stdout + result.stderr      # FAIL vs the paper fails the check
    line = next(x for x in result.stdout.splitlines() if x.split()[:2] == ["table2", "cifar10/simclr"])
    assert "FAIL vs paper (value from Ermolov et al. 2021) | PASS vs solo-learn published 90.74 +-1.0" in line
    own = next(x for x in result.stdout.splitlines() if x.split()[:2] == ["table2", "cifar10/frossl"])
    assert own.split()[-1] == "PASS"                                    # the paper's own run: one verdict
    for cell_name, status in (("stl10/frossl", "NOT-COMPARABLE"), ("cifar100/simclr", "MISSING")):
        line = next(x for x in result.stdout.splitlines() if x.split()[:2] == ["table2", cell_name])
        assert line.split()[-1] == status                               # rules and text unchanged
    saved = json.loads((results / "check.json").read_text())
    assert saved["counts"]["FAIL"] == 1 and saved["counts"]["PASS"] == 1   # counts are the paper's verdicts
    row = next(r for r in saved["rows"] if r["cell"] == "cifar10/simclr")
    assert row["second_status"] == "PASS" and row["second_reference"] == "solo-learn published"


def test_a_pass_vs_the_paper_can_fail_the_second_reference_without_failing_the_check(tmp_path):
    results = tmp_path / "results"
    write_result(results, "table2", {"cifar10/wmse": cell(91.3)})      # paper 91.6, solo-learn 88.67
    result = run_cli(results)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS vs paper (value from Ermolov et al. 2021) | FAIL vs solo-learn published 88.67 +-1.0" in result.stdout


def test_every_cell_names_its_source_and_every_second_reference_its_own():
    specs = load_expected()
    assert sum(len(s["cells"]) for s in specs.values()) == 48 + 55 + 5
    for name, spec in specs.items():
        for cell_name, entry in spec["cells"].items():
            source = spec["sources"][entry["source"]]
            assert source["label"] and source["detail"], (name, cell_name)
            second = entry.get("second")
            if second is None:
                assert entry.get("no_second") or spec.get("no_second_reference"), (name, cell_name)
                continue
            reference = spec["second_references"][second["ref"]]
            assert reference["label"] and reference["tolerance"] > 0, (name, cell_name)
            assert "commit" in reference["source"] and "README" in reference["source"], (name, cell_name)
    table2 = specs["table2"]["cells"]
    # the paper's own runs are its FroSSL rows, CorInfoMax CIFAR and every STL-10 cell (section 6.1)
    assert {c for c, e in table2.items() if e["source"] == "own_run"} == (
        {f"stl10/{r}" for r in specs["table2"]["rows"]}
        | {f"{d}/{r}" for d in ("cifar10", "cifar100") for r in ("frossl", "frossl_nologs", "corinfomax")})
    assert {c for c, e in table2.items() if e["source"] == "ermolov"} == {"cifar10/simclr", "cifar10/wmse",
                                                                          "cifar100/wmse"}
    # a value copied from solo-learn is its published value rounded to one decimal
    for cell_name, entry in table2.items():
        if entry["source"] == "solo_learn":
            assert entry["second"]["ref"] == "solo_learn" and round(entry["second"]["value"], 1) == entry["paper"]
        if entry["source"] == "ermolov":
            assert abs(entry["second"]["value"] - entry["paper"]) > 0.05   # not solo-learn's value


def test_references_doc_is_generated_from_the_yaml():
    from repro.references import DOC, disagreements, render_doc
    specs = load_expected()
    assert DOC.read_text() == render_doc(specs), "docs/references.md is stale: run python -m repro.references"
    listed = {(d["experiment"], d["cell"]) for d in disagreements(specs)}
    assert listed == {("table2", "cifar10/simclr"), ("table2", "cifar10/wmse"), ("table2", "cifar100/wmse"),
                      ("table2", "cifar100/corinfomax")}
    for experiment, name in listed:
        assert f"| {experiment} | {name} |" in DOC.read_text()


def test_cell_without_source_or_with_unknown_second_reference_is_one_line(tmp_path):
    expected = copy_expected(tmp_path)
    text = (expected / "table2.yaml").read_text()
    (expected / "table2.yaml").write_text(text.replace("cifar10/frossl: {paper: 92.8, mark: underlined, source: own_run}",
                                                       "cifar10/frossl: {paper: 92.8}"))
    line = one_error_line(check_cli("--results", tmp_path / "results", "--expected", expected))
    assert str(expected / "table2.yaml") in line and "cifar10/frossl" in line and "source" in line
    (expected / "table2.yaml").write_text(text.replace("second: {ref: solo_learn, value: 90.74}",
                                                       "second: {ref: solo_learn_v2, value: 90.74}"))
    line = one_error_line(check_cli("--results", tmp_path / "results", "--expected", expected))
    assert "cells.cifar10/simclr.second" in line and "solo_learn" in line
    assert not (tmp_path / "results" / "check.txt").exists()


def test_the_report_shows_both_verdicts_and_its_template_carries_the_second_reference_cells(tmp_path):
    """The notebook regenerated by `--write-template` keeps the second-references section, and the
    rendered pieces show the second verdict beside the paper's."""
    from repro.report import make_notebook, render

    results = tmp_path / "results"
    write_result(results, "table2", {"cifar10/simclr": cell(90.74), "cifar10/frossl": cell(92.8)})
    table = str(getattr(render.second_references(results), "data", render.second_references(results)))
    assert "cifar10/simclr" in table and "solo-learn published" in table and "cifar10/frossl" not in table
    assert "<b>FAIL</b>" in table and "<b>PASS</b>" in table            # vs paper, vs solo-learn
    full = str(getattr(render.check_table(results), "data", render.check_table(results)))
    assert "FAIL vs paper (value from Ermolov et al. 2021) | PASS vs solo-learn published" in full
    sources = ["".join(c.source) for c in make_notebook().cells]
    assert "render.second_references(RESULTS)" in sources
    assert any(s.startswith("### Second references") for s in sources)
