"""The training pipeline's speed: examples/dqn_hrm.py's own loop beside its two halves.

    python benchmarks/pipeline_speed.py [--preset cpu] [--device cpu] [--seconds 180] [--rows ...]
        [--json FILE] [-- EXAMPLE_FLAGS]   # e.g. -- --batch-size 32: the example's flags, for every row

Rows (frames/s and optimizer steps/s; the preset's replay ratio fixes steps per frame):
  pipeline-PRESET          `examples/dqn_hrm.py --preset PRESET` in a subprocess for --seconds:
                           collect + learn as in training, rates between its first and last
                           evaluation (start-up and compilation excluded; 8-episode evaluations
                           every ~4 rounds included)
  collect-PRESET           the preset's collector alone (its workers, mazes and policy), no learning
  learn-PRESET-eager       the learner alone on a replay of collected frames: sample, loss,
  learn-PRESET-compiled    backward, step, SoftUpdate (deep supervision where the preset uses it),
                           without and with --compile
The limit of the pipeline row: collection and learning taking turns, each at its own rate
(1 / (1 / collect + steps per frame / learn), learner as the preset compiles it).
With --device cuda the policy, the learner and the replay live on the GPU, as in the example, and
the rows are named ...-cuda; the mazes always run on the CPU.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from tensordict.nn import TensorDictSequential
from torchrl.modules import EGreedyModule

from hrm_torchrl import HindsightRelabel, MultiStep, make_env
from hrm_torchrl.dqn import (DQNConfig, carried_keys, config_from_changes, gradient_steps,
                             make_collector, make_learner, make_network, make_replay, parse_args,
                             replay_keys)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "dqn_hrm.py"
# --quick: a tiny pipeline, so that the tests keep this script working (they assert no timing)
QUICK_FLAGS = ["--workers", "2", "--envs-per-worker", "4", "--frames-per-batch", "64",
               "--warmup-frames", "128", "--batch-size", "16", "--updates-per-batch", "2",
               "--buffer-size", "10000"]


def pipeline(flags: list, seconds: float, eval_every: int) -> dict:
    """Runs the example; rates between its first and last evaluation rows."""
    with tempfile.TemporaryDirectory() as run_dir:
        cmd = [sys.executable, str(EXAMPLE), *flags, "--minutes", str(seconds / 60),
               "--frames", str(10**9), "--eval-every", str(eval_every), "--eval-episodes", "8",
               "--run-dir", run_dir]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
        with open(Path(run_dir) / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
    if len(rows) < 2:
        raise RuntimeError(f"only {len(rows)} evaluation(s) in {seconds} s: raise --seconds")
    first, last = rows[0], rows[-1]
    wall = float(last["wall_seconds"]) - float(first["wall_seconds"])
    return {
        "frames_per_second": (int(last["frames"]) - int(first["frames"])) / wall,
        "optimizer_steps_per_second":
            (int(last["optimizer_steps"]) - int(first["optimizer_steps"])) / wall,
        "seconds_measured": wall,
    }


def collect(cfg: DQNConfig, seconds: float) -> float:
    """Frames/s of the preset's collector and epsilon-greedy policy, nothing else running."""
    net = make_network(cfg).to(cfg.device)
    primer = net.make_tensordict_primer()
    env = make_env(cfg.env, primer=primer, device=cfg.device)
    action_spec = env.action_spec_unbatched
    env.close()
    actor = make_learner(net, action_spec, cfg).actor
    policy = TensorDictSequential(actor, EGreedyModule(action_spec, eps_init=0.5, eps_end=0.5))
    collector, shutdown = make_collector(cfg, policy, primer, seed=0)
    frames, start = 0, None
    try:
        for i, data in enumerate(collector):
            if i == 1:  # the first round pays the workers' start-up
                frames, start = 0, time.perf_counter()
            elif i > 1:
                frames += data.numel()
                collector.update_policy_weights_()  # as the training loop does every round
                if time.perf_counter() - start >= seconds:
                    break
        return frames / (time.perf_counter() - start)
    finally:
        shutdown()


