"""DQN training of the HRM agent (HRM-Agent, Dang & Rawlinson 2025) on the dynamic mazes.

The whole algorithm is in this file; the networks, the mazes (make_env), hindsight relabeling,
n-step returns and the evaluation helpers come from the package. Every flag defaults to the chosen
preset's value:

    python examples/dqn_hrm.py                       # cpu preset: HRM, FourRoomsDoors, Carry Z
    python examples/dqn_hrm.py --model mlp           # the same pipeline with an MLP Q-network
    python examples/dqn_hrm.py --preset paper --device cuda --env DynamicMaze --carry reset
    python examples/dqn_hrm.py --collector ray       # the workers as Ray actors (pip install -e .[ray])

Pipeline: make_env workers -> MultiSyncCollector or RayCollector (epsilon-greedy QValueActor)
-> [hindsight relabeling] -> [n-step returns] -> LazyTensorStorage replay -> DQN updates (HRM deep
supervision: one optimizer step per segment, targets from the target network once per minibatch;
or plain DQNLoss; TD targets, with --advantage-learning minus the target network's action gap)
-> SoftUpdate of the target network after every optimizer step -> fresh weights to the workers.
Ctrl-C or SIGTERM saves and exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch
from tensordict.nn import TensorDictSequential
from torchrl.collectors import Collector, MultiSyncCollector
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.modules import EGreedyModule, QValueActor
from torchrl.objectives import DQNLoss, SoftUpdate
from torchrl.record.loggers import CSVLogger
from torchrl.weight_update import MultiProcessWeightSyncScheme
from tqdm import tqdm

from hrm_torchrl import MAZES, HindsightRelabel, HRMConfig, HRMQValueNet, MultiStep, make_env
from hrm_torchrl.action_gap import AdvantageLearningEstimator
from hrm_torchrl.baselines import LSTMQValueNet, MLPQValueNet
from hrm_torchrl.evaluation import first_episodes, learning_diagnostics, oracle_mean_episode_length, summarize

MODELS = ("hrm", "mlp", "lstm")
COLLECTORS = ("multisync", "ray")
# Training presets. "paper" is appendix A of the paper, with epsilon annealed per optimizer step
# as the authors count it. "cpu" is meant to learn FourRoomsDoors on a 2-core CPU within 20
# minutes (benchmarks/README.md has what was measured).
PRESETS = {
    "paper": dict(
        model="hrm", hrm_config="paper", hindsight=0, frames=3_000_000, minutes=0.0, threads=0,
        workers=5, envs_per_worker=16, frames_per_batch=256, batch_size=256,
        buffer_size=1_048_576, updates_per_batch=1, warmup_frames=2_560, lr=1e-4,
        embedding_lr=1e-2, embedding_weight_decay=0.1, betas=(0.9, 0.95), gamma=0.95, n_steps=1,
        advantage_learning=0.0, double_dqn=False, deep_supervision=True, eps_init=1.0,
        eps_end=0.15, eps_frames=None, eps_updates=300_000, target_eps=0.999, grad_clip=1.0,
        eval_every=50_000, eval_episodes=200, compile=False,
    ),
    "cpu": dict(
        model="hrm", hrm_config="cpu", hindsight=1, frames=1_000_000, minutes=20.0, threads=0,
        workers=2, envs_per_worker=32, frames_per_batch=1024, batch_size=128,
        buffer_size=1_000_000, updates_per_batch=16, warmup_frames=2_048, lr=1e-3,
        embedding_lr=1e-2, embedding_weight_decay=0.1, betas=(0.9, 0.95), gamma=0.95, n_steps=3,
        advantage_learning=0.0, double_dqn=False, deep_supervision=False, eps_init=1.0,
        eps_end=0.1, eps_frames=100_000, eps_updates=None, target_eps=0.99, grad_clip=1.0,
        eval_every=50_000, eval_episodes=200, compile=True,
    ),
}
EVAL_SEED = 10_000_000  # evaluation mazes never share seeds with training mazes


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--env", default="FourRoomsDoors", help=f"one of {list(MAZES)}")
    p.add_argument("--preset", default="cpu", help=f"one of {sorted(PRESETS)}")
    p.add_argument("--model", help=f"Q-network, one of {list(MODELS)} (default: the preset's)")
    p.add_argument("--carry", help="carry (Carry Z) or reset (Reset Z), for hrm and lstm "
                                   "(default: carry)")
    p.add_argument("--carry-state", default="token", help="hrm: token or full")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (the policy's device)")
    p.add_argument("--seed", type=int, default=0,
                   help="initial weights, replay sampling and (multisync) the workers' mazes and "
                        "exploration")
    p.add_argument("--run-dir", default=None,
                   help="default: runs/<env>-<preset>-<model>-<carry>-s<seed>")
    p.add_argument("--resume", action="store_true", help="continue from <run-dir>/checkpoints/last.pt")
    p.add_argument("--deep-supervision", action=argparse.BooleanOptionalAction, default=None,
                   help="hrm: one optimizer step per segment (HRM's deep supervision) instead of "
                        "plain DQNLoss updates")
    p.add_argument("--segments", type=int,
                   help="hrm: segments per environment step (default: the HRM preset's)")
    p.add_argument("--hrm", action="append", default=[], metavar="FIELD=VALUE",
                   help="hrm: override a field of the preset's HRMConfig, e.g. --hrm patch=1 "
                        "--hrm positions=rope (repeatable)")
    # Preset values; None keeps the preset's.
    p.add_argument("--hindsight", type=int,
                   help="relabeled copies per collected frame (hindsight goals; 0: off)")
    p.add_argument("--threads", type=int, help="torch threads of the learner process (0: torch's default)")
    p.add_argument("--frames", type=int, help="stop after this many collected frames")
    p.add_argument("--minutes", type=float, help="stop after this much wall time (0: no limit)")
    p.add_argument("--workers", type=int, help="collector worker processes")
    p.add_argument("--envs-per-worker", type=int, help="mazes each worker steps as one batch")
    p.add_argument("--frames-per-batch", type=int, help="frames per collector round")
    p.add_argument("--batch-size", type=int, help="replay minibatch size")
    p.add_argument("--buffer-size", type=int, help="replay capacity in frames")
    p.add_argument("--updates-per-batch", type=int, help="minibatches trained per collector round")
    p.add_argument("--warmup-frames", type=int, help="frames collected before the first update")
    p.add_argument("--lr", type=float, help="learning rate of the model parameters")
    p.add_argument("--gamma", type=float, help="discount")
    p.add_argument("--n-steps", type=int, help="n-step returns when > 1")
    p.add_argument("--advantage-learning", type=float, metavar="ALPHA",
                   help="subtract ALPHA times the target network's action gap from the TD target "
                        "(hrm_torchrl.action_gap; 0: plain TD)")
    p.add_argument("--double-dqn", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--eps-end", type=float, help="final epsilon")
    p.add_argument("--eps-frames", type=int, help="anneal epsilon over this many collected frames")
    p.add_argument("--eps-updates", type=int,
                   help="anneal epsilon over this many optimizer steps instead (the paper's count)")
    p.add_argument("--target-eps", type=float, help="SoftUpdate eps (target keeps this share)")
    p.add_argument("--eval-every", type=int, help="frames between greedy evaluations")
    p.add_argument("--eval-episodes", type=int, help="episodes per evaluation")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the learner's network (the collector's workers stay eager)")
    p.add_argument("--collector", default="multisync",
                   help=f"one of {list(COLLECTORS)}: worker processes on this machine, or Ray actors")
    p.add_argument("--ray-address", help="--collector ray: the Ray cluster to join, e.g. auto or "
                   "HEAD_IP:6379 (default: start a local one)")
    return p.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> dict:
    """The preset's values, overridden by the flags given."""
    if args.preset not in PRESETS:
        raise SystemExit(f"error: unknown preset {args.preset!r}; choose one of {sorted(PRESETS)}")
    if args.env not in MAZES:
        raise SystemExit(f"error: unknown env {args.env!r}; choose one of {list(MAZES)}")
    cfg = dict(PRESETS[args.preset])
    for key in cfg:
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    if cfg["model"] not in MODELS:
        raise SystemExit(f"error: unknown --model {cfg['model']!r}; choose one of {list(MODELS)}")
    if cfg["model"] == "mlp" and args.carry is not None:
        raise SystemExit("error: --carry applies to hrm and lstm; the mlp carries no state")
    carry = "none" if cfg["model"] == "mlp" else (args.carry or "carry")
    if carry not in ("carry", "reset", "none"):
        raise SystemExit(f"error: unknown --carry {carry!r}; choose carry or reset")
    if args.carry_state not in ("token", "full"):
        raise SystemExit(f"error: unknown --carry-state {args.carry_state!r}; choose token or full")
    if args.collector not in COLLECTORS:
        raise SystemExit(f"error: unknown --collector {args.collector!r}; choose one of {list(COLLECTORS)}")
    if args.ray_address is not None and args.collector != "ray":
        raise SystemExit("error: --ray-address applies to --collector ray only")
    if args.collector == "ray" and importlib.util.find_spec("ray") is None:
        raise SystemExit("error: --collector ray needs Ray, an optional extra: pip install -e '.[ray]'")
    if args.device not in ("auto", "cpu", "cuda"):
        raise SystemExit(f"error: unknown --device {args.device!r}; choose auto, cpu or cuda")
    if cfg["model"] != "hrm" and (args.segments is not None or args.deep_supervision or args.hrm):
        raise SystemExit("error: --segments, --hrm and --deep-supervision apply to --model hrm only")
    if args.eps_frames is not None and args.eps_updates is not None:
        raise SystemExit("error: give --eps-frames or --eps-updates, not both")
    if args.eps_frames is not None:
        cfg["eps_updates"] = None
    if args.eps_updates is not None:
        cfg["eps_frames"] = None
    if cfg["model"] != "hrm":
        cfg["deep_supervision"] = False
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no CUDA device")
    try:
        hrm_overrides = HRMConfig.parse_overrides(args.hrm)
    except ValueError as error:
        raise SystemExit(f"error: --hrm: {error}") from None
    if "segments" in hrm_overrides:
        raise SystemExit("error: give the segments with --segments, not --hrm segments=...")
    cfg.update(env=args.env, preset=args.preset, carry=carry, carry_state=args.carry_state,
               device=device, seed=args.seed, segments=args.segments, hrm_overrides=hrm_overrides,
               collector=args.collector, ray_address=args.ray_address)
    for key in ("frames", "workers", "envs_per_worker", "frames_per_batch", "batch_size",
                "buffer_size", "updates_per_batch", "eval_episodes", "eval_every", "n_steps",
                "segments", "eps_frames", "eps_updates"):
        if cfg[key] is not None and cfg[key] < 1:  # None: the model preset's / the other unit
            raise SystemExit(f"error: --{key.replace('_', '-')} must be at least 1, got {cfg[key]}")
    for key, off in (("hindsight", "off"), ("warmup_frames", "none"), ("minutes", "no limit"),
                     ("threads", "torch's default")):
        if cfg[key] < 0:
            raise SystemExit(f"error: --{key.replace('_', '-')} must be 0 ({off}) or more, "
                             f"got {cfg[key]}")
    if cfg["warmup_frames"] > cfg["buffer_size"]:  # the replay would never hold enough to start
        raise SystemExit(f"error: --warmup-frames ({cfg['warmup_frames']}) exceeds the replay's "
                         f"--buffer-size ({cfg['buffer_size']}): training would never start")
    if cfg["lr"] <= 0:  # AdamW checks its default lr, not a group's
        raise SystemExit(f"error: --lr must be positive, got {cfg['lr']}")
    if not 0 < cfg["gamma"] <= 1:
        raise SystemExit(f"error: --gamma must lie in (0, 1], got {cfg['gamma']}")
    if not 0 <= cfg["advantage_learning"] < 1:
        raise SystemExit(f"error: --advantage-learning must lie in [0, 1), got "
                         f"{cfg['advantage_learning']}")
    if not 0 <= cfg["target_eps"] < 1:
        raise SystemExit(f"error: --target-eps must lie in [0, 1), got {cfg['target_eps']}")
    if not 0 <= cfg["eps_end"] <= cfg["eps_init"]:
        raise SystemExit(f"error: --eps-end must lie in [0, {cfg['eps_init']}], got {cfg['eps_end']}")
    if cfg["model"] == "hrm":
        try:
            hrm_config(cfg)
        except ValueError as error:
            raise SystemExit(f"error: --hrm: {error}") from None
    return cfg


