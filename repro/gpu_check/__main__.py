from repro.cli import run_cli
from repro.gpu_check import main

run_cli(main)
