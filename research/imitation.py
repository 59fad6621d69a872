"""The A* oracle's answer in place of the TD target: how far examples/dqn_hrm.py's own network and
optimizer get on a maze by supervised imitation, against minibatch passes and minutes. An RL run's
greedy success beside it at equal minibatch passes says whether the RL or the network is the slow
part.

    python research/imitation.py [--env DynamicMaze] [--minutes 6] [--states 200000]
        [--data FILE] [--json FILE] [-- EXAMPLE_FLAGS]   # e.g. -- --model mlp, or -- --hrm patch=1
    python research/imitation.py --trajectories [--mazes 128] [--acting oracle|network]
        [--replay N [--relabel]] [--target actions|values|log-values|distance-classes|value-classes]
        [-- --carry reset]

Data: the states the oracle visits while acting epsilon-greedily (eps 0.3, so that states off its
paths appear too), each labelled with every action on a shortest path under the current doors
(``hrm_torchrl.oracle.optimal_actions``); states where closed doors block every path are left out.
The held-out states come from other mazes. Labelling takes minutes (A* in Python), so ``--data``
keeps the states in a file that later runs with the same --env, --states, --held-out, --seed and
gamma load. Loss: minus the log of the probability that softmax(Q) puts on the optimal actions, or
with ``--target values`` the squared error of each action's Q-value against the oracle's Q* under
the preset's gamma and the current doors (``hrm_torchrl.oracle.optimal_values``): the exact value
of the target that DQN bootstraps, on all four actions, so that a run says what regressing values
instead of ranking actions costs, with no bootstrap and no exploration in the way;
``--target log-values`` regresses ``log_values`` of Q* instead (minus the distance in steps, so
that two actions' values part by a step or more wherever the goal is, where Q*'s gaps shrink like
gamma^d). The classification targets give each action a distribution over classes, learned by
cross-entropy, and rank the actions by its expected value: ``--target distance-classes`` over the
steps to the goal after the move (0..31), ``--target value-classes`` over C51's 51 atoms of value
on [0, 1], Q* projected onto its two nearest (what TorchRL's ``DistributionalDQNLoss`` learns from
an exact return).
The network, the optimizer (AdamW with the preset's groups, lr and betas), the minibatch size,
gradient clipping, deep supervision (one optimizer step per segment) and torch.compile are the
example's, from its preset and the flags after ``--``; the HRM runs Reset Z, as the oracle's
policy needs no memory.

``--trajectories`` asks whether carrying the network's state helps when the target is exact: it
trains online along the same oracle's trajectories on ``--mazes`` mazes, one minibatch per env
step (every maze's current state; states without a path count nothing), and carries the
network's state from step to step as the example's collector does, or not, after the example's
--carry and --carry-state (Carry Z by default; ``-- --carry reset`` for Reset Z). The same seed
gives Carry Z and Reset Z the same mazes and oracle actions. ``--acting network`` lets the
network's own greedy action under the Q-values it just computed drive the mazes (DAgger), with the
same 0.3 of random actions, so that it learns on the states its own policy visits, as in RL, while
the target stays A*'s. ``--replay N`` puts the example's
replay between acting and learning: the network runs on each step's states without gradient (its
state carried on from there), the states go with their carried-in network state into a
``LazyTensorStorage`` of N, and the minibatch is drawn from it, so that the learner starts from
states the network wrote up to N / --mazes steps earlier, as the example's learner does.
``--relabel`` also stores a copy of each state with its goal moved to a random floor cell (and
labelled for it) but the carried-in state kept, as ``hrm_torchrl.HindsightRelabel(copies=1)``
stores its relabeled frames: half the replay then holds a state computed for another goal.

Rows, every --eval-every minibatches (seconds: training only, compile included, evaluation not):
the minibatch loss, the accuracy (the greedy action is optimal; over all states and over those
>= 8 steps from the goal: on the held-out states, or with --trajectories on each step's new states
before the update on them, since the row before) and greedy success on the example's evaluation
mazes (its EVAL_SEED and --eval-episodes), as in its metrics.csv, also by the goal's distance at
the start (``hrm_torchrl.evaluation.success_by_distance``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.modules import EGreedyModule, QValueActor, QValueModule
from tqdm import tqdm

from hrm_torchrl import HRMQValueNet, make_env
from hrm_torchrl.dqn import (EVAL_SEED, N_ACTIONS, ConfigError, carried_keys, config_from_changes,
                             flag_error, make_network, parse_args)
from hrm_torchrl.evaluation import first_episodes, learning_diagnostics, success_by_distance, summarize
from hrm_torchrl.mazes import CODES
from hrm_torchrl.oracle import OraclePolicy, optimal_values


FAR = 8  # steps from the goal: the accuracy of the longer plans is reported apart
EPS = 0.3  # random actions of the acting policy, so that states off its paths appear too
LABELS = ("optimal", "distance", "values")  # what label() writes
ACTING = ("oracle", "network")
# classes per action of the classification targets: steps to the goal 0..31 (the last: 31 or
# more), or C51's 51 atoms of value on [0, 1]
CLASSES = {"distance-classes": 32, "value-classes": 51}
TARGETS = ("actions", "values", "log-values", *CLASSES)
OUTPUT = "action_logits"  # where a CLASSES target's network writes its logits


def oracle_policy(env, eps: float = EPS) -> TensorDictSequential:
    """The A* oracle acting epsilon-greedily on ``env``, so that states off its paths appear too."""
    return TensorDictSequential(OraclePolicy(), EGreedyModule(env.action_spec, eps_init=eps,
                                                              eps_end=eps))


def label(observation: torch.Tensor, gamma: float) -> dict[str, torch.Tensor]:
    """The oracle's answer for each of ``observation``'s [N, 121] rows: ``"values"`` ([N, 4],
    ``optimal_values`` under ``gamma``, NaN where no path exists), ``"optimal"`` ([N, 4] bool, the
    actions of highest value, as ``optimal_actions``; none where no path exists) and
    ``"distance"`` ([N], -1 where no path exists)."""
    labels = [optimal_values(o, gamma) for o in observation.numpy()]
    values = torch.from_numpy(np.stack([v for v, _ in labels]))
    return {"values": values, "optimal": values == values.max(-1, keepdim=True).values,
            "distance": torch.tensor([d for _, d in labels])}


def oracle_states(env_name: str, states: int, seed: int, gamma: float,
                  mazes: int = 64) -> TensorDict:
    """``states`` observations the epsilon-greedy oracle visits on ``mazes`` mazes from ``seed``,
    with ``label``'s entries under ``gamma``; states without a path left out."""
    env = make_env(env_name, num_envs=mazes, seed=seed)
    policy = oracle_policy(env)
    kept, have = [], 0
    while have < states:  # each rollout resets the mazes, which go on drawing new ones
        with torch.no_grad():
            rollout = env.rollout(-(-(states - have) // mazes), policy, break_when_any_done=False)
        observation = rollout["observation"].reshape(-1, rollout["observation"].shape[-1])
        labels = TensorDict({"observation": observation, **label(observation, gamma)},
                            batch_size=[len(observation)])
        kept.append(labels[labels["distance"] >= 0])
        have += len(kept[-1])
    env.close()
    return torch.cat(kept)[:states]


def trajectories(env, acting: str, gamma: float):
    """Endless minibatches along epsilon-greedy (eps 0.3) trajectories on ``env``'s mazes (a
    ``make_env`` env, with the network's primer when it carries state): yields each step's
    tensordict, with ``label``'s entries under ``gamma`` (all False, -1 and NaN where no path
    exists). Run the network on it in place before the next ``next()``: the state
    it writes to ``"next"`` is carried into the next step, as in a collector; then the A* oracle
    acts (``acting="oracle"``), or the network's own greedy action under those Q-values
    (``acting="network"``, as DAgger does), with eps 0.3 random actions either way.
    """
    if acting not in ACTING:
        raise ValueError(f"acting must be one of {ACTING}, got {acting!r}")
    if acting == "oracle":
        policy, dropped = oracle_policy(env), ("action_value", *LABELS)
    else:  # the Q-values the network just wrote pick the action: no second forward pass
        policy = TensorDictSequential(
            QValueModule(spec=env.action_spec_unbatched),
            EGreedyModule(env.action_spec, eps_init=EPS, eps_end=EPS))
        dropped = LABELS
    tensordict = env.reset()
    while True:
        tensordict.update(label(tensordict["observation"], gamma))
        yield tensordict
        with torch.no_grad():  # detached, and without the training entries: no graph outlives
            # its step, so a carried state's gradient stops where the step starts
            acted = policy(tensordict.exclude(*dropped).detach())
            _, tensordict = env.step_and_maybe_reset(acted)


def moved_goal(states: TensorDict, generator: torch.Generator, gamma: float) -> TensorDict:
    """``states`` with each goal token moved to a random floor cell (and ``label``'s entries
    for the new goal); every other entry, the carried state among them, kept."""
    observation = states["observation"].clone()
    for row in observation:
        row[row == CODES["goal"]] = CODES["floor"]  # not there when the agent stands on it
        floor = (row == CODES["floor"]).nonzero().squeeze(-1)
        row[floor[torch.randint(len(floor), (1,), generator=generator)]] = CODES["goal"]
    return states.clone().update({"observation": observation, **label(observation, gamma)})


def sampled(data: TensorDict, batch_size: int, generator: torch.Generator):
    """Endless minibatches of ``data``'s rows, drawn uniformly with replacement."""
    while True:
        yield data[torch.randint(len(data), (batch_size,), generator=generator)]


def load_or_collect(path: str | None, env_name: str, states: int, held_out: int, seed: int,
                    gamma: float) -> tuple[TensorDict, TensorDict]:
    """The training and held-out states: from ``path`` when it exists (made with the same
    arguments), else collected, and saved there when ``path`` is given."""
    key = {"env": env_name, "states": states, "held_out": held_out, "seed": seed, "gamma": gamma}
    if path and Path(path).exists():
        saved = torch.load(path, weights_only=False)
        if saved.get("key") != key:
            raise SystemExit(f"error: {path} holds states for {saved.get('key')}, this run asks "
                             f"for {key}; give another --data file")
        return saved["train"], saved["held_out"]
    started = time.perf_counter()
    train = oracle_states(env_name, states, seed=seed, gamma=gamma)
    held = oracle_states(env_name, held_out, seed=seed + 1_000_000, gamma=gamma)
    tqdm.write(f"{len(train)} + {len(held)} oracle states in {time.perf_counter() - started:.0f} s")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": key, "train": train, "held_out": held}, path)
    return train, held


def imitation_loss(action_value: torch.Tensor, batch: TensorDict, target: str,
                   gamma: float) -> torch.Tensor:
    """The loss toward the oracle's answer, averaged over ``batch``'s rows that have a path (a
    row without one counts nothing). ``target="actions"``: -log P(optimal actions) under
    softmax(Q). ``target="values"``: the squared error of every action's Q-value against
    ``optimal_values``, as DQN's l2 loss against an exact target (on all four actions).
    ``target="log-values"``: the same against ``log_values(optimal_values, gamma)``.
    A ``CLASSES`` target: ``action_value`` holds logits ``[rows, 4 * classes]`` and the loss is
    the cross-entropy of each action's classes against ``class_target``."""
    has_path = batch["distance"] >= 0
    action_value = action_value[has_path].float()
    if target in CLASSES:
        target_p = class_target(batch["values"][has_path], target, gamma)
        log_p = torch.log_softmax(action_value.unflatten(-1, target_p.shape[-2:]), -1)
        return -(target_p * log_p).sum(-1).mean()
    if target in ("values", "log-values"):
        values = batch["values"][has_path]
        if target == "log-values":
            values = log_values(values, gamma)
        return (action_value - values).pow(2).mean()
    log_p = torch.log_softmax(action_value, -1)
    return -torch.logsumexp(log_p.masked_fill(~batch["optimal"][has_path], float("-inf")),
                            -1).mean()


def log_values(values: torch.Tensor, gamma: float, floor: float = 1e-3) -> torch.Tensor:
    """``log(values) / -log(gamma)``: a move onto a cell d steps from the goal (worth gamma^d)
    becomes -d. Monotone, so the greedy action is the same; values below ``floor`` count as it."""
    return torch.log(values.clamp_min(floor)) / -math.log(gamma)


def class_support(target: str, gamma: float) -> torch.Tensor:
    """The value each class of a ``CLASSES`` target stands for: ``gamma ** k`` for k steps to the
    goal (``"distance-classes"``), or C51's atoms (``"value-classes"``)."""
    if target == "distance-classes":
        return gamma ** torch.arange(CLASSES[target], dtype=torch.float32)
    return torch.linspace(0.0, 1.0, CLASSES[target])


def class_target(values: torch.Tensor, target: str, gamma: float) -> torch.Tensor:
    """The class probabilities ``[..., 4, classes]`` that stand for Q* ``values`` ``[..., 4]``.
    ``"distance-classes"``: one class, the steps to the goal after the move (a bump, which
    loses a step and pays the bump penalty, counts a step more than staying); the last class
    takes every distance beyond it. ``"value-classes"``: C51's projection of the value onto its
    two nearest atoms, as TorchRL's ``DistributionalDQNLoss`` projects a return (values outside
    [0, 1] clipped to it)."""
    classes = CLASSES[target]
    if target == "distance-classes":
        steps = torch.ceil(-log_values(values, gamma) - 1e-3).clamp(0, classes - 1).long()
        return torch.nn.functional.one_hot(steps, classes).float()
    position = values.clamp(0.0, 1.0) * (classes - 1)
    low = position.floor().long().clamp(max=classes - 2)
    above = (position - low).unsqueeze(-1)
    return (torch.nn.functional.one_hot(low, classes) * (1 - above)
            + torch.nn.functional.one_hot(low + 1, classes) * above)


class ClassValues(torch.nn.Module):
    """Logits ``[..., 4 * classes]`` to each action's expected value over its classes
    ``[..., 4]``, the Q-values that a greedy actor ranks."""

    def __init__(self, support: torch.Tensor):
        super().__init__()
        self.register_buffer("support", support)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(logits.float().unflatten(-1, (-1, len(self.support))), -1)
        return (p * self.support).sum(-1)


def hits(action_value: torch.Tensor, batch: TensorDict) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether the greedy action is optimal, and whether the goal is >= FAR away, for each of
    ``batch``'s rows that has a path."""
    has_path = batch["distance"] >= 0
    greedy = action_value.detach().argmax(-1)
    hit = batch["optimal"].gather(-1, greedy[:, None]).squeeze(-1)
    return hit[has_path], (batch["distance"] >= FAR)[has_path]


def accuracy(hit: torch.Tensor, far: torch.Tensor) -> tuple[float, float]:
    """Share of hits: all, and those >= FAR away."""
    hit = hit.float()
    return (float(hit.mean()) if len(hit) else float("nan"),
            float(hit[far].mean()) if far.any() else float("nan"))


def held_out_accuracy(net, data: TensorDict, chunk: int = 1024) -> tuple[float, float]:
    """``accuracy`` of the network's greedy actions on ``data``'s states."""
    with torch.no_grad():
        parts = [hits(net(part.select("observation"))["action_value"], part)
                 for part in data.split(chunk)]
    return accuracy(torch.cat([h for h, _ in parts]), torch.cat([f for _, f in parts]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="DynamicMaze")
    parser.add_argument("--states", type=int, default=200_000, help="training states")
    parser.add_argument("--held-out", type=int, default=5_000, help="held-out states")
    parser.add_argument("--trajectories", action="store_true",
                        help="train along epsilon-greedy trajectories, the network's state carried")
    parser.add_argument("--mazes", type=int, default=128,
                        help="with --trajectories: mazes, i.e. the minibatch size")
    parser.add_argument("--acting", choices=ACTING, default="oracle",
                        help="with --trajectories: who picks the greedy action on the mazes")
    parser.add_argument("--target", choices=TARGETS, default="actions",
                        help="the oracle's optimal actions (cross-entropy), its action values "
                             "(squared error), those values' log_gamma (squared error), or "
                             "classes of steps or of value (cross-entropy)")
    parser.add_argument("--replay", type=int, default=0,
                        help="with --trajectories: train on minibatches from a replay of N states")
    parser.add_argument("--relabel", action="store_true",
                        help="with --replay: also store each state with its goal moved")
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
        args.states, args.held_out, args.mazes, args.steps, args.eval_every = 256, 128, 8, 4, 2
        args.example_flags = [*args.example_flags, "--eval-episodes", "4", "--batch-size", "16",
                              "--no-compile"]
    for name in ("states", "held_out", "mazes", "eval_every"):
        if getattr(args, name) < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be at least 1, "
                             f"got {getattr(args, name)}")
    if args.steps < 0:
        raise SystemExit(f"error: --steps must be 0 (no limit) or more, got {args.steps}")
    if args.minutes <= 0 and args.steps < 1:
        raise SystemExit("error: give --minutes > 0 or --steps >= 1, or training never ends")
    if args.trajectories and args.data:
        raise SystemExit("error: --data keeps single states; --trajectories labels the states as "
                         "it goes and keeps none")
    if args.acting != "oracle" and not args.trajectories:
        raise SystemExit(f"error: --acting {args.acting} picks the actions along --trajectories; "
                         "give --trajectories")
    if args.replay < 0 or (args.replay and not args.trajectories):
        raise SystemExit(f"error: --replay takes a number of states >= 0 and --trajectories, got "
                         f"--replay {args.replay}" + ("" if args.trajectories else " alone"))
    if args.relabel and not args.replay:
        raise SystemExit("error: --relabel relabels the states stored in the replay: give --replay")

    changes, _ = parse_args(["--env", args.env, "--seed", str(args.seed), *args.example_flags])
    model = changes.get("model", "hrm")
    if args.trajectories:
        if changes.get("deep_supervision", changes.get("preset") == "paper"):
            raise SystemExit("error: --trajectories takes no --deep-supervision: its segments "
                             "would not hand the carried state on")
    elif model == "lstm" or changes.get("carry") == "carry":
        raise SystemExit("error: imitation trains on single states, so the network must not carry "
                         "state: --model hrm (run as Reset Z) or --model mlp, or use --trajectories")
    elif model == "hrm":
        changes["carry"] = "reset"
    try:
        cfg = config_from_changes({"device": "cpu", **changes})
    except ConfigError as error:
        raise SystemExit(flag_error(error)) from None
    if args.target in CLASSES and (cfg.model != "hrm" or cfg.deep_supervision or cfg.dueling):
        raise SystemExit(f"error: --target {args.target} takes the HRM (--model hrm) without "
                         "deep supervision or a dueling head")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(args.seed)

    if not args.trajectories:
        train, held_out = load_or_collect(args.data, args.env, args.states, args.held_out,
                                          args.seed, cfg.gamma)
        tqdm.write(f"mean distance to the goal {train['distance'].float().mean():.1f}")

    # qnet: the network whose parameters train; net, what answers with Q-values (qnet, or qnet
    # followed by ClassValues, which turns a class target's logits into Q-values)
    if args.target in CLASSES:
        qnet = HRMQValueNet(cfg.hrm, N_ACTIONS * CLASSES[args.target], carry=cfg.carry,
                            carry_state=cfg.carry_state,
                            out_keys=[OUTPUT, ("next", "z_H"), ("next", "z_L")])
        net = TensorDictSequential(qnet, TensorDictModule(
            ClassValues(class_support(args.target, cfg.gamma)), [OUTPUT], ["action_value"]))
    else:
        qnet = net = make_network(cfg)
    description = cfg.hrm.to_dict() if cfg.model == "hrm" else {"model": cfg.model}
    optimizer = torch.optim.AdamW(qnet.param_groups(cfg.lr, cfg.embedding_lr,
                                                    cfg.embedding_weight_decay), betas=cfg.betas)
    if cfg.compile:
        qnet.compile_modules()
    primer = qnet.make_tensordict_primer()
    state_keys = carried_keys(primer)
    eval_env = make_env(args.env, num_envs=cfg.eval_episodes, primer=primer)
    actor = QValueActor(net, spec=eval_env.action_spec_unbatched)
    generator = torch.Generator().manual_seed(args.seed)
    if args.trajectories:
        train_env = make_env(args.env, num_envs=args.mazes, seed=args.seed, primer=primer)
        batches, batch_size = trajectories(train_env, args.acting, cfg.gamma), args.mazes
        replay = TensorDictReplayBuffer(storage=LazyTensorStorage(args.replay),
                                        batch_size=batch_size) if args.replay else None
        stored = ["observation", "is_init", *LABELS, *state_keys]
    else:
        batches, batch_size = sampled(train, cfg.batch_size, generator), cfg.batch_size
        replay = None

    # seconds: training only, not evaluating; --steps and --eval-every count minibatches
    rows, minibatches, optimizer_steps, loss, seconds = [], 0, 0, float("nan"), 0.0
    online = []  # --trajectories: hits() of each minibatch since the last row

    def row() -> dict:
        if args.trajectories:
            scores = accuracy(*(torch.cat(h) for h in zip(*online))) if online else (float("nan"),) * 2
            online.clear()
        else:
            scores = held_out_accuracy(net, held_out)
        return {"accuracy": scores[0], "accuracy_far": scores[1]} | greedy_success(
            actor, eval_env, EVAL_SEED) | {
            "minibatches": minibatches, "optimizer_steps": optimizer_steps,
            "samples": minibatches * batch_size, "seconds": seconds, "loss": loss}

    bar = tqdm(total=args.steps or None, unit="minibatch")
    try:
        while not ((args.steps and minibatches >= args.steps)
                   or (args.minutes > 0 and seconds >= 60 * args.minutes)):
            started = time.perf_counter()
            live = batch = next(batches)
            if replay is not None:  # as in the example: act, store, draw a minibatch
                with torch.no_grad():
                    net(live)
                replay.extend(live.select(*stored))
                if args.relabel:
                    replay.extend(moved_goal(live.select(*stored), generator, cfg.gamma))
                batch = replay.sample()
            loss, steps = train_minibatch(net, batch, optimizer, cfg.grad_clip,
                                          cfg.deep_supervision, args.target, cfg.gamma)
            if args.trajectories:  # the Q-values of the new states, before the update
                online.append(hits(live["action_value"], live))
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
    if args.trajectories:
        train_env.close()
    result = {"env": args.env, "preset": cfg.preset, "network": description,
              "carry": cfg.carry,
              "carry_state": cfg.carry_state if cfg.model == "hrm" else None,
              "dueling": cfg.dueling,
              "data": "trajectories" if args.trajectories else "states",
              "acting": args.acting if args.trajectories else None, "target": args.target,
              "gamma": cfg.gamma, "replay": args.replay,
              "relabel": args.relabel,
              "batch_size": batch_size, "states": None if args.trajectories else len(train),
              "rows": rows}
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


def train_minibatch(net, batch: TensorDict, optimizer, grad_clip: float,
                    deep_supervision: bool, target: str, gamma: float) -> tuple[float, int]:
    """Trains on one minibatch, as the example's update with ``imitation_loss`` toward
    ``target`` in place of DQN's: one optimizer step, or with deep supervision one per segment,
    each segment starting from the previous one's detached state. Without deep supervision the
    network runs on ``batch`` in place (its Q-values and carried state land there). Returns the last
    loss and the steps taken."""
    if deep_supervision:
        q_values = net.supervision_segments(batch)
    else:
        q_values = [net(batch)[OUTPUT if target in CLASSES else "action_value"]]
    steps = 0
    for q in q_values:
        loss = imitation_loss(q, batch, target, gamma)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
        optimizer.step()
        steps += 1
    return float(loss.detach()), steps


def greedy_success(actor, eval_env, seed) -> dict:
    """Greedy success on ``eval_env``'s mazes, the share of the failed episodes' steps that left
    the observation unchanged (``learning_diagnostics``) and success by the goal's distance."""
    scores = first_episodes(actor, eval_env, seed)
    summary = summarize(scores)
    return {"success_rate": summary["success_rate"],
            "mean_success_length": summary["mean_success_length"],
            "failed_steps_unchanged": learning_diagnostics(scores)["failed_steps_unchanged"],
            "success_by_distance": success_by_distance(scores)}


if __name__ == "__main__":
    main()
