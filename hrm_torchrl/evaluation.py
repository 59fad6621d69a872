"""Greedy evaluation of a policy on seeded maze episodes, and the oracle on the same seeds."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import torch

from hrm_torchrl.torchrl_env import ENV_IDS


def first_episodes(policy, env, seed: int) -> dict:
    """Runs ``policy`` on every maze of ``env`` (a ``make_env`` env, so that one env serves every
    evaluation), maze i from ``reset(seed=seed + i)``, and scores each maze's first episode.

    Returns numpy arrays ``success`` (bool), ``length`` (steps; failures count the full step
    limit) and ``episode_return``, plus ``rollout``, the whole TorchRL rollout.
    """
    max_steps = env.base_env.mazes[0].max_steps
    env.set_seed(seed)
    with torch.no_grad():
        rollout = env.rollout(max_steps, policy, break_when_any_done=False)
    done = rollout["next", "done"].squeeze(-1).cpu().numpy()  # [mazes, max_steps]
    first = done.argmax(-1)  # every first episode ends within max_steps (truncation)
    rows = np.arange(done.shape[0])
    terminated = rollout["next", "terminated"].squeeze(-1).cpu().numpy()[rows, first]
    returns = rollout["next", "episode_reward"].squeeze(-1).cpu().numpy()[rows, first]
    return {
        "success": terminated,
        "length": np.where(terminated, first + 1, max_steps),
        "episode_return": returns,
        "rollout": rollout,
    }


def summarize(scores: dict) -> dict:
    success, length = scores["success"], scores["length"]
    return {
        "success_rate": float(success.mean()),
        "mean_episode_length": float(length.mean()),
        "mean_success_length": float(length[success].mean()) if success.any() else float("nan"),
        "mean_return": float(scores["episode_return"].mean()),
    }


def success_by_distance(scores: dict, edges=(1, 4, 8, 12, 16)) -> list[dict]:
    """Greedy success of the scored first episodes (``first_episodes``) by how far the goal was
    at their start: the oracle's steps under the first observation's doors, in bins
    ``[edges[i], edges[i + 1])`` and ``>= edges[-1]``; a bin ``"blocked"`` holds the episodes
    whose closed doors cut every path at the start. Empty bins are left out."""
    from hrm_torchrl.oracle import optimal_actions

    first = scores["rollout"]["observation"][:, 0].cpu().numpy()
    distance = np.array([optimal_actions(observation)[1] for observation in first])
    bins = [("blocked", distance < 0)]
    for low, high in zip(edges, (*edges[1:], None)):
        name = f"{low}-{high - 1}" if high else f">={low}"
        bins.append((name, (distance >= low) & (distance < (high or np.inf))))
    return [{"distance": name, "episodes": int(rows.sum()),
             "success_rate": float(scores["success"][rows].mean())}
            for name, rows in bins if rows.any()]


def learning_diagnostics(scores: dict, buffer=None) -> dict:
    """Signs of a collapsed Q-network, from the states of the scored first episodes.

    ``q_std``: standard deviation of the greedy Q-value (max over actions) across those states;
    near 0 when the network ignores its input. ``action_entropy``: entropy in nats of the greedy
    actions' distribution over those states (0: one constant action; ln 4 = 1.386: uniform).
    ``replay_reward_share``: share of the frames in ``buffer`` (a TorchRL replay buffer) whose
    stored reward is positive (the n-step return when n > 1); nan without a buffer.
    ``failed_steps_unchanged``: share of the failed episodes' steps after which the observation
    stayed the same (a bump into a wall with the doors unchanged; a network that carries no state
    then repeats it until the step limit); nan when none failed.
    """
    rollout = scores["rollout"]
    done = rollout["next", "done"].squeeze(-1)
    steps = torch.arange(done.shape[-1], device=done.device)
    in_first = steps <= done.int().argmax(-1, keepdim=True)
    q = rollout["action_value"][in_first].float()  # [states, actions]
    greedy_q, greedy_action = q.max(-1)
    share = torch.bincount(greedy_action, minlength=q.shape[-1]).double() / len(greedy_action)
    entropy = -(share[share > 0] * share[share > 0].log()).sum()
    reward_share = float("nan")
    if buffer is not None and len(buffer):
        reward = buffer[: len(buffer)]["next", "reward"]
        reward_share = float((reward > 0).float().mean())
    # a failed first episode spans the whole rollout
    unchanged = (rollout["next", "observation"] == rollout["observation"]).all(-1)
    failed = ~torch.as_tensor(scores["success"], device=unchanged.device)
    return {"q_std": float(greedy_q.std()) if len(greedy_q) > 1 else 0.0,
            "action_entropy": float(entropy) + 0.0, "replay_reward_share": reward_share,  # no -0.0
            "failed_steps_unchanged": float(unchanged[failed].float().mean()) if failed.any()
            else float("nan")}


@functools.lru_cache(maxsize=16)
def oracle_mean_episode_length(name: str, episodes: int, seed: int) -> float:
    """The A* oracle's mean episode length on the same seeds as ``first_episodes``."""
    from hrm_torchrl.oracle import episode_stats, oracle_action

    env = gym.make(ENV_IDS[name])
    stats = episode_stats(env, oracle_action, episodes, seed)
    env.close()
    return stats["mean_episode_length"]
