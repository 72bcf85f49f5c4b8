"""The batch script's decisions (scripts/slurm/frossl.sbatch) with stand-in srun, scontrol and
scancel on PATH, as a real SLURM cluster was seen to behave (docs/slurm.md): a stop signal to the
batch shell is relayed with `scancel --signal=TERM` (srun itself is never signalled: it would SIGKILL
its tasks); a step that ends 143 (its tasks got TERM, as at a pre-emption) or a relayed stop is
requeued; array tasks pick their (dataset, method) pair. The real cluster: `make slurm-test`."""
import os
import re
import signal
import subprocess
import time

from tests.conftest import ROOT
from tests.test_setup import SBATCH, bash, fake


def slurm_env(tmp_path, **extra):
    fake(tmp_path, "scontrol", f'if [ "$1 $2" = "show hostnames" ]; then echo gpu01; echo gpu02; '
                               f'else echo "scontrol $*" >> {tmp_path}/calls.log; fi')
    return {"SLURM_JOB_ID": "1234", "SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_NNODES": "2",
            "SLURM_GPUS_ON_NODE": "4", "SLURM_CPUS_PER_TASK": "16", "FROSSL_DIR": str(ROOT),
            "PATH": f"{tmp_path}:{os.environ['PATH']}", **extra}


def dry_run(tmp_path, *args, **extra):
    result = bash(f"bash {SBATCH} " + " ".join(args), tmp_path, slurm_env(tmp_path, FROSSL_SLURM_DRY_RUN="1", **extra))
    # the script's own line (make setup's output may come first, e.g. "make[1]: Entering directory" under make)
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("frossl.sbatch: job ")), "")
    return result, (line.split("]: ", 1)[1].strip() if "]: " in line else "")


def test_sbatch_asks_for_an_early_sigterm_requeue_and_gives_srun_its_cpus():
    text = SBATCH.read_text()
    directives = re.findall(r"^#SBATCH (\S+)", text, re.M)
    assert "--requeue" in directives
    assert any(re.fullmatch(r"--signal=B:TERM@\d+", d) for d in directives)
    srun = next(line for line in text.splitlines() if line.startswith("srun "))
    assert '--cpus-per-task="${SLURM_CPUS_PER_TASK' in srun   # steps do not inherit it (Slurm >= 22.05)
    assert not re.search(r"kill -(TERM|15|s)", text)           # nothing ever signals srun


def test_sbatch_node_command_is_the_multi_node_make_line(tmp_path):
    result, command = dry_run(tmp_path, "table2", "DATA_DIR=/data", "METHODS=frossl", "DATASETS=cifar10",
                              f"OUT={tmp_path}/out")
    assert result.returncode == 0, result.stderr
    assert command == (f"make table2 DATA_DIR=/data METHODS=frossl DATASETS=cifar10 OUT={tmp_path}/out SETUP=true "
                       "GPUS=4 NNODES=2 MASTER_ADDR=gpu01 MASTER_PORT=29734 NODE_RANK=$SLURM_NODEID")
    # what node 1 then runs: make prints torchrun's multi-node command (make -n: nothing starts)
    node = bash(command.replace("make ", "make -n ", 1), ROOT, {"SLURM_NODEID": "1"})
    torchrun = [line for line in node.stdout.splitlines() if "torchrun" in line]
    assert torchrun, node.stdout + node.stderr
    assert "--nnodes=2 --node_rank=1 --master_addr=gpu01 --master_port=29734 --rdzv_conf=timeout=600 --nproc_per_node=4" \
        in torchrun[0]


def test_a_node_without_gpus_runs_one_process_and_gpus_given_wins(tmp_path):
    assert "GPUS=1 " in dry_run(tmp_path, "demo", SLURM_GPUS_ON_NODE="0")[1]
    assert "GPUS=1 " in dry_run(tmp_path, "demo", SLURM_GPUS_ON_NODE="")[1]
    assert "GPUS=2 " in dry_run(tmp_path, "demo", "GPUS=2")[1]


