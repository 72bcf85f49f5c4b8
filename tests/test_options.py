"""The options are declared once, on the Options fields: the command line is built from them, a
value outside a Literal's choices or a non-integer is refused where the text is read (one line
naming the Make variable and the fix), and the printed `collect` line reads back as the same options."""
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from repro.cli import UserError
from repro.experiments.cli import parse_options
from repro.experiments.commands import option_args
from repro.experiments.options import Options, choices


def flags() -> dict[str, str]:
    return {f.name: "--" + (f.metadata["flag"] or f.name).replace("_", "-") for f in fields(Options)
            if "help" in f.metadata}


def test_every_flag_field_is_a_flag_of_the_command_line(capsys):
    with pytest.raises(SystemExit):
        parse_options(["--help"])
    text = capsys.readouterr().out
    assert set(flags()) >= {"gpus", "seeds", "profile", "config_variant", "overrides", "dry_run", "master_port"}
    for name, flag in flags().items():
        assert f"  {flag}" in text, flag
    assert "--variant VARIANT" in text and "[paper | authors]" in text and "claims-quick" in text
    assert "--python" not in text and "--row-lr" not in text and "--expected-dir" not in text


@pytest.mark.parametrize("field", [f.name for f in fields(Options) if "help" in f.metadata and choices(f)])
def test_a_value_outside_a_literal_is_one_line_naming_the_variable_and_its_choices(field):
    f = next(f for f in fields(Options) if f.name == field)
    variable = (f.metadata["flag"] or f.name).upper()
    with pytest.raises(UserError) as error:
        parse_options(["table2", flags()[field], "nonsense"])
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{variable}=nonsense is not one of its choices: choose ")
    assert all((c or "empty") in message for c in choices(f))


@pytest.mark.parametrize("argv, problem", [(["--gpus", "two"], "GPUS=two: not an integer: give e.g. GPUS=1"),
                                           (["--seeds", "0 x"], "SEEDS=0 x: not a list of integers"),
                                           (["--epochs", "0"], "EPOCHS=0 is out of range: give EPOCHS >= 1$"),
                                           (["--gpus", "0"], r"GPUS=0 is out of range: give GPUS >= 1 \(default 1\)"),
                                           (["--nnodes", "-1"], "NNODES=-1 is out of range: give NNODES >= 1"),
                                           (["--rdzv-timeout", "0"], "RDZV_TIMEOUT=0 is out of range: give RDZV_TIMEOUT >= 1"),
                                           (["--master-port", "70000"],
                                            r"MASTER_PORT=70000 is out of range: give MASTER_PORT 1..65535 \(default 29500\)"),
                                           (["--nnodes", "2", "--node-rank", "2", "--master-addr", "h"],
                                            r"NODE_RANK must be one of 0..1")])
def test_a_bad_number_is_one_line(argv, problem):
    with pytest.raises(UserError, match=problem):
        parse_options(["table2", *argv])


def test_defaults_come_from_the_fields_and_the_target():
    _, opts = parse_options(["table2", "--gpus", "", "--variant", "", "--epochs", ""])
    assert opts == Options(out=opts.out, data_dir=opts.data_dir)     # "" (an empty Make variable): the default
    _, claims = parse_options(["claims", "--out", str(Path.cwd() / "runs")])
    assert claims.profile == "claims" and claims.seeds == (0, 1, 2)   # the target's first profile, its seeds


def test_the_printed_collect_line_reads_back_as_the_same_options(tmp_path):
    opts = Options(out=tmp_path / "runs", data_dir=str(tmp_path / "data"), gpus=2, seeds=(0, 3), epochs=5,
                   probe="cached", overrides=("optim.lr=0.1", "name=a b"), config_variant="authors",
                   spectra_every=4, cache_dir=str(tmp_path / "cache"), methods=("frossl",))
    _, back = parse_options(["collect", "table2", *option_args(opts)])
    assert back == opts


def test_the_command_make_runs_carries_every_option():
    """The Makefile passes each option as its flag (OPTION_VARIABLES): a variable set on make's command
    line arrives in the Options the target runs with, and no flag is left out."""
    import json
    import subprocess
    from tests.conftest import ROOT
    printer = f"{sys.executable} -c 'import sys, json; print(json.dumps(sys.argv[1:]))'"
    variables = {"GPUS": "3", "RDZV_TIMEOUT": "7", "VARIANT": "authors", "CACHE_DIR": "/tmp/cache", "SEEDS": "1 2",
                 "MASTER_ADDR": "node0", "SPECTRA_EVERY": "4", "PROBE": "cached", "OVERRIDES": "optim.lr=0.1"}
    done = subprocess.run(["make", "--no-print-directory", "-n", "table2", "SETUP=true", f"PYTHON={printer}",
                           *(f"{k}={v}" for k, v in variables.items())],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    argv = json.loads(done.stdout.strip().splitlines()[-1])
    assert argv[:3] == ["-m", "repro.experiments", "table2"]
    assert set(flags().values()) <= set(argv), set(flags().values()) - set(argv)
    _, opts = parse_options(argv[2:])
    assert (opts.gpus, opts.rdzv_timeout, opts.config_variant, opts.cache_dir, opts.seeds, opts.master_addr,
            opts.spectra_every, opts.probe, opts.overrides, opts.dry_run) == \
        (3, 7, "authors", "/tmp/cache", (1, 2), "node0", 4, "cached", ("optim.lr=0.1",), True)