def hrm_config(cfg: dict) -> HRMConfig:
    """The preset's HRMConfig with --segments and --hrm applied."""
    overrides = dict(cfg["hrm_overrides"])
    if cfg["segments"]:
        overrides["segments"] = cfg["segments"]
    return HRMConfig.preset(cfg["hrm_config"], **overrides)


def make_network(cfg: dict):
    """The Q-network and the description a checkpoint keeps of it."""
    if cfg["model"] == "hrm":
        config = hrm_config(cfg)
        net = HRMQValueNet(config, n_actions=4, carry=cfg["carry"], carry_state=cfg["carry_state"])
        return net, dataclasses.asdict(config)
    if cfg["model"] == "mlp":
        return MLPQValueNet(4), {"model": "mlp"}
    return LSTMQValueNet(4, carry=cfg["carry"]), {"model": "lstm"}


def carried_state(net):
    """The env primer that carries a recurrent network's state, and that state's keys
    (``None, []`` for the MLP, which carries nothing)."""
    if isinstance(net, MLPQValueNet):
        return None, []
    primer = net.make_tensordict_primer()
    return primer, list(primer.primers.keys())


def compile_network(net) -> None:
    """torch.compile the network's tensor modules in place (its parameters and state_dict keys
    stay the same; the TensorDict plumbing around them stays eager)."""
    if isinstance(net, HRMQValueNet):
        parts = [net.hrm.H_level, net.hrm.L_level]
    elif isinstance(net, MLPQValueNet):
        parts = [net.net]
    else:
        parts = [net.encoder, net.head]
    for part in parts:
        part.compile()