def test_array_tasks_pick_their_dataset_and_method_pair(tmp_path):
    # 2 datasets x 3 methods, dataset-major: task 4 = (cifar100, simclr)
    args = ["table2", "'METHODS=frossl simclr vicreg'", "DATASETS=cifar10,cifar100"]
    result, command = dry_run(tmp_path, *args, SLURM_ARRAY_TASK_ID="4")
    assert result.returncode == 0, result.stderr
    assert command.endswith("DATASETS=cifar100 METHODS=simclr SETUP=true GPUS=4 NNODES=2 MASTER_ADDR=gpu01 "
                            "MASTER_PORT=29734 NODE_RANK=$SLURM_NODEID")
    result, _ = dry_run(tmp_path, *args, SLURM_ARRAY_TASK_ID="6")
    assert result.returncode == 2 and "--array=0-5" in result.stderr
    result, _ = dry_run(tmp_path, "table2", SLURM_ARRAY_TASK_ID="0")
    assert result.returncode == 2 and "needs METHODS=... and DATASETS=..." in result.stderr


def start(tmp_path, srun_body, *args, signal_batch=False, **extra):
    """Run the script with a stand-in srun (`srun_body`, after it logs its arguments and traps TERM)
    and scancel; optionally SIGTERM the batch shell once srun runs. Returns (code, output, calls)."""
    log = tmp_path / "calls.log"
    fake(tmp_path, "make", f'echo "make $*" >> {log}')
    fake(tmp_path, "scancel", f'echo "scancel $*" >> {log}; touch {tmp_path}/tasks-signalled')
    fake(tmp_path, "srun", f'echo "srun $*" >> {log}; trap \'echo "srun got TERM" >> {log}\' TERM; '
                           f'touch {tmp_path}/started; {srun_body}')
    process = subprocess.Popen(["bash", str(SBATCH), "table2", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **slurm_env(tmp_path, SLURM_NNODES="1", **extra)})
    if signal_batch:
        deadline = time.time() + 30
        while not (tmp_path / "started").exists():
            assert time.time() < deadline and process.poll() is None, "srun not started"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    return process.returncode, output, log.read_text().splitlines()


# the tasks, as the stand-in srun sees them: run until scancel signals them, then checkpoint and exit 143
TASKS_UNTIL_SCANCEL = "while [ ! -e {tmp}/tasks-signalled ]; do sleep 0.05; done; exit 143"


def test_time_limit_signal_is_relayed_to_the_tasks_never_to_srun_then_requeued(tmp_path):
    code, output, calls = start(tmp_path, TASKS_UNTIL_SCANCEL.format(tmp=tmp_path), signal_batch=True)
    assert "srun got TERM" not in calls, calls
    assert "scancel --signal=TERM 1234" in calls
    assert calls[-1] == "scontrol requeue 1234", calls
    assert code == 0 and "requeueing job 1234" in output
    srun = next(c for c in calls if c.startswith("srun "))
    assert "--cpus-per-task=16" in srun


def test_preemption_signals_only_the_tasks_and_the_step_ending_143_is_requeued(tmp_path):
    code, output, calls = start(tmp_path, "sleep 0.2; exit 143")
    assert calls[0] == "make setup" and calls[-1] == "scontrol requeue 1234", calls
    assert not any(c.startswith("scancel") for c in calls) and code == 0


def test_past_the_requeue_limit_it_stops_with_the_status(tmp_path):
    code, output, calls = start(tmp_path, "exit 143", SLURM_RESTART_COUNT="20")
    assert code == 143 and "not again" in output and not any("requeue" in c for c in calls)


def test_a_finished_or_failed_step_is_not_requeued_and_setup_given_is_not_rerun(tmp_path):
    code, _, calls = start(tmp_path, "exit 0")
    assert code == 0 and not any("requeue" in c for c in calls)
    (tmp_path / "calls.log").unlink()
    code, _, calls = start(tmp_path, "exit 2", "SETUP=true", "PYTHON=/opt/venv/bin/python")
    assert code == 2 and not any("requeue" in c for c in calls)
    assert not any(c.startswith("make") for c in calls)   # SETUP given: the environment is ready
    assert "SETUP=true PYTHON=/opt/venv/bin/python SETUP=true" in next(c for c in calls if c.startswith("srun "))


def test_an_unresolvable_master_addr_fails_at_once_naming_it(tmp_path):
    fake(tmp_path, "scontrol", 'echo no-such-node-21.invalid')
    env = {**os.environ, "SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "x", "SLURM_NNODES": "2", "FROSSL_DIR": str(ROOT),
           "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    started = time.monotonic()
    result = subprocess.run(["bash", str(SBATCH), "table2", "SETUP=true"], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 2 and "MASTER_ADDR=no-such-node-21.invalid" in result.stderr
    assert time.monotonic() - started < 30


def test_sbatch_outside_slurm_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    result = subprocess.run(["bash", str(SBATCH), "table2"], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode != 0 and "not inside a SLURM job" in result.stderr
