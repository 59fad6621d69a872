"""examples/dqn_hrm.py end to end: a short run with 2 workers (collect, store, update, evaluate,
checkpoint, resume), Ctrl-C, run directories, and the command line's errors."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hrm_torchrl.runs import Run

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "dqn_hrm.py"
SMALL = [
    "--workers", "2", "--envs-per-worker", "4", "--frames-per-batch", "64",
    "--warmup-frames", "128", "--batch-size", "16", "--eval-episodes", "8",
    "--eval-every", "256", "--minutes", "0", "--buffer-size", "10000", "--no-compile",
]


def run(args, timeout=120):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("collector", ["multisync"])  # Ray's: test_stop_signal_..., test_pipeline
def test_short_run_then_resume(tmp_path, collector):
    run_dir = tmp_path / "run"
    small = [*SMALL, "--collector", collector]
    first = run([*small, "--frames", "512", "--run-dir", str(run_dir)])
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in ("success_rate", "mean_episode_length", "mean_success_length",
                "oracle_mean_episode_length", "frames", "wall_seconds", "frames_per_second",
                "preset", "env", "carry"):
        assert key in summary
    assert summary["frames"] >= 512 and summary["preset"] == "cpu"
    assert summary["env"] == "FourRoomsDoors" and summary["carry"] == "carry"
    assert summary["model"] == "hrm" and summary["hindsight"] == 1  # the cpu preset's
    assert 0 <= summary["success_rate"] <= 1 and summary["updates"] > 0
    assert 1 <= summary["mean_episode_length"] <= 80
    assert (run_dir / "checkpoints" / "last.pt").exists()
    assert (run_dir / "checkpoints" / "best.pt").exists()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["workers"] == 2 and config["collector"] == collector
    check_metrics(run_dir, min_rows=2)
    assert (run_dir / "logs" / "scalars" / "eval" / "success_rate.csv").exists()

    # a run directory that holds a run is refused, its files untouched
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit, match="already holds a run.*--resume.*--overwrite"):
        Run.from_command_line([*small, "--frames", "768", "--run-dir", str(run_dir)])
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before

    # --resume continues with the saved config (hindsight 1, the collector), the flags given
    # applied everywhere: --frames, and --lr in the optimizer
    second = run(["--frames", "768", "--lr", "0.0005", "--gamma", "0.9", "--run-dir", str(run_dir),
                  "--resume"])
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stderr + second.stdout and "lr 0.001 -> 0.0005" in second.stdout
    resumed = json.loads((run_dir / "summary.json").read_text())
    assert resumed["frames"] >= 768 and resumed["updates"] > summary["updates"]
    assert resumed["wall_seconds"] > summary["wall_seconds"]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["lr"] == 0.0005 and config["workers"] == 2 and config["hindsight"] == 1
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == [0.0005, 0.01]
    assert float(state["loss_module"]["_value_estimator.gamma"]) == pytest.approx(0.9)
    check_metrics(run_dir, min_rows=3)

    # what would change the network or the maze is refused, naming it
    with pytest.raises(SystemExit, match="trained with env='FourRoomsDoors'.*drop --env"):
        Run.from_command_line(["--env", "DynamicMaze", "--run-dir", str(run_dir), "--resume"])
    with pytest.raises(SystemExit, match="trained with hrm.segments=2; .*drop --hrm"):
        Run.from_command_line(["--hrm", "segments=1", "--run-dir", str(run_dir), "--resume"])


def check_metrics(run_dir, min_rows):
    """metrics.csv has a row per evaluation with the learning diagnostics, finite and in range."""
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= min_rows
    for row in rows:
        values = {key: float(row[key]) for key in ("frames", "updates", "optimizer_steps", "q_std",
                                                   "action_entropy", "replay_reward_share")}
        assert all(math.isfinite(v) for v in values.values()), row
        assert values["q_std"] >= 0 and 0 <= values["action_entropy"] <= math.log(4) + 1e-9
        assert 0 <= values["replay_reward_share"] <= 1
        unchanged = float(row["failed_steps_unchanged"])  # nan: no episode failed
        assert (0 <= unchanged <= 1) == (float(row["success_rate"]) < 1), row
    return rows


@pytest.mark.parametrize("model, extra", [
    ("mlp", ["--hindsight", "2", "--n-steps", "3"]),
    ("lstm", ["--hindsight", "0", "--carry", "reset"]),
])
def test_baselines_train_in_the_same_pipeline(tmp_path, model, extra):
    run_dir = tmp_path / model
    done = run([*SMALL, "--frames", "384", "--model", model, *extra, "--run-dir", str(run_dir)])
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["model"] == model and summary["updates"] > 0
    rows = check_metrics(run_dir, min_rows=1)
    if "--hindsight" in extra and extra[extra.index("--hindsight") + 1] != "0":
        # relabeled goals put rewarded frames in the replay, where the random walk has almost none
        assert float(rows[-1]["replay_reward_share"]) > 0.05
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert state["config"]["model"] == model
    # the checkpoint cannot be resumed as another model
    with pytest.raises(SystemExit, match=f"trained with model={model!r}"):
        Run.from_command_line(["--model", "hrm", "--run-dir", str(run_dir), "--resume"])


def test_a_seed_repeats_its_run(tmp_path):
    # the workers' mazes and exploration are seeded too (MultiSyncCollector.set_seed), so two
    # runs of one seed collect the same frames, train the same weights and evaluate alike
    def metrics(name):
        done = run([*SMALL, "--frames", "256", "--eval-every", "128", "--seed", "5",
                    "--run-dir", str(tmp_path / name)])
        assert done.returncode == 0, done.stderr[-3000:]
        with open(tmp_path / name / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 2 and int(rows[-1]["updates"]) > 0
        return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in rows]

    assert metrics("first") == metrics("again")


def test_runs_that_end_before_any_update_exit(tmp_path):
    # shorter than the warmup: no weights ever reach the workers, and the process still exits
    run_dir = tmp_path / "short"
    short = run([*SMALL, "--frames", "64", "--warmup-frames", "5000", "--run-dir", str(run_dir)],
                timeout=90)
    assert short.returncode == 0, short.stderr[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["updates"] == 0
    # a resume whose frames already reach --frames collects nothing and exits as well
    again = run(["--run-dir", str(run_dir), "--resume"], timeout=90)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stderr + again.stdout
    assert json.loads((run_dir / "summary.json").read_text())["frames"] == 64


def _pids():
    return [int(path.name) for path in Path("/proc").glob("[0-9]*")]


def _stat(pid):
    """The fields of /proc/PID/stat after the command name: state, ppid, pgrp, ...; [] if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _alive(pid):
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z"