def make_collector(cfg: dict, env_factories: list, policy, device: torch.device, seed: int):
    """The collector of the training loop, yielding [workers, mazes, time] frames each round,
    and the weight-sync schemes to shut down after it.

    multisync: TorchRL's MultiSyncCollector, one process per worker on this machine.
    ray: TorchRL's RayCollector, one Ray actor per worker running a Collector of its mazes, on
    the cluster at --ray-address (every node needs this package installed) or on a local one.
    Both take fresh weights when the loop calls update_policy_weights_() after its updates.
    Seeding: MultiSyncCollector.set_seed(seed) gives each worker's mazes and its torch and numpy
    generators (its exploration) their own seed of one chain, so a run's frames repeat with its
    seed. Ray runs don't repeat: RayCollector.set_seed would seed only the envs, not the actors'
    exploration, and may come after their first round, so it is not called and the mazes draw
    fresh seeds.
    """
    if cfg["collector"] == "multisync":
        # Ours, so that it is shut down while the interpreter still runs: left to its __del__ at
        # exit, a scheme that never sent weights hangs the process (torchrl 0.14.1).
        weight_sync = MultiProcessWeightSyncScheme()
        collector = MultiSyncCollector(
            env_factories, policy,
            frames_per_batch=cfg["frames_per_batch"],
            total_frames=-1,
            env_device="cpu", policy_device=device, storing_device="cpu",
            weight_sync_schemes={"policy": weight_sync},
            # Collection and updates take turns, so the learner may use every core; left alone
            # the collector would cut this process to (threads - workers), i.e. 1 on 2 cores.
            num_threads=torch.get_num_threads(),
        )
        collector.set_seed(seed)
        return collector, [weight_sync]
    from torchrl.collectors.distributed import RayCollector

    workers = len(env_factories)
    # A Ray actor asks for one CPU (and a share of the GPU when the policy runs on CUDA); a local
    # cluster gets at least one logical CPU per worker, so that it oversubscribes the cores as
    # MultiSyncCollector does instead of waiting for free ones.
    ray_init = {"address": cfg["ray_address"], "include_dashboard": False,
                "log_to_driver": False}  # the actors' logs stay in Ray's session folder
    if cfg["ray_address"] is None:
        ray_init["num_cpus"] = max(os.cpu_count() or 1, workers)
    remote = {"num_cpus": 1, "num_gpus": 1 / workers if device.type == "cuda" else 0}
    # MultiSyncCollector rounds a round up to whole steps of every maze; so does this.
    per_round = workers * cfg["envs_per_worker"]
    collector = RayCollector(
        env_factories, policy,
        collector_class=Collector, num_collectors=workers, sync=True,
        frames_per_batch=per_round * math.ceil(cfg["frames_per_batch"] / per_round),
        total_frames=2**62,  # the loop decides when to stop
        env_device="cpu", policy_device=device, storing_device="cpu",
        ray_init_config=ray_init, remote_configs=remote,
    )
    collector.update_policy_weights_(policy)  # connects the actors' weight receivers
    return collector, []  # RayCollector.shutdown() shuts its scheme down


