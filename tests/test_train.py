"""examples/dqn_hrm.py end to end: a short run with 2 workers (collect, store, update, evaluate,
checkpoint, resume), Ctrl-C, and its errors."""

import csv
import importlib.util
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

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "dqn_hrm.py"
SMALL = [
    "--workers", "2", "--envs-per-worker", "4", "--frames-per-batch", "64",
    "--warmup-frames", "128", "--batch-size", "16", "--eval-episodes", "8",
    "--eval-every", "256", "--minutes", "0", "--buffer-size", "10000", "--no-compile",
]


def load_example():
    spec = importlib.util.spec_from_file_location("dqn_hrm", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(args, timeout=120):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("collector", ["multisync", "ray"])
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

    second = run([*small, "--frames", "768", "--run-dir", str(run_dir), "--resume"])
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stderr + second.stdout
    resumed = json.loads((run_dir / "summary.json").read_text())
    assert resumed["frames"] >= 768 and resumed["updates"] > summary["updates"]
    assert resumed["wall_seconds"] > summary["wall_seconds"]

    # a checkpoint from another env or preset is refused with a clear error
    other = run([*small, "--env", "DynamicMaze", "--run-dir", str(run_dir), "--resume"])
    assert other.returncode != 0
    assert "trained with env='FourRoomsDoors'" in other.stderr
    # ...and so is one of another model configuration (here: another number of segments)
    fewer = run([*small, "--segments", "1", "--run-dir", str(run_dir), "--resume"])
    assert fewer.returncode != 0
    assert "holds another model configuration" in fewer.stderr


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
    other = run([*SMALL, "--model", "hrm", "--run-dir", str(run_dir), "--resume"])
    assert other.returncode != 0 and f"trained with model={model!r}" in other.stderr


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
    again = run([*SMALL, "--frames", "64", "--warmup-frames", "5000", "--run-dir", str(run_dir),
                 "--resume"], timeout=90)
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


@pytest.mark.parametrize("collector, signum", [
    ("multisync", signal.SIGINT), ("multisync", signal.SIGTERM), ("ray", signal.SIGINT),
])
def test_stop_signal_saves_and_leaves_no_worker(tmp_path, collector, signum):
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
        if signum == signal.SIGINT:
            os.killpg(proc.pid, signum)  # Ctrl-C in a terminal reaches the whole group
        else:
            proc.send_signal(signum)  # as `kill` sends it
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr[-3000:]
    assert f"{signum.name}: saving a checkpoint" in stdout and "stopped at" in stdout
    assert (run_dir / "checkpoints" / "last.pt").exists()
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
        (["--env", "Maze"], "unknown env 'Maze'; choose one of \\['FourRoomsDoors', 'DynamicMaze'\\]"),
        (["--preset", "gpu"], "unknown preset 'gpu'; choose one of \\['cpu', 'paper'\\]"),
        (["--carry", "keep"], "unknown --carry 'keep'"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--segments", "0"], "--segments must be at least 1, got 0"),
        (["--model", "gpt"], "unknown --model 'gpt'; choose one of \\['hrm', 'mlp', 'lstm'\\]"),
        (["--model", "mlp", "--carry", "reset"], "--carry applies to hrm and lstm"),
        (["--model", "lstm", "--segments", "2"], "--segments, --hrm and --deep-supervision apply to"),
        (["--model", "mlp", "--hrm", "patch=1"], "--segments, --hrm and --deep-supervision apply to"),
        (["--hrm", "patch"], "--hrm: HRMConfig override 'patch' is not of the form field=value"),
        (["--hrm", "pach=1"], "--hrm: unknown HRMConfig field 'pach'"),
        (["--hrm", "patch=two"], "--hrm: HRMConfig.patch takes int, got 'two'"),
        (["--hrm", "heads=3"], "--hrm: HRMConfig.hidden \\(64\\) must be divisible by heads \\(3\\)"),
        (["--hrm", "segments=4"], "give the segments with --segments, not --hrm"),
        (["--hindsight", "-1"], "--hindsight must be 0 \\(off\\) or more, got -1"),
        (["--minutes", "-1"], "--minutes must be 0 \\(no limit\\) or more, got -1.0"),
        (["--threads", "-2"], "--threads must be 0 \\(torch's default\\) or more, got -2"),
        (["--eval-every", "0"], "--eval-every must be at least 1, got 0"),
        (["--warmup-frames", "5000", "--buffer-size", "4096"],
         "--warmup-frames \\(5000\\) exceeds the replay's --buffer-size \\(4096\\)"),
        (["--lr", "-0.001"], "--lr must be positive, got -0.001"),
        (["--gamma", "1.5"], "--gamma must lie in \\(0, 1\\], got 1.5"),
        (["--target-eps", "1"], "--target-eps must lie in \\[0, 1\\), got 1.0"),
        (["--advantage-learning", "-0.1"], "--advantage-learning must lie in \\[0, 1\\), got -0.1"),
        (["--eps-frames", "10", "--eps-updates", "10"], "--eps-frames or --eps-updates, not both"),
        (["--eps-end", "1.5"], "--eps-end must lie in \\[0, 1.0\\]"),
        (["--collector", "spark"], "unknown --collector 'spark'; choose one of \\['multisync', 'ray'\\]"),
        (["--ray-address", "auto"], "--ray-address applies to --collector ray only"),
    ],
)
def test_bad_flags_raise_clear_errors(args, match):
    example = load_example()
    with pytest.raises(SystemExit, match=match):
        example.main(args)