def learn(cfg: DQNConfig, compiled: bool | str, seconds: float) -> float:
    """Optimizer steps/s of the preset's learner on a replay of random-walk frames, relabeled
    and with n-step returns as in training: the example's update, step for step. ``compiled``:
    False (eager), True (torch.compile's default mode) or a torch.compile mode."""
    torch.manual_seed(0)
    device = torch.device(cfg.device)
    net = make_network(cfg).to(device)
    primer = net.make_tensordict_primer()
    env = make_env(cfg.env, num_envs=cfg.envs_per_worker, seed=0, primer=primer, device=device)
    learner = make_learner(net, env.action_spec_unbatched, cfg)
    with torch.no_grad():  # the policy's own forward fills the carried state
        data = env.rollout(64, learner.actor, break_when_any_done=False)
    env.close()
    data = HindsightRelabel(copies=cfg.hindsight)(data)
    if cfg.n_steps > 1:
        data = MultiStep(gamma=cfg.gamma, n_steps=cfg.n_steps)(data)
    data = data[data["collector", "mask"]]
    buffer = make_replay(dataclasses.replace(cfg, buffer_size=data.numel()), device)
    buffer.extend(data.select(*replay_keys(carried_keys(primer), cfg.n_steps > 1)))
    if compiled:
        net.compile_modules(mode=None if compiled is True else compiled)
    steps = 0

    def update():
        nonlocal steps
        steps += sum(1 for _ in gradient_steps(learner, buffer.sample(), cfg.grad_clip))

    for _ in range(3):  # warm-up: compilation, allocator
        update()
    synchronize(device)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        update()
    synchronize(device)
    return steps / (time.perf_counter() - start)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":  # the clock must not stop while queued kernels still run
        torch.cuda.synchronize(device)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", help="the example's preset")
    parser.add_argument("--device", default="cpu", help="cpu or cuda: the policy's, learner's and "
                        "replay's device (the example's --device)")
    parser.add_argument("--seconds", type=float, default=180.0, help="the pipeline row's run")
    parser.add_argument("--rows", nargs="*", choices=["collect", "learn", "pipeline"],
                        default=["collect", "learn", "pipeline"],
                        help="which rows (pipeline needs the other two for its limit)")
    parser.add_argument("--quick", action="store_true", help="a tiny pipeline, a few seconds each")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("example_flags", nargs="*", help="flags of examples/dqn_hrm.py (after --)")
    args = parser.parse_args(argv)
    flags = ["--preset", args.preset, "--device", args.device, *args.example_flags]
    if args.quick:  # and no compilation, which alone takes longer than the quick rows
        flags += QUICK_FLAGS + ["--no-compile"]
    cfg = config_from_changes(parse_args(flags)[0])
    seconds = 1.0 if args.quick else 10.0
    steps_per_frame = cfg.steps_per_frame
    tag = args.preset if cfg.device == "cpu" else f"{args.preset}-{cfg.device}"
    rows = []

    def add(name, **values):
        rows.append({"name": name, **values})
        print(f"{name:28s} " + "  ".join(f"{k} {v:,.2f}" for k, v in values.items()), flush=True)

    wanted = set(args.rows) | ({"collect", "learn"} if "pipeline" in args.rows else set())
    if "collect" in wanted:
        collect_fps = collect(cfg, seconds)
        add(f"collect-{tag}", frames_per_second=collect_fps)
    learn_rates = {}
    variants = [] if "learn" not in wanted else [False] if args.quick else [False, True]
    for compiled in variants:  # eager, compiled
        learn_rates[compiled] = learn(cfg, compiled, seconds)
        add(f"learn-{tag}-{'compiled' if compiled else 'eager'}",
            optimizer_steps_per_second=learn_rates[compiled],
            frames_per_second=learn_rates[compiled] / steps_per_frame)
    if "pipeline" in wanted:
        learn_sps = learn_rates[cfg.compile]
        limit = 1 / (1 / collect_fps + steps_per_frame / learn_sps)
        eval_every = cfg.frames_per_batch * (2 if args.quick else 4)
        run = pipeline(flags, 20.0 if args.quick else args.seconds, eval_every)
        add(f"pipeline-{tag}", frames_per_second=run["frames_per_second"],
            optimizer_steps_per_second=run["optimizer_steps_per_second"],
            limit_frames_per_second=limit, ratio=run["frames_per_second"] / limit)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