def _descendants(pid):
    children = {}
    for child in _pids():
        fields = _stat(child)
        if fields:
            children.setdefault(int(fields[1]), []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.mark.parametrize("collector, signum, to_group", [
    ("multisync", signal.SIGINT, True),  # Ctrl-C in a terminal reaches the whole group
    ("multisync", signal.SIGTERM, True),  # as `timeout`, `kill -- -PGID` or a scheduler send it
    ("ray", signal.SIGINT, True),
])
def test_stop_signal_saves_and_leaves_no_worker(tmp_path, collector, signum, to_group):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *SMALL, "--frames", "10000000", "--run-dir", str(run_dir),
         "--collector", collector],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        start_new_session=True,  # its own process group, as a shell gives a job
    )
    try:
        deadline = time.time() + 90
        loss_log = run_dir / "logs" / "scalars" / "train" / "loss.csv"
        while not loss_log.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        workers = _descendants(proc.pid)  # collector workers; for Ray also its raylet and GCS
        assert workers, "the collector should have worker processes"
        if to_group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr[-3000:]
    assert f"{signum.name}: saving a checkpoint" in stdout and "stopped at" in stdout
    saved = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert saved["frames"] > 0 and "Traceback" not in stderr
    time.sleep(1.0)
    alive = [pid for pid in workers if _alive(pid)]
    assert not alive, f"worker processes left behind: {alive}"
    # nor any process started later in its group (a local Ray cluster starts some on demand)
    group = [pid for pid in _pids() if (fields := _stat(pid)) and int(fields[2]) == proc.pid
             and fields[0] != "Z"]
    assert not group, f"processes left in the run's process group: {group}"


