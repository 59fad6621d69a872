"""DQN training of the HRM agent (HRM-Agent, Dang & Rawlinson 2025) on the dynamic mazes.

The whole algorithm in one file, built from hrm_torchrl's pieces; every flag defaults to the
chosen preset's value (``--help`` lists them):

    python examples/dqn_hrm.py                       # cpu preset: HRM, FourRoomsDoors, Carry Z
    python examples/dqn_hrm.py --model mlp           # the same pipeline with an MLP Q-network
    python examples/dqn_hrm.py --preset paper --device cuda --env DynamicMaze --carry reset
    python examples/dqn_hrm.py --collector ray       # the workers as Ray actors (pip install -e .[ray])

make_env workers -> MultiSyncCollector (epsilon-greedy QValueActor) -> hindsight relabeling ->
n-step returns -> LazyTensorStorage replay -> DQNLoss, or with --deep-supervision one optimizer
step per segment (DeepSupervisionDQNLoss) -> SoftUpdate after every optimizer step -> fresh
weights to the workers. Ctrl-C or SIGTERM saves a checkpoint and exits 0; --resume continues.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time

import torch
from tensordict.nn import TensorDictSequential
from torchrl.record.loggers import CSVLogger
from tqdm import tqdm

from hrm_torchrl import HindsightRelabel, MultiStep, make_env
from hrm_torchrl.dqn import (EVAL_SEED, carried_keys, gradient_steps, make_collector,
                             make_exploration, make_learner, make_network, make_replay, replay_keys)
from hrm_torchrl.evaluation import first_episodes, learning_diagnostics, oracle_mean_episode_length, summarize
from hrm_torchrl.runs import Run

SUMMARY_KEYS = ("success_rate", "mean_episode_length", "mean_success_length",
                "oracle_mean_episode_length", "mean_return", "q_std", "action_entropy",
                "replay_reward_share")


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


def kept(run: Run) -> str:
    """What a stop leaves to resume from."""
    if run.saved_frames is None:
        return "no checkpoint was saved"
    return f"{run.last} holds the state at {run.saved_frames} frames"


def main(argv=None) -> int:
    # the flags over the preset (or the saved run with --resume), checked before anything slow
    run = Run.from_command_line(argv, description=__doc__.split("\n\n")[0])
    cfg = run.config
    stop = StopRequest()  # from here on, Ctrl-C and SIGTERM save and stop
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    run.scope_temporary_files()  # NetHack's, which a killed run would leave in /tmp
    torch.manual_seed(cfg.seed)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    if device.type == "cuda":  # tensor cores for the fp32 matmuls, unless --no-tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.tf32

    # -- network, policy, loss, optimizer --------------------------------------------------------
    net = make_network(cfg).to(device)
    primer = net.make_tensordict_primer()  # None for the MLP, which carries nothing
    eval_env = make_env(cfg.env, num_envs=cfg.eval_episodes, device=device, primer=primer)
    action_spec = eval_env.action_spec_unbatched
    learner = make_learner(net, action_spec, cfg)
    actor = learner.actor
    egreedy = make_exploration(action_spec, cfg)
    policy = TensorDictSequential(actor, egreedy)
    counters = dict(frames=0, updates=0, optimizer_steps=0, wall_seconds=0.0, best_success=-1.0)
    if run.checkpoint is not None:
        counters = run.restore(learner, egreedy)
        changed = "".join(f"; {k} {old} -> {new}" for k, (old, new) in run.changes.items())
        tqdm.write(f"resumed from {run.last} at {counters['frames']} frames{changed}")
    run.write_config()
    frames, updates, optimizer_steps = counters["frames"], counters["updates"], counters["optimizer_steps"]
    best_success = counters["best_success"]

    # -- collector, relabeling, n-step returns, replay -------------------------------------------
    # The workers ignore Ctrl-C and SIGTERM: the signal is ours to handle (save, then shut them
    # down). A resumed run goes on with new mazes and exploration, not its first rounds' again.
    collector, shutdown_collector = make_collector(cfg, policy, primer, seed=cfg.seed + frames)
    if cfg.compile:  # now that the workers hold their own (eager) copy of the policy
        net.compile_modules()
    hindsight = HindsightRelabel(copies=cfg.hindsight)  # copies=0 only adds the mask
    n_step = MultiStep(gamma=cfg.gamma, n_steps=cfg.n_steps) if cfg.n_steps > 1 else None
    stored_keys = replay_keys(carried_keys(primer), n_step is not None)
    buffer = make_replay(cfg, device)
    logger = CSVLogger(exp_name="logs", log_dir=str(run.path))
    oracle_length = oracle_mean_episode_length(cfg.env, cfg.eval_episodes, EVAL_SEED)
    start = time.time()

    def checkpoint_state() -> dict:
        return {"model": net.state_dict(), "loss_module": learner.loss.state_dict(),
                "optimizer": learner.optimizer.state_dict(), "egreedy": egreedy.state_dict(),
                "frames": frames, "updates": updates, "optimizer_steps": optimizer_steps,
                "wall_seconds": counters["wall_seconds"] + time.time() - start,
                "best_success": best_success}

    def evaluate() -> dict:
        """Greedy success on the evaluation mazes; best.pt and last.pt saved before the row."""
        nonlocal best_success
        scores = first_episodes(actor, eval_env, EVAL_SEED)
        result = {**summarize(scores), "oracle_mean_episode_length": oracle_length,
                  **learning_diagnostics(scores, buffer)}
        if result["success_rate"] > best_success:
            best_success = result["success_rate"]
            run.save(run.best, checkpoint_state())
        run.save(run.last, checkpoint_state())
        for key, value in result.items():
            logger.log_scalar(f"eval/{key}", value, step=frames)
        run.log_metrics({"frames": frames, "updates": updates, "optimizer_steps": optimizer_steps,
                         "wall_seconds": round(counters["wall_seconds"] + time.time() - start, 1),
                         "epsilon": float(egreedy.eps), **result})
        return result

    # -- training loop ---------------------------------------------------------------------------
    budget = cfg.minutes * 60 if cfg.minutes > 0 else math.inf
    bar = (tqdm(total=round(budget), unit="s") if math.isfinite(budget)  # whichever ends first
           else tqdm(total=cfg.frames, initial=frames, unit="frame"))
    last_eval, loss_value, eval_result, failed = frames, float("nan"), {}, False
    frames_at_start, wait_seconds, train_seconds, tick = frames, 0.0, 0.0, time.time()
    last_save = tick
    try:
        # a resume may be done already; a signal may have come during start-up
        for data in collector if frames < cfg.frames and not stop.requested else ():
            got_data = time.time()
            wait_seconds += got_data - tick
            data = data.reshape(-1, data.shape[-1])  # [workers * mazes, time]
            frames += data.numel()
            if cfg.eps_unit == "frames":
                egreedy.step(data.numel())
            data = hindsight(data)  # + relabeled copies, and ("collector", "mask")
            if n_step is not None:
                data = n_step(data)
            buffer.extend(data[data["collector", "mask"]].select(*stored_keys))
            if len(buffer) >= cfg.warmup_frames:
                for _ in range(cfg.updates_per_batch):
                    batch = buffer.sample().to(device)
                    # zero_grad, backward, clip, AdamW step, SoftUpdate: once with DQNLoss, once
                    # per segment with DeepSupervisionDQNLoss
                    for loss in gradient_steps(learner, batch, cfg.grad_clip):
                        optimizer_steps += 1
                        if cfg.eps_unit == "updates":
                            egreedy.step(1)
                    updates += 1
                loss_value = loss.item()  # one host sync per round, not per step
                if not math.isfinite(loss_value):
                    tqdm.write(f"error: the loss became {loss_value} at {frames} frames; stopping "
                               f"({kept(run)})")
                    failed = True
                    break
                collector.update_policy_weights_()
            train_seconds += time.time() - got_data
            bar.update(round(time.time() - start) - bar.n if math.isfinite(budget) else frames - bar.n)
            bar.set_postfix(frames=frames, mb=updates, eps=f"{float(egreedy.eps):.2f}",
                            loss=f"{loss_value:.4f}",
                            fps=f"{(frames - frames_at_start) / (time.time() - start):.0f}",
                            success=f"{eval_result.get('success_rate', float('nan')):.2f}",
                            wait=f"{wait_seconds:.0f}s", train=f"{train_seconds:.0f}s")
            logger.log_scalar("train/loss", loss_value, step=frames)
            if frames - last_eval >= cfg.eval_every:
                last_eval, eval_result, last_save = frames, evaluate(), time.time()
            elif cfg.checkpoint_minutes and time.time() - last_save >= 60 * cfg.checkpoint_minutes:
                run.save(run.last, checkpoint_state())  # what a kill between evaluations keeps
                last_save = time.time()
            if stop.requested:  # saved before the shutdown, which a second Ctrl-C may cut short
                run.save(run.last, checkpoint_state())
                break
            if frames >= cfg.frames or time.time() - start >= budget:
                break
            tick = time.time()
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once, saying what is kept
        bar.close()
        tqdm.write(f"stopped at once at {frames} frames; {kept(run)}")
        return 130
    finally:
        bar.close()
        shutdown_collector()  # a RayCollector also stops the local Ray cluster it started
    if failed:
        eval_env.close()
        return 1
    if stop.requested:
        if run.saved_frames != frames:  # stopped before the first round
            run.save(run.last, checkpoint_state())
        eval_env.close()
        tqdm.write(f"stopped at {frames} frames; continue with --resume --run-dir {run.path}")
        return 0
    wall = time.time() - start
    if last_eval != frames or not eval_result:  # not evaluated (and saved) at these frames yet
        eval_result = evaluate()
    eval_env.close()
    summary = {**{k: eval_result[k] for k in SUMMARY_KEYS}, "frames": frames, "updates": updates,
               "optimizer_steps": optimizer_steps,
               "wall_seconds": counters["wall_seconds"] + wall,
               "frames_per_second": (frames - frames_at_start) / wall,
               **{k: getattr(cfg, k) for k in ("preset", "env", "model", "carry", "carry_state",
                                               "hindsight", "seed")}}
    run.write_summary(summary)
    tqdm.write(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