def make_learner(net, action_spec, cfg: dict):
    """The greedy actor, its DQNLoss (the target network inside), SoftUpdate and the optimizer."""
    actor = QValueActor(net, spec=action_spec)
    loss_module = DQNLoss(actor, loss_function="l2", delay_value=True,
                          double_dqn=cfg["double_dqn"])
    if cfg["advantage_learning"] > 0:
        loss_module.make_value_estimator(AdvantageLearningEstimator(
            gamma=cfg["gamma"], value_network=actor, alpha=cfg["advantage_learning"]))
    else:
        loss_module.make_value_estimator(gamma=cfg["gamma"])
    target_updater = SoftUpdate(loss_module, eps=cfg["target_eps"])
    return actor, loss_module, target_updater, make_optimizer(net, cfg)


def replay_keys(state_keys: list, n_step: bool) -> list:
    """What a replayed frame needs: the loss's keys and the carried state, now and next."""
    keys = ["observation", "is_init", "action", *state_keys,
            *[("next", key) for key in ("observation", "is_init", "reward", "done",
                                        "terminated", *state_keys)]]
    if n_step:
        keys.append("steps_to_next_obs")  # the value estimator's gamma ** steps
    return keys


def make_optimizer(net, cfg: dict) -> torch.optim.Optimizer:
    if cfg["model"] == "hrm":  # the paper's two groups: the readout embedding has its own lr
        groups = [
            {"params": net.hrm.model_parameters(), "lr": cfg["lr"], "weight_decay": 0.0},
            {"params": net.hrm.embedding_parameters(), "lr": cfg["embedding_lr"],
             "weight_decay": cfg["embedding_weight_decay"]},
        ]
    else:
        groups = [{"params": net.parameters(), "lr": cfg["lr"], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, betas=tuple(cfg["betas"]))


def gradient_step(loss, net, optimizer, target_updater, grad_clip: float) -> None:
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    optimizer.step()
    target_updater.step()  # after every optimizer step, as the authors move their target


def minibatch_update(batch, net, loss_module, deep_supervision: bool, optimizer_step) -> float:
    """Trains on one replayed minibatch; returns its (last) loss. ``optimizer_step(loss)`` takes
    one gradient step; it runs once, or once per segment with deep supervision."""
    if not deep_supervision:
        loss = loss_module(batch)["loss"]
        optimizer_step(loss)
        return loss.item()
    # Targets once per minibatch from the target network (full recurrence on the next
    # observation from its carried state)...
    with torch.no_grad():
        target = loss_module.value_estimator.value_estimate(
            batch.clone(False), target_params=loss_module.target_value_network_params,
        ).squeeze(-1)
    action = batch["action"].float()
    # ...then one optimizer step per segment, each from the last one's detached state (HRM deep
    # supervision).
    for q in net.supervision_segments(batch):
        loss = (q * action).sum(-1).sub(target).pow(2).mean()
        optimizer_step(loss)
    return loss.item()


class StopRequest:
    """First Ctrl-C (or SIGTERM, as `timeout` and schedulers send): finish the current round,
    save, exit 0. Second: stop at once."""

    def __init__(self):
        self.requested = False

    def __call__(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write(f"{signal.Signals(signum).name}: saving a checkpoint and stopping "
                   "(again to stop at once)")


def save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: a crash mid-write never leaves a broken checkpoint


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = resolve_config(args)
    run_dir = Path(args.run_dir or f"runs/{cfg['env']}-{cfg['preset']}-{cfg['model']}-"
                                   f"{cfg['carry']}-s{cfg['seed']}")
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg["seed"])
    if cfg["threads"] > 0:
        torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])

    # -- model, policy, loss, optimizer --------------------------------------------------------
    net, model_config = make_network(cfg)
    net = net.to(device)
    primer, state_keys = carried_state(net)
    eval_env = make_env(cfg["env"], num_envs=cfg["eval_episodes"], device=device, primer=primer)
    action_spec = eval_env.action_spec_unbatched
    actor, loss_module, target_updater, optimizer = make_learner(net, action_spec, cfg)
    eps_per_update = cfg["eps_updates"] is not None
    egreedy = EGreedyModule(action_spec, eps_init=cfg["eps_init"], eps_end=cfg["eps_end"],
                            annealing_num_steps=cfg["eps_updates"] or cfg["eps_frames"])
    policy = TensorDictSequential(actor, egreedy)

    # -- resume --------------------------------------------------------------------------------
    frames = updates = optimizer_steps = 0
    wall_before, best_success = 0.0, -1.0
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    if args.resume:
        if not last_path.exists():
            raise SystemExit(f"error: --resume but {last_path} does not exist")
        state = torch.load(last_path, map_location=device, weights_only=False)
        for key in ("preset", "env", "model", "carry", "carry_state"):
            saved = state["config"].get(key, "hrm" if key == "model" else None)
            if saved != cfg[key]:
                raise SystemExit(f"error: {last_path} was trained with {key}={saved!r}, "
                                 f"this run asks for {key}={cfg[key]!r}")
        if state["model_config"] != model_config:
            raise SystemExit(f"error: {last_path} holds another model configuration")
        loss_module.load_state_dict(state["loss_module"])
        optimizer.load_state_dict(state["optimizer"])
        egreedy.load_state_dict(state["egreedy"])
        frames, updates = state["frames"], state["updates"]
        optimizer_steps = state.get("optimizer_steps", updates)
        wall_before, best_success = state["wall_seconds"], state["best_success"]
        tqdm.write(f"resumed from {last_path} at {frames} frames")
    (run_dir / "config.json").write_text(json.dumps({**cfg, "model_config": model_config}, indent=1))

    def checkpoint_state() -> dict:
        return {
            "config": cfg, "model_config": model_config,
            "model": net.state_dict(),  # what hrm_torchrl.analyze loads
            "loss_module": loss_module.state_dict(), "optimizer": optimizer.state_dict(),
            "egreedy": egreedy.state_dict(), "frames": frames, "updates": updates,
            "optimizer_steps": optimizer_steps,
            "wall_seconds": wall_before + time.time() - start, "best_success": best_success,
        }

    # -- collector, relabeling, n-step returns and replay ----------------------------------------
    env_factories = [
        functools.partial(make_env, cfg["env"], num_envs=cfg["envs_per_worker"], primer=primer)
        for _ in range(cfg["workers"])
    ]  # seeded by make_collector (multisync)
    stop = StopRequest()
    # Spawned workers and a local Ray cluster's processes inherit "ignore Ctrl-C": the first
    # Ctrl-C is ours to handle (save, then shut them down).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A resumed run goes on with new mazes and exploration instead of repeating its first rounds'.
    collector, weight_syncs = make_collector(cfg, env_factories, policy, device, cfg["seed"] + frames)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    if cfg["compile"]:  # now that the workers hold their own (eager) copy of the policy
        compile_network(net)
    hindsight = HindsightRelabel(copies=cfg["hindsight"])  # copies=0 only adds the mask
    n_step = MultiStep(gamma=cfg["gamma"], n_steps=cfg["n_steps"]) if cfg["n_steps"] > 1 else None
    stored_keys = replay_keys(state_keys, n_step is not None)
    # On a GPU the replay lives there too: a carried frame is ~1.3 KB, a million fit easily, and
    # sampling then copies nothing to the device.
    buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(cfg["buffer_size"], device=device),
                                    batch_size=cfg["batch_size"])
    logger = CSVLogger(exp_name="logs", log_dir=str(run_dir))
    oracle_length = oracle_mean_episode_length(cfg["env"], cfg["eval_episodes"], EVAL_SEED)

    def evaluate() -> dict:
        scores = first_episodes(actor, eval_env, EVAL_SEED)
        result = {**summarize(scores), "oracle_mean_episode_length": oracle_length,
                  **learning_diagnostics(scores, buffer)}
        for key, value in result.items():
            logger.log_scalar(f"eval/{key}", value, step=frames)
        with open(run_dir / "metrics.csv", "a") as f:
            if f.tell() == 0:
                f.write("frames,updates,optimizer_steps,wall_seconds,epsilon,"
                        + ",".join(result) + "\n")
            row = [frames, updates, optimizer_steps, round(wall_before + time.time() - start, 1),
                   float(egreedy.eps)]
            f.write(",".join(str(v) for v in row + list(result.values())) + "\n")
        return result

    def optimizer_step(loss: torch.Tensor) -> None:
        nonlocal optimizer_steps
        gradient_step(loss, net, optimizer, target_updater, cfg["grad_clip"])
        optimizer_steps += 1
        if eps_per_update:
            egreedy.step(1)

    # -- training loop ---------------------------------------------------------------------------
    start = time.time()
    budget = cfg["minutes"] * 60 if cfg["minutes"] > 0 else math.inf
    if math.isfinite(budget):  # the bar counts the budget that runs out first
        bar = tqdm(total=round(budget), initial=0, unit="s", dynamic_ncols=True)
    else:
        bar = tqdm(total=cfg["frames"], initial=frames, unit="frame", dynamic_ncols=True)
    last_eval, loss_value, eval_result, exit_code = frames, float("nan"), {}, 0
    frames_at_start = frames
    collect_seconds = train_seconds = 0.0  # time waiting for data / updating
    tick = time.time()
    try:
        for data in collector if frames < cfg["frames"] else ():  # a resume may be done already
            got_data = time.time()
            collect_seconds += got_data - tick
            data = data.reshape(-1, data.shape[-1])  # [workers * mazes, time]
            frames += data.numel()
            if not eps_per_update:
                egreedy.step(data.numel())
            data = hindsight(data)  # + relabeled copies, and ("collector", "mask")
            if n_step is not None:
                data = n_step(data)
            data = data[data["collector", "mask"]]
            buffer.extend(data.select(*stored_keys))
            if len(buffer) >= cfg["warmup_frames"]:
                for _ in range(cfg["updates_per_batch"]):
                    batch = buffer.sample().to(device)
                    loss_value = minibatch_update(batch, net, loss_module,
                                                  cfg["deep_supervision"], optimizer_step)
                    if not math.isfinite(loss_value):
                        tqdm.write(f"error: the loss became {loss_value} at {frames} frames; "
                                   f"stopping. {last_path} holds the last good state.")
                        exit_code = 1
                        break
                    updates += 1
                if exit_code:
                    break
                collector.update_policy_weights_()
            train_seconds += time.time() - got_data
            bar.update(round(time.time() - start) - bar.n if math.isfinite(budget)
                       else frames - bar.n)
            bar.set_postfix(frames=frames, mb=updates,
                            fps=f"{(frames - frames_at_start) / (time.time() - start):.0f}",
                            eps=f"{float(egreedy.eps):.2f}", loss=f"{loss_value:.4f}",
                            q_std=f"{eval_result.get('q_std', float('nan')):.3f}",
                            success=f"{eval_result.get('success_rate', float('nan')):.2f}",
                            wait=f"{collect_seconds:.0f}s", train=f"{train_seconds:.0f}s")
            logger.log_scalar("train/loss", loss_value, step=frames)
            if frames - last_eval >= cfg["eval_every"]:
                last_eval = frames
                eval_result = evaluate()
                if eval_result["success_rate"] > best_success:
                    best_success = eval_result["success_rate"]
                    save_checkpoint(best_path, checkpoint_state())
                save_checkpoint(last_path, checkpoint_state())
            out_of_time = time.time() - start >= budget
            if stop.requested or frames >= cfg["frames"] or out_of_time:
                break
            tick = time.time()
    finally:
        bar.close()
        collector.shutdown()  # a RayCollector also stops the local Ray cluster it started
        for weight_sync in weight_syncs:
            weight_sync.shutdown()

    if exit_code:
        eval_env.close()
        return exit_code
    save_checkpoint(last_path, checkpoint_state())
    if stop.requested:
        eval_env.close()
        tqdm.write(f"stopped at {frames} frames; resume with --resume --run-dir {run_dir}")
        return 0
    wall = time.time() - start
    if last_eval != frames or not eval_result:  # not evaluated at these frames yet
        eval_result = evaluate()
    eval_env.close()
    if eval_result["success_rate"] > best_success:
        best_success = eval_result["success_rate"]
        save_checkpoint(best_path, checkpoint_state())
    summary = {
        **{k: eval_result[k] for k in ("success_rate", "mean_episode_length",
                                       "mean_success_length", "oracle_mean_episode_length",
                                       "mean_return", "q_std", "action_entropy",
                                       "replay_reward_share")},
        "frames": frames, "updates": updates, "optimizer_steps": optimizer_steps,
        "wall_seconds": wall_before + wall, "frames_per_second": (frames - frames_at_start) / wall,
        "preset": cfg["preset"], "env": cfg["env"], "model": cfg["model"], "carry": cfg["carry"],
        "carry_state": cfg["carry_state"], "hindsight": cfg["hindsight"], "seed": cfg["seed"],
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    tqdm.write(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
