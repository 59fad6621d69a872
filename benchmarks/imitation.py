"""The A* oracle's answer in place of the TD target: how far examples/dqn_hrm.py's own network and
optimizer get on a maze by supervised imitation, against minibatch passes and minutes. An RL run's
greedy success beside it at equal minibatch passes says whether the RL or the network is the slow
part.

    python benchmarks/imitation.py [--env DynamicMaze] [--minutes 6] [--states 200000]
        [--data FILE] [--json FILE] [-- EXAMPLE_FLAGS]   # e.g. -- --model mlp, or -- --hrm patch=1

Data: the states the oracle visits while acting epsilon-greedily (eps 0.3, so that states off its
paths appear too), each labelled with every action on a shortest path under the current doors
(``hrm_torchrl.oracle.optimal_actions``); states where closed doors block every path are left out.
The held-out states come from other mazes. Labelling takes minutes (A* in Python), so ``--data``
keeps the states in a file that later runs with the same --env, --states, --held-out and --seed
load. Loss: minus the log of the probability that softmax(Q) puts on the optimal actions. The
network, the optimizer (AdamW with the preset's groups, lr and betas), the minibatch size,
gradient clipping, deep supervision (one optimizer step per segment) and torch.compile are the
example's, from its preset and the flags after ``--``; the HRM runs Reset Z, as the oracle's
policy needs no memory.

Rows, every --eval-every minibatches (seconds: training only, compile included, evaluation not):
the minibatch loss, the held-out accuracy (the greedy action is optimal; over all states and over
those >= 8 steps from the goal) and greedy success on the example's evaluation mazes (its
EVAL_SEED and --eval-episodes), as in its metrics.csv, also by the goal's distance at the start
(``hrm_torchrl.evaluation.success_by_distance``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictSequential
from torchrl.modules import EGreedyModule, QValueActor
from tqdm import tqdm

from hrm_torchrl import make_env
from hrm_torchrl.evaluation import first_episodes, success_by_distance, summarize
from hrm_torchrl.oracle import OraclePolicy, optimal_actions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_speed import load_example  # noqa: E402

FAR = 8  # steps from the goal: the held-out accuracy of the longer plans is reported apart


def oracle_states(env_name: str, states: int, seed: int, eps: float = 0.3,
                  mazes: int = 64) -> TensorDict:
    """``states`` observations the epsilon-greedy oracle visits on ``mazes`` mazes from ``seed``,
    with ``"optimal"`` ([N, 4] bool) and ``"distance"`` ([N]); states without a path left out."""
    env = make_env(env_name, num_envs=mazes, seed=seed)
    policy = TensorDictSequential(OraclePolicy(), EGreedyModule(env.action_spec, eps_init=eps,
                                                                eps_end=eps))
    kept, have = [], 0
    while have < states:  # each rollout resets the mazes, which go on drawing new ones
        with torch.no_grad():
            rollout = env.rollout(-(-(states - have) // mazes), policy, break_when_any_done=False)
        observation = rollout["observation"].reshape(-1, rollout["observation"].shape[-1])
        labels = [optimal_actions(o) for o in observation.numpy()]
        distance = torch.tensor([d for _, d in labels])
        keep = distance >= 0
        kept.append(TensorDict({
            "observation": observation[keep],
            "optimal": torch.from_numpy(np.stack([a for a, _ in labels]))[keep],
            "distance": distance[keep],
        }, batch_size=[int(keep.sum())]))
        have += len(kept[-1])
    env.close()
    return torch.cat(kept)[:states]


def load_or_collect(path: str | None, env_name: str, states: int, held_out: int,
                    seed: int) -> tuple[TensorDict, TensorDict]:
    """The training and held-out states: from ``path`` when it exists (made with the same
    arguments), else collected, and saved there when ``path`` is given."""
    key = {"env": env_name, "states": states, "held_out": held_out, "seed": seed}
    if path and Path(path).exists():
        saved = torch.load(path, weights_only=False)
        if saved.get("key") != key:
            raise SystemExit(f"error: {path} holds states for {saved.get('key')}, this run asks "
                             f"for {key}; give another --data file")
        return saved["train"], saved["held_out"]
    started = time.perf_counter()
    train = oracle_states(env_name, states, seed=seed)
    held = oracle_states(env_name, held_out, seed=seed + 1_000_000)
    tqdm.write(f"{len(train)} + {len(held)} oracle states in {time.perf_counter() - started:.0f} s")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": key, "train": train, "held_out": held}, path)
    return train, held


def imitation_loss(action_value: torch.Tensor, optimal: torch.Tensor) -> torch.Tensor:
    """-log P(optimal actions) under softmax(Q), averaged over the batch."""
    log_p = torch.log_softmax(action_value.float(), -1)
    return -torch.logsumexp(log_p.masked_fill(~optimal, float("-inf")), -1).mean()


def accuracy(net, data: TensorDict, chunk: int = 1024) -> tuple[float, float]:
    """Share of ``data``'s states whose greedy action is optimal: all, and those >= FAR away."""
    hits = []
    with torch.no_grad():
        for part in data.split(chunk):
            greedy = net(part.select("observation"))["action_value"].argmax(-1)
            hits.append(part["optimal"].gather(-1, greedy[:, None]).squeeze(-1))
    hit = torch.cat(hits).float()
    far = data["distance"] >= FAR
    return float(hit.mean()), float(hit[far].mean()) if far.any() else float("nan")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="DynamicMaze")
    parser.add_argument("--states", type=int, default=200_000, help="training states")
    parser.add_argument("--held-out", type=int, default=5_000, help="held-out states")
    parser.add_argument("--minutes", type=float, default=6.0, help="training time, compile included")
    parser.add_argument("--steps", type=int, default=0, help="minibatches; 0: no limit")
    parser.add_argument("--eval-every", type=int, default=500, help="minibatches between rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", help="load the labelled states from this file, or save them there")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--quick", action="store_true", help="a tiny run (the tests use it)")
    parser.add_argument("example_flags", nargs="*", help="after --: the example's flags")
    args = parser.parse_args(argv)
    if args.quick:
        args.states, args.held_out, args.steps, args.eval_every = 256, 128, 4, 2
        args.example_flags = [*args.example_flags, "--eval-episodes", "4", "--batch-size", "16",
                              "--no-compile"]
    for name in ("states", "held_out", "eval_every"):
        if getattr(args, name) < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be at least 1, "
                             f"got {getattr(args, name)}")
    if args.steps < 0:
        raise SystemExit(f"error: --steps must be 0 (no limit) or more, got {args.steps}")
    if args.minutes <= 0 and args.steps < 1:
        raise SystemExit("error: give --minutes > 0 or --steps >= 1, or training never ends")

    example = load_example()
    example_args = example.parse_args(
        ["--env", args.env, "--seed", str(args.seed), *args.example_flags])
    model = example_args.model or example.PRESETS.get(example_args.preset, {}).get("model")
    if model == "lstm" or example_args.carry == "carry":
        raise SystemExit("error: imitation trains on single states, so the network must not carry "
                         "state: --model hrm (run as Reset Z) or --model mlp")
    if model == "hrm":
        example_args.carry = "reset"
    cfg = example.resolve_config(example_args)
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    torch.manual_seed(args.seed)

    train, held_out = load_or_collect(args.data, args.env, args.states, args.held_out, args.seed)
    tqdm.write(f"mean distance to the goal {train['distance'].float().mean():.1f}")

    net, description = example.make_network(cfg)
    optimizer = example.make_optimizer(net, cfg)
    if cfg["compile"]:
        example.compile_network(net)
    primer, _ = example.carried_state(net)
    eval_env = make_env(args.env, num_envs=cfg["eval_episodes"], primer=primer)
    actor = QValueActor(net, spec=eval_env.action_spec_unbatched)

    # seconds: training only, not evaluating; --steps and --eval-every count minibatches
    rows, minibatches, optimizer_steps, loss, seconds = [], 0, 0, float("nan"), 0.0
    generator = torch.Generator().manual_seed(args.seed)

    def row() -> dict:
        return evaluate(net, actor, eval_env, held_out, example.EVAL_SEED) | {
            "minibatches": minibatches, "optimizer_steps": optimizer_steps,
            "samples": minibatches * cfg["batch_size"], "seconds": seconds, "loss": loss}

    bar = tqdm(total=args.steps or None, unit="minibatch")
    try:
        while not ((args.steps and minibatches >= args.steps)
                   or (args.minutes > 0 and seconds >= 60 * args.minutes)):
            started = time.perf_counter()
            batch = train[torch.randint(len(train), (cfg["batch_size"],), generator=generator)]
            loss, steps = train_minibatch(net, batch, optimizer, cfg["grad_clip"],
                                          cfg["deep_supervision"])
            minibatches, optimizer_steps = minibatches + 1, optimizer_steps + steps
            seconds += time.perf_counter() - started
            bar.update()
            if minibatches % args.eval_every == 0:
                rows.append(row())
                bar.set_postfix(accuracy=rows[-1]["accuracy"], success=rows[-1]["success_rate"])
    except KeyboardInterrupt:
        tqdm.write("interrupted: the rows so far follow")
    bar.close()
    if not rows or rows[-1]["minibatches"] != minibatches:
        rows.append(row())
    eval_env.close()
    result = {"env": args.env, "preset": cfg["preset"], "network": description,
              "batch_size": cfg["batch_size"], "states": len(train), "rows": rows}
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


def train_minibatch(net, batch: TensorDict, optimizer, grad_clip: float,
                    deep_supervision: bool) -> tuple[float, int]:
    """Trains on one minibatch, as the example's minibatch_update with the imitation loss in
    place of DQN's: one optimizer step, or with deep supervision one per segment, each segment
    starting from the previous one's detached state. Returns the last loss and the steps taken."""
    observations = batch.select("observation")
    if deep_supervision:
        q_values = net.supervision_segments(observations)
    else:
        q_values = [net(observations)["action_value"]]
    steps = 0
    for q in q_values:
        loss = imitation_loss(q, batch["optimal"])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
        optimizer.step()
        steps += 1
    return float(loss.detach()), steps


def evaluate(net, actor, eval_env, held_out, seed) -> dict:
    accuracy_all, accuracy_far = accuracy(net, held_out)
    scores = first_episodes(actor, eval_env, seed)
    summary = summarize(scores)
    return {"accuracy": accuracy_all, "accuracy_far": accuracy_far,
            "success_rate": summary["success_rate"],
            "mean_success_length": summary["mean_success_length"],
            "success_by_distance": success_by_distance(scores)}


if __name__ == "__main__":
    main()