@pytest.mark.parametrize(
    "args, match",
    [
        (["--batch-size", "0"], "--batch-size: must be an integer of at least 1, got 0"),
        (["--model", "mlp", "--carry", "reset"], "--carry: applies to hrm and lstm"),
        (["--model", "lstm", "--deep-supervision"], "--deep-supervision: applies to model 'hrm' only"),
        (["--model", "mlp", "--hrm", "patch=1"], "--hrm: applies to model 'hrm' only"),
        (["--model", "lstm", "--dueling"], "--dueling: applies to model 'hrm' only"),
        (["--hrm", "heads=3"], "--hrm: .*HRMConfig.hidden \\(64\\) must be divisible by heads \\(3\\)"),
        (["--hrm", "vocab_size=10"], "--hrm: must read the mazes' 11x11 grids"),
        (["--hrm", "grid_shape=121,1"], "--hrm: must read the mazes' 11x11 grids"),
        (["--hindsight", "-1"], "--hindsight: must be an integer of 0 \\(off\\) or more, got -1"),
        (["--seed", "-1"], "--seed: must be an integer of 0 or more, got -1"),
        (["--minutes", "-1"], "--minutes: must be 0 \\(no limit\\) or a positive number, got -1.0"),
        (["--minutes", "nan"], "--minutes: must be 0 \\(no limit\\) or a positive number, got nan"),
        (["--threads", "-2"], "--threads: must be an integer of 0 \\(torch's default\\) or more"),
        (["--eval-every", "0"], "--eval-every: must be an integer of at least 1, got 0"),
        (["--warmup-frames", "5000", "--buffer-size", "4096"],
         "--warmup-frames: \\(5000\\) exceeds the replay's buffer_size \\(4096\\)"),
        (["--lr", "-0.001"], "--lr: must lie in \\(0, inf\\), got -0.001"),
        (["--gamma", "1.5"], "--gamma: must lie in \\(0, 1\\], got 1.5"),
        (["--target-eps", "1"], "--target-eps: must lie in \\[0, 1\\), got 1.0"),
        (["--eps-end", "1.5"], "--eps-end: must lie in \\[0, eps_init=1.0\\]"),
        (["--ray-address", "auto"], "--ray-address: applies to collector 'ray' only"),
        (["--resume"], "--resume needs the --run-dir"),
        (["--resume", "--overwrite", "--run-dir", "x"], "give --resume or --overwrite, not both"),
    ],
)
def test_bad_flags_raise_clear_errors(args, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=f"^error: {match}"):
        Run.from_command_line(args)
    assert not list(tmp_path.iterdir())  # refused before any directory was made


@pytest.mark.parametrize(
    "args, match",
    [
        (["--env", "Maze"], "argument --env: invalid choice: 'Maze'"),
        (["--preset", "gpu"], "argument --preset: invalid choice: 'gpu'"),
        (["--carry", "keep"], "argument --carry: invalid choice: 'keep'"),
        (["--collector", "spark"], "argument --collector: invalid choice: 'spark'"),
        (["--hrm", "patch"], "--hrm: HRMConfig override 'patch' is not of the form field=value"),
        (["--hrm", "pach=1"], "--hrm: unknown HRMConfig field 'pach'"),
        (["--hrm", "patch=two"], "--hrm: HRMConfig.patch takes int, got 'two'"),
        (["--segments", "3"], "unrecognized arguments: --segments 3"),
    ],
)
def test_bad_flags_are_usage_errors(args, match, capsys):
    with pytest.raises(SystemExit) as stopped:
        Run.from_command_line(args)
    assert stopped.value.code == 2 and match in capsys.readouterr().err


def test_ray_collector_without_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(SystemExit, match=r"--collector: 'ray' needs Ray.*pip install -e '\.\[ray\]'"):
        Run.from_command_line(["--collector", "ray"])


def test_resume_checks_the_checkpoint_before_anything_else(tmp_path):
    started = time.time()
    with pytest.raises(SystemExit, match="no checkpoint at .*none/checkpoints/last.pt"):
        Run.from_command_line(["--run-dir", str(tmp_path / "none"), "--resume"])
    assert not (tmp_path / "none").exists()
    (tmp_path / "bad" / "checkpoints").mkdir(parents=True)
    (tmp_path / "bad" / "checkpoints" / "last.pt").write_bytes(b"PK\x03\x04truncated")
    with pytest.raises(SystemExit, match="bad/checkpoints/last.pt is not a readable checkpoint"):
        Run.from_command_line(["--run-dir", str(tmp_path / "bad"), "--resume"])
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit, match="--run-dir .*file is a file, not a directory"):
        Run.from_command_line(["--run-dir", str(tmp_path / "file")])
    assert time.time() - started < 5


def test_the_examples_help_shows_the_presets_values():
    cpu = run(["--help"], timeout=60).stdout
    paper = run(["--preset", "paper", "--help"], timeout=60).stdout
    flat = lambda text: " ".join(text.split())  # noqa: E731  argparse wraps its lines
    lr = lambda text: flat(text.split("--lr LR")[2])[:60]  # noqa: E731  [1] is the usage line
    assert "(default: 0.001)" in lr(cpu) and "(default: 0.0001)" in lr(paper)
    assert "{hrm,mlp,lstm}" in cpu and flat(cpu).count("(default: None)") == 1  # --ray-address


def test_a_gpu_run_resumes_on_a_cpu(tmp_path):
    from hrm_torchrl.dqn import DQNConfig

    config = DQNConfig.cpu(eval_episodes=8).to_dict() | {"device": "cuda"}  # as a GPU run saved it
    (tmp_path / "checkpoints").mkdir()
    torch.save({"config": config, "model": {}}, tmp_path / "checkpoints" / "last.pt")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="--device: is 'cuda' but torch sees no CUDA device"):
            Run.from_command_line(["--run-dir", str(tmp_path), "--resume"])
    run = Run.from_command_line(["--run-dir", str(tmp_path), "--resume", "--device", "cpu"])
    assert run.config.device == "cpu" and run.changes == {"device": ("cuda", "cpu")}