def test_ray_collector_without_ray_names_the_extra(monkeypatch):
    example = load_example()
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(SystemExit, match=r"--collector ray needs Ray.*pip install -e '\.\[ray\]'"):
        example.main(["--collector", "ray"])


def test_resume_without_checkpoint_errors(tmp_path):
    example = load_example()
    with pytest.raises(SystemExit, match="--resume but .*last.pt does not exist"):
        example.main(["--run-dir", str(tmp_path / "none"), "--resume"])


def test_flags_override_the_preset():
    example = load_example()
    cfg = example.resolve_config(example.parse_args(["--preset", "paper", "--lr", "0.5",
                                                     "--no-deep-supervision", "--device", "cpu"]))
    assert cfg["lr"] == 0.5 and cfg["deep_supervision"] is False
    assert cfg["batch_size"] == 256 and cfg["target_eps"] == 0.999 and cfg["workers"] == 5
    assert cfg["segments"] is None  # the model preset's
    # the paper's algorithm: no relabeling, epsilon annealed over 300K optimizer steps
    assert cfg["hindsight"] == 0 and cfg["eps_updates"] == 300_000 and cfg["eps_frames"] is None
    assert example.resolve_config(example.parse_args(["--segments", "3"]))["segments"] == 3
    cells = example.resolve_config(example.parse_args(["--hrm", "patch=1", "--hrm", "hidden=32",
                                                       "--segments", "3"]))
    _, model_config = example.make_network(cells)
    assert (model_config["patch"], model_config["hidden"], model_config["segments"]) == (1, 32, 3)
    assert model_config["positions"] == "2d" and model_config["H_layers"] == 1  # the rest: cpu's
    per_frame = example.resolve_config(example.parse_args(["--preset", "paper", "--device", "cpu",
                                                           "--eps-frames", "9600000"]))
    assert per_frame["eps_frames"] == 9_600_000 and per_frame["eps_updates"] is None
    mlp = example.resolve_config(example.parse_args(["--model", "mlp"]))
    assert mlp["carry"] == "none" and mlp["deep_supervision"] is False
    assert os.fspath(SCRIPT).endswith("dqn_hrm.py")


def test_advantage_learning_flag_gives_dqn_loss_its_estimator():
    from torchrl.objectives.value import TD0Estimator

    from hrm_torchrl.action_gap import AdvantageLearningEstimator

    example = load_example()
    env = example.make_env("DynamicMaze", num_envs=1)
    spec = env.action_spec_unbatched
    env.close()
    learners = {}
    for alpha in ("0", "0.9"):
        cfg = example.resolve_config(example.parse_args(["--advantage-learning", alpha,
                                                         "--no-compile", "--device", "cpu"]))
        net, _ = example.make_network(cfg)
        learners[alpha] = example.make_learner(net, spec, cfg)[1].value_estimator
    assert type(learners["0"]) is TD0Estimator  # the preset's: plain TD
    assert isinstance(learners["0.9"], AdvantageLearningEstimator)
    assert learners["0.9"].alpha == 0.9 and learners["0.9"].gamma == cfg["gamma"]


@pytest.mark.parametrize("model", ["hrm", "mlp", "lstm"])
def test_compiled_network_agrees_with_eager(model):
    example = load_example()
    torch.manual_seed(0)
    cfg = example.resolve_config(example.parse_args(["--model", model, "--device", "cpu"]))
    eager, _ = example.make_network(cfg)
    compiled, _ = example.make_network(cfg)
    compiled.load_state_dict(eager.state_dict())
    example.compile_network(compiled)
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # checkpoints unchanged
    primer, _ = example.carried_state(eager)
    env = example.make_env("FourRoomsDoors", num_envs=6, seed=0, primer=primer)
    data = env.rollout(4, break_when_any_done=False).reshape(-1)
    data = data.exclude("action_value")
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            q_eager = eager(data.clone())["action_value"]
            q_compiled = compiled(data.clone())["action_value"]
        torch.testing.assert_close(q_compiled, q_eager, atol=1e-5, rtol=1e-4)
