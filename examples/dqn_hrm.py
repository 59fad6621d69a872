"""DQN training of the HRM agent (HRM-Agent, Dang & Rawlinson 2025) on the dynamic mazes.

The whole algorithm is in this file; the model (HRMQValueNet), the mazes (make_env) and the
evaluation helpers come from the package. Every flag defaults to the chosen preset's value:

    python examples/dqn_hrm.py                       # cpu preset, FourRoomsDoors, Carry Z
    python examples/dqn_hrm.py --preset paper --device cuda --env DynamicMaze --carry reset

Pipeline: make_env workers -> MultiSyncCollector (epsilon-greedy QValueActor over HRMQValueNet)
-> [MultiStep] -> LazyTensorStorage replay -> DQN updates (HRM deep supervision: one optimizer
step per segment, targets from the target network once per minibatch; or plain DQNLoss) ->
SoftUpdate of the target network -> fresh weights to the workers. Ctrl-C or SIGTERM saves
and exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import signal
import sys
import time
from pathlib import Path

import torch
from tensordict.nn import TensorDictSequential
from torchrl.collectors import MultiSyncCollector
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.data.postprocs import MultiStep
from torchrl.modules import EGreedyModule, QValueActor
from torchrl.objectives import DQNLoss, SoftUpdate
from torchrl.record.loggers import CSVLogger
from tqdm import tqdm

from hrm_torchrl import MAZES, HRMConfig, HRMQValueNet, make_env
from hrm_torchrl.evaluation import first_episodes, oracle_mean_episode_length, summarize

# Training presets. "paper" is appendix A of the paper. "cpu" is meant to learn FourRoomsDoors on a
# 2-core CPU within 20 minutes; it does not yet (benchmarks/README.md has what was measured).
PRESETS = {
    "paper": dict(
        model="paper", frames=3_000_000, minutes=0.0, threads=0, workers=5, envs_per_worker=16,
        frames_per_batch=256, batch_size=256, buffer_size=1_048_576, updates_per_batch=1,
        warmup_frames=2_560, lr=1e-4, embedding_lr=1e-2, embedding_weight_decay=0.1,
        betas=(0.9, 0.95), gamma=0.95, n_steps=1, double_dqn=False, deep_supervision=True,
        eps_init=1.0, eps_end=0.15, eps_frames=300_000, target_eps=0.999, grad_clip=1.0,
        eval_every=50_000, eval_episodes=200,
    ),
    "cpu": dict(
        model="cpu", frames=20_000_000, minutes=20.0, threads=0, workers=2, envs_per_worker=64,
        frames_per_batch=1024, batch_size=64, buffer_size=1_000_000, updates_per_batch=8,
        warmup_frames=2_560, lr=1e-3, embedding_lr=1e-2, embedding_weight_decay=0.1,
        betas=(0.9, 0.95), gamma=0.95, n_steps=3, double_dqn=False, deep_supervision=True,
        eps_init=1.0, eps_end=0.1, eps_frames=300_000, target_eps=0.99, grad_clip=1.0,
        eval_every=100_000, eval_episodes=200,
    ),
}
EVAL_SEED = 10_000_000  # evaluation mazes never share seeds with training mazes


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--env", default="FourRoomsDoors", help=f"one of {list(MAZES)}")
    p.add_argument("--preset", default="cpu", help=f"one of {sorted(PRESETS)}")
    p.add_argument("--carry", default="carry", help="carry (Carry Z) or reset (Reset Z)")
    p.add_argument("--carry-state", default="token", help="token or full")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (the policy's device)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", default=None, help="default: runs/<env>-<preset>-<carry>-s<seed>")
    p.add_argument("--resume", action="store_true", help="continue from <run-dir>/checkpoints/last.pt")
    p.add_argument("--plain-dqn", action="store_true",
                   help="plain DQNLoss updates instead of HRM deep supervision")
    p.add_argument("--segments", type=int,
                   help="HRM segments per environment step (default: the model preset's)")
    # Preset values; None keeps the preset's.
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
    p.add_argument("--n-steps", type=int, help="n-step returns (TorchRL MultiStep) when > 1")
    p.add_argument("--double-dqn", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--eps-frames", type=int, help="frames over which epsilon anneals")
    p.add_argument("--target-eps", type=float, help="SoftUpdate eps (target keeps this share)")
    p.add_argument("--eval-every", type=int, help="frames between greedy evaluations")
    p.add_argument("--eval-episodes", type=int, help="episodes per evaluation")
    return p.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> dict:
    """The preset's values, overridden by the flags given."""
    if args.preset not in PRESETS:
        raise SystemExit(f"error: unknown preset {args.preset!r}; choose one of {sorted(PRESETS)}")
    if args.env not in MAZES:
        raise SystemExit(f"error: unknown env {args.env!r}; choose one of {list(MAZES)}")
    if args.carry not in ("carry", "reset"):
        raise SystemExit(f"error: unknown --carry {args.carry!r}; choose carry or reset")
    if args.carry_state not in ("token", "full"):
        raise SystemExit(f"error: unknown --carry-state {args.carry_state!r}; choose token or full")
    if args.device not in ("auto", "cpu", "cuda"):
        raise SystemExit(f"error: unknown --device {args.device!r}; choose auto, cpu or cuda")
    cfg = dict(PRESETS[args.preset])
    for key in cfg:
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    if args.plain_dqn:
        cfg["deep_supervision"] = False
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no CUDA device")
    cfg.update(env=args.env, preset=args.preset, carry=args.carry, carry_state=args.carry_state,
               device=device, seed=args.seed, segments=args.segments)
    for key in ("frames", "workers", "envs_per_worker", "frames_per_batch", "batch_size",
                "buffer_size", "updates_per_batch", "eval_episodes", "n_steps", "segments"):
        if cfg[key] is not None and cfg[key] < 1:  # segments: None keeps the model preset's
            raise SystemExit(f"error: --{key.replace('_', '-')} must be at least 1, got {cfg[key]}")
    if not 0 < cfg["gamma"] <= 1 or not 0 <= cfg["target_eps"] < 1:
        raise SystemExit("error: --gamma must lie in (0, 1] and --target-eps in [0, 1)")
    return cfg


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
    run_dir = Path(args.run_dir or f"runs/{cfg['env']}-{cfg['preset']}-{cfg['carry']}-s{cfg['seed']}")
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg["seed"])
    if cfg["threads"] > 0:
        torch.set_num_threads(cfg["threads"])
    device = torch.device(cfg["device"])

    # -- model, policy, loss, optimizer --------------------------------------------------------
    model_config = HRMConfig.preset(cfg["model"],
                                    **({"segments": cfg["segments"]} if cfg["segments"] else {}))
    net = HRMQValueNet(model_config, n_actions=4, carry=cfg["carry"],
                       carry_state=cfg["carry_state"]).to(device)
    primer = net.make_tensordict_primer()
    eval_env = make_env(cfg["env"], num_envs=cfg["eval_episodes"], device=device, primer=primer)
    action_spec = eval_env.action_spec_unbatched
    actor = QValueActor(net, spec=action_spec)
    egreedy = EGreedyModule(action_spec, eps_init=cfg["eps_init"], eps_end=cfg["eps_end"],
                            annealing_num_steps=cfg["eps_frames"])
    policy = TensorDictSequential(actor, egreedy)
    loss_module = DQNLoss(actor, loss_function="l2", delay_value=True,
                          double_dqn=cfg["double_dqn"])
    loss_module.make_value_estimator(gamma=cfg["gamma"])
    target_updater = SoftUpdate(loss_module, eps=cfg["target_eps"])
    optimizer = torch.optim.AdamW(
        [
            {"params": net.hrm.model_parameters(), "lr": cfg["lr"], "weight_decay": 0.0},
            {"params": net.hrm.embedding_parameters(), "lr": cfg["embedding_lr"],
             "weight_decay": cfg["embedding_weight_decay"]},
        ],
        betas=tuple(cfg["betas"]),
    )

    # -- resume --------------------------------------------------------------------------------
    frames, updates, wall_before, best_success = 0, 0, 0.0, -1.0
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    if args.resume:
        if not last_path.exists():
            raise SystemExit(f"error: --resume but {last_path} does not exist")
        state = torch.load(last_path, map_location=device, weights_only=False)
        for key in ("preset", "env", "carry", "carry_state"):
            if state["config"][key] != cfg[key]:
                raise SystemExit(
                    f"error: {last_path} was trained with {key}={state['config'][key]!r}, "
                    f"this run asks for {key}={cfg[key]!r}"
                )
        if state["model_config"] != dataclasses.asdict(model_config):
            raise SystemExit(f"error: {last_path} holds another model configuration")
        loss_module.load_state_dict(state["loss_module"])
        optimizer.load_state_dict(state["optimizer"])
        egreedy.load_state_dict(state["egreedy"])
        frames, updates = state["frames"], state["updates"]
        wall_before, best_success = state["wall_seconds"], state["best_success"]
        tqdm.write(f"resumed from {last_path} at {frames} frames")
    (run_dir / "config.json").write_text(json.dumps(
        {**cfg, "model_config": dataclasses.asdict(model_config)}, indent=1))

    def checkpoint_state() -> dict:
        return {
            "config": cfg, "model_config": dataclasses.asdict(model_config),
            "model": net.state_dict(),  # what hrm_torchrl.analyze loads
            "loss_module": loss_module.state_dict(), "optimizer": optimizer.state_dict(),
            "egreedy": egreedy.state_dict(), "frames": frames, "updates": updates,
            "wall_seconds": wall_before + time.time() - start, "best_success": best_success,
        }

    # -- collector and replay --------------------------------------------------------------------
    env_factories = [
        functools.partial(make_env, cfg["env"], num_envs=cfg["envs_per_worker"],
                          seed=cfg["seed"] * 1000 + w * cfg["envs_per_worker"], primer=primer)
        for w in range(cfg["workers"])
    ]
    stop = StopRequest()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # spawned workers inherit "ignore Ctrl-C"
    collector = MultiSyncCollector(
        env_factories, policy,
        frames_per_batch=cfg["frames_per_batch"],
        total_frames=-1,
        env_device="cpu", policy_device=device, storing_device="cpu",
        postproc=MultiStep(gamma=cfg["gamma"], n_steps=cfg["n_steps"]) if cfg["n_steps"] > 1 else None,
        # Collection and updates take turns, so the learner may use every core; left alone the
        # collector would cut this process to (threads - workers), i.e. 1 thread on 2 cores.
        num_threads=torch.get_num_threads(),
    )
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(cfg["buffer_size"]),
                                    batch_size=cfg["batch_size"])
    logger = CSVLogger(exp_name="logs", log_dir=str(run_dir))
    oracle_length = oracle_mean_episode_length(cfg["env"], cfg["eval_episodes"], EVAL_SEED)

    def evaluate() -> dict:
        scores = first_episodes(actor, eval_env, EVAL_SEED)
        result = {**summarize(scores), "oracle_mean_episode_length": oracle_length}
        for key, value in result.items():
            logger.log_scalar(f"eval/{key}", value, step=frames)
        with open(run_dir / "metrics.csv", "a") as f:
            if f.tell() == 0:
                f.write("frames,updates,wall_seconds,epsilon," + ",".join(result) + "\n")
            row = [frames, updates, round(wall_before + time.time() - start, 1), float(egreedy.eps)]
            f.write(",".join(str(v) for v in row + list(result.values())) + "\n")
        return result

    # -- training loop ---------------------------------------------------------------------------
    start = time.time()
    budget = cfg["minutes"] * 60 if cfg["minutes"] > 0 else math.inf
    bar = tqdm(total=cfg["frames"], initial=frames, unit="frame", dynamic_ncols=True)
    last_eval, loss_value, eval_result, exit_code = frames, float("nan"), {}, 0
    keys = ["observation", "z_H", "z_L", "is_init", "action", "next", "steps_to_next_obs",
            "gamma"]
    collect_seconds = train_seconds = 0.0  # time waiting for data / updating
    tick = time.time()
    try:
        for data in collector:
            got_data = time.time()
            collect_seconds += got_data - tick
            data = data.reshape(-1)
            buffer.extend(data.select(*keys, strict=False).exclude(("next", "episode_reward"),
                                                                   ("next", "step_count")))
            frames += data.numel()
            egreedy.step(data.numel())
            bar.update(data.numel())
            if len(buffer) >= cfg["warmup_frames"]:
                for _ in range(cfg["updates_per_batch"]):
                    batch = buffer.sample().to(device)
                    if cfg["deep_supervision"]:
                        # Targets once per minibatch from the target network (full recurrence
                        # on the next observation from its carried state)...
                        with torch.no_grad():
                            target = loss_module.value_estimator.value_estimate(
                                batch.clone(False),
                                target_params=loss_module.target_value_network_params,
                            ).squeeze(-1)
                        action = batch["action"].float()
                        # ...then one optimizer step per segment, each from the last one's
                        # detached state (HRM deep supervision).
                        for q in net.supervision_segments(batch):
                            loss = (q * action).sum(-1).sub(target).pow(2).mean()
                            optimizer.zero_grad()
                            loss.backward()
                            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg["grad_clip"])
                            optimizer.step()
                    else:
                        loss = loss_module(batch)["loss"]
                        optimizer.zero_grad()
                        loss.backward()
                        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg["grad_clip"])
                        optimizer.step()
                    loss_value = loss.item()
                    if not math.isfinite(loss_value):
                        tqdm.write(f"error: the loss became {loss_value} at {frames} frames; "
                                   f"stopping. {last_path} holds the last good state.")
                        exit_code = 1
                        break
                    target_updater.step()
                    updates += 1
                if exit_code:
                    break
                collector.update_policy_weights_()
            train_seconds += time.time() - got_data
            bar.set_postfix(fps=f"{(frames - bar.initial) / (time.time() - start):.0f}",
                            eps=f"{float(egreedy.eps):.2f}", loss=f"{loss_value:.4f}",
                            wait=f"{collect_seconds:.0f}s", train=f"{train_seconds:.0f}s",
                            success=f"{eval_result.get('success_rate', float('nan')):.2f}")
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
        collector.shutdown()

    if exit_code:
        eval_env.close()
        return exit_code
    save_checkpoint(last_path, checkpoint_state())
    if stop.requested:
        eval_env.close()
        tqdm.write(f"stopped at {frames} frames; resume with --resume --run-dir {run_dir}")
        return 0
    wall = time.time() - start
    eval_result = evaluate()
    eval_env.close()
    if eval_result["success_rate"] > best_success:
        best_success = eval_result["success_rate"]
        save_checkpoint(best_path, checkpoint_state())
    summary = {
        **{k: eval_result[k] for k in ("success_rate", "mean_episode_length",
                                       "mean_success_length", "oracle_mean_episode_length",
                                       "mean_return")},
        "frames": frames, "updates": updates, "wall_seconds": wall_before + wall,
        "frames_per_second": (frames - bar.initial) / wall,
        "preset": cfg["preset"], "env": cfg["env"], "carry": cfg["carry"],
        "carry_state": cfg["carry_state"], "seed": cfg["seed"],
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    tqdm.write(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
