"""Collector throughput on the mazes, each row against the limit it is held to, side by side.

    python benchmarks/collector_throughput.py [--quick] [--json FILE] [--env FourRoomsDoors]

Rows (frames/s):
  plain-loop                 a gymnasium loop over one maze: the env's own limit
  plain-loop-astar           the same with info["shortest_path"] (A* every step, shortest_path=True)
  serialenv-gymenv-16        TorchRL's SerialEnv of 16 GymEnv mazes (the stock way)
  torchrl-env-N              make_env(num_envs=N), random actions, one process
  multisync-random-W-E       MultiSyncCollector, W workers x E mazes each, random policy
  multisync-hrm-PRESET-W-E   the same with the HRM epsilon-greedy policy
  ray-random-W-E, ray-hrm-PRESET-W-E
                             the same through TorchRL's RayCollector (W Ray actors on a local
                             cluster, each a Collector of E mazes); needs the [ray] extra
  hand-rolled-hrm-PRESET     one process, SerialEnv of 256 GymEnv mazes, the batched policy in a
                             plain loop (the authors' approach)
  model-only-PRESET          the policy's forward alone on batches of the same size
The limit of a row is the plain loop's rate times its worker processes (capped by the cores),
or the model-only rate for a policy row, whichever is lower.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import time

import gymnasium as gym
import numpy as np
import torch
from tensordict.nn import TensorDictSequential
from torchrl.collectors import Collector, MultiSyncCollector
from torchrl.envs import (
    Compose,
    FlattenObservation,
    GymWrapper,
    InitTracker,
    SerialEnv,
    TransformedEnv,
)

import hrm_torchrl
from hrm_torchrl import HRMConfig, HRMQValueNet, make_env
from hrm_torchrl.torchrl_env import ENV_IDS

CORES = os.cpu_count() or 1


def plain_loop(env_id: str, seconds: float, shortest_path: bool = False) -> float:
    env = gym.make(env_id, shortest_path=shortest_path)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    frames, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        _, _, terminated, truncated, _ = env.step(int(rng.integers(4)))
        frames += 1
        if terminated or truncated:
            env.reset()
    return frames / (time.perf_counter() - start)


def gym_env(env_id: str) -> GymWrapper:
    # GymEnv(env_id) would pass a `frameskip` keyword that our mazes reject.
    return GymWrapper(gym.make(env_id))


def rollout_rate(env, policy, steps: int) -> float:
    env.rollout(2, policy, break_when_any_done=False)  # warm up
    start = time.perf_counter()
    with torch.no_grad():
        data = env.rollout(steps, policy, break_when_any_done=False)
    return data.numel() / (time.perf_counter() - start)


def hrm_policy(preset: str, action_spec):
    torch.manual_seed(0)
    net = HRMQValueNet(HRMConfig.preset(preset))
    from torchrl.modules import EGreedyModule, QValueActor

    actor = QValueActor(net, spec=action_spec)
    return net, TensorDictSequential(actor, EGreedyModule(action_spec, eps_init=0.1, eps_end=0.1))


def make_collector(kind, name, workers, envs, policy, primer, frames_per_batch):
    factories = [functools.partial(make_env, name, num_envs=envs, seed=1000 * w, primer=primer)
                 for w in range(workers)]
    if kind == "multisync":
        return MultiSyncCollector(factories, policy, frames_per_batch=frames_per_batch,
                                  total_frames=-1)
    from torchrl.collectors.distributed import RayCollector  # on the Ray runtime main() started

    collector = RayCollector(factories, policy, collector_class=Collector, num_collectors=workers,
                             sync=True, frames_per_batch=frames_per_batch, total_frames=2**62,
                             remote_configs={"num_cpus": 1})
    if policy is not None:
        collector.update_policy_weights_(policy)
    return collector


def collector_rate(kind, name, workers, envs, policy, primer, seconds, frames_per_batch) -> float:
    collector = make_collector(kind, name, workers, envs, policy, primer, frames_per_batch)
    frames, start = 0, None
    for i, data in enumerate(collector):
        if i == 1:  # the first batch pays the workers' start-up
            start, frames = time.perf_counter(), 0
        elif i > 1:
            frames += data.numel()
            if time.perf_counter() - start >= seconds:
                break
    rate = frames / (time.perf_counter() - start)
    collector.shutdown()
    return rate


def model_only(net: HRMQValueNet, rows: int, seconds: float) -> float:
    env = make_env("FourRoomsDoors", num_envs=rows, seed=0, primer=net.make_tensordict_primer())
    td = env.reset()
    env.close()
    with torch.no_grad():
        net(td.clone())
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            net(td.clone())
            calls += 1
    return calls * rows / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds in all, small grid")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--env", default="FourRoomsDoors", choices=hrm_torchrl.MAZES)
    parser.add_argument("--presets", nargs="*", default=["cpu", "paper"])
    parser.add_argument("--collectors", nargs="*", choices=["multisync", "ray"],
                        help="collector rows to run (default: multisync, and ray if installed)")
    parser.add_argument("--plot", help="write a PNG of the collector rows here")
    args = parser.parse_args(argv)
    kinds = args.collectors
    if kinds is None:
        kinds = ["multisync"] + ["ray"] * (importlib.util.find_spec("ray") is not None)
    if "ray" in kinds and importlib.util.find_spec("ray") is None:
        parser.error("the ray rows need Ray, an optional extra: pip install -e '.[ray]'")
    quick = args.quick
    seconds = 0.5 if quick else 5.0
    env_id = ENV_IDS[args.env]
    rows = []

    def add(name, fps, limit):
        rows.append({"name": name, "frames_per_second": fps, "limit_frames_per_second": limit,
                     "ratio": fps / limit})
        print(f"{name:32s} {fps:10.1f} frames/s  (limit {limit:10.1f}, ratio {fps / limit:5.2f})",
              flush=True)

    plain = plain_loop(env_id, seconds)
    add("plain-loop", plain, plain)
    add("plain-loop-astar", plain_loop(env_id, seconds, shortest_path=True), plain)
    serial = SerialEnv(4 if quick else 16, functools.partial(gym_env, env_id))
    add(f"serialenv-gymenv-{serial.batch_size[0]}", rollout_rate(serial, None, 5 if quick else 50),
        plain)
    serial.close()
    for n in (1, 16) if quick else (1, 16, 64):
        env = make_env(args.env, num_envs=n, seed=0)
        add(f"torchrl-env-{n}", rollout_rate(env, None, 10 if quick else 200), plain)
        env.close()

    grid = [(2, 4)] if quick else [(w, e) for w in (1, 2, 5) for e in (16, 64)]
    if "ray" in kinds:  # one local cluster for all Ray rows, a logical CPU per actor
        import ray

        ray.init(num_cpus=max(CORES, *(w for w, _ in grid)), include_dashboard=False,
                 log_to_driver=False)
    action_spec = make_env(args.env).action_spec_unbatched
    for workers, envs in grid:
        for kind in kinds:
            # policy=None: each worker draws random actions from its own env's batched spec
            fps = collector_rate(kind, args.env, workers, envs, None, None, seconds,
                                 workers * envs * 4)
            add(f"{kind}-random-{workers}-{envs}", fps, plain * min(workers, CORES))

    presets = ["cpu"] if quick else args.presets
    for preset in presets:
        net, policy = hrm_policy(preset, action_spec)
        primer = net.make_tensordict_primer()
        # (1, 256): one worker whose policy batch equals the hand-rolled loop's
        hrm_grid = (grid + [(1, 256)] * (not quick)) if preset == "cpu" else [(5, 16), (1, 256)]
        for workers, envs in hrm_grid:
            model_limit = model_only(net, envs, seconds)
            for kind in kinds:
                fps = collector_rate(kind, args.env, workers, envs, policy, primer,
                                     seconds if preset == "cpu" else 4 * seconds,
                                     workers * envs * (4 if preset == "cpu" else 1))
                add(f"{kind}-hrm-{preset}-{workers}-{envs}", fps,
                    min(plain * min(workers, CORES), model_limit))
        batch = 16 if quick else 256
        model_limit = model_only(net, batch, seconds)
        add(f"model-only-{preset}-{batch}", model_limit, model_limit)
        serial = TransformedEnv(
            SerialEnv(batch, functools.partial(gym_env, env_id)),
            Compose(FlattenObservation(-2, -1, in_keys=["observation"]), InitTracker(),
                    primer.clone()),
        )
        _, serial_policy = hrm_policy(preset, serial.action_spec_unbatched)
        steps = 3 if quick else (20 if preset == "cpu" else 2)
        add(f"hand-rolled-hrm-{preset}", rollout_rate(serial, serial_policy, steps),
            min(plain, model_limit))
        serial.close()

    if "ray" in kinds:
        ray.shutdown()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.plot:
        plot(rows, args.plot)
    return rows


def plot(rows: list[dict], path: str) -> None:
    """Frames/s of the KIND-POLICY-W-E rows against W, one panel per policy, one line per
    (collector, E): MultiSyncCollector solid, RayCollector dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = {}
    for row in rows:
        kind = row["name"].split("-")[0]
        if kind in ("multisync", "ray"):
            *policy, workers, envs = row["name"].split("-")[1:]
            lines.setdefault(("-".join(policy), kind, int(envs)), []).append(
                (int(workers), row["frames_per_second"]))
    policies = sorted({policy for policy, _, _ in lines})
    fig, axes = plt.subplots(1, len(policies), figsize=(5 * len(policies), 4), squeeze=False)
    plain = next((r["frames_per_second"] for r in rows if r["name"] == "plain-loop"), None)
    names = {"multisync": "MultiSyncCollector", "ray": "RayCollector"}
    # one colour per mazes-per-worker, so that a Ray line sits beside its MultiSync twin
    colors = {envs: f"C{i}" for i, envs in enumerate(sorted({e for _, _, e in lines}))}
    for ax, policy in zip(axes[0], policies):
        if policy == "random" and plain:
            ax.axhline(plain, color="k", linestyle=":", label="plain gymnasium loop (1 process)")
        for (name, kind, envs), points in sorted(lines.items()):
            if name == policy:
                points.sort()
                ax.plot(*zip(*points), marker="o", linestyle="-" if kind == "multisync" else "--",
                        color=colors[envs], label=f"{names[kind]}, {envs} mazes per worker")
        ax.set(xlabel="collector workers", ylabel="frames/s", title=f"{policy} policy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
