"""The A* oracle: replans every step under the current doors, bumps in place when no path exists.

It reads only the observation, so it serves as a policy on the Gymnasium mazes (``oracle_action``)
and on the TorchRL envs (``OraclePolicy``). ``python -m hrm_torchrl.oracle --episodes N`` prints
its success rate and mean episode length on each maze.
"""

from __future__ import annotations

import argparse
import json

import gymnasium as gym
import numpy as np
import torch
from tensordict.nn import TensorDictModuleBase

from hrm_torchrl.astar import MOVES, astar, goal_distances
from hrm_torchrl.evaluation import summarize
from hrm_torchrl.mazes import AGENT, BUMP_PENALTY, CLOSED_DOOR, GOAL, SIZE, WALL
from hrm_torchrl.torchrl_env import ENV_IDS


def read_maze(observation):
    """``(agent, goal, free)`` of one maze observation (11x11 or 121 tokens of ASCII codes):
    the two cells and the [11, 11] mask of cells passable under the current doors; None for a
    terminal frame, where the agent stands on the goal and neither is drawn."""
    grid = np.asarray(observation).reshape(SIZE, SIZE)
    agent, goal = np.argwhere(grid == AGENT), np.argwhere(grid == GOAL)
    if len(agent) == 0 or len(goal) == 0:
        return None
    return tuple(agent[0]), tuple(goal[0]), (grid != WALL) & (grid != CLOSED_DOOR)


def oracle_action(observation) -> int:
    """The A* action for one maze observation (11x11 or 121 tokens of ASCII codes)."""
    maze = read_maze(observation)
    if maze is None:
        return 0
    agent, goal, free = maze
    path = astar(free, agent, goal)
    if path is None:
        # No path under the current doors: bump into a wall or closed door, i.e. wait.
        for action, (dr, dc) in enumerate(MOVES):
            r, c = agent[0] + dr, agent[1] + dc
            if not (0 <= r < SIZE and 0 <= c < SIZE) or not free[r, c]:
                return action
        return 0
    step = (path[1][0] - agent[0], path[1][1] - agent[1])
    return MOVES.index(step)


def optimal_actions(observation) -> tuple[np.ndarray, int]:
    """Every action on a shortest path to the goal under the current doors, for one maze
    observation (11x11 or 121 tokens): ``(actions, distance)``, ``actions`` a [4] bool mask and
    ``distance`` the steps left. Where no path exists (a closed door blocks them all, or the
    frame is terminal) the mask is all False and the distance -1: any wait is as good.
    """
    values, distance = optimal_values(observation, gamma=0.5)  # any gamma in (0, 1) ranks alike
    return (values == values.max()) if distance >= 0 else np.zeros(len(MOVES), bool), distance


def optimal_values(observation, gamma: float, bump_reward: float = BUMP_PENALTY,
                   goal_reward: float = 1.0) -> tuple[np.ndarray, int]:
    """The optimal action values Q*(s, .) for one maze observation (11x11 or 121 tokens), as if
    the doors stayed as they are: ``(values, distance)``, ``values`` [4] float32. The mazes' reward
    is ``goal_reward`` on reaching the goal and ``bump_reward`` for a move into a wall or closed
    door (the agent stays), so a move onto a cell d steps from the goal is worth
    ``goal_reward * gamma**d`` and a bump ``bump_reward + goal_reward * gamma**distance``. Where no
    path exists the values are NaN and the distance -1, as in ``optimal_actions``.
    """
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma must lie in (0, 1], got {gamma}")
    values = np.full(len(MOVES), np.nan, np.float32)
    maze = read_maze(observation)
    if maze is None:
        return values, -1
    agent, goal, free = maze
    distance = goal_distances(free, goal)
    here = int(distance[agent])
    if here < 0:
        return values, -1
    for action, (dr, dc) in enumerate(MOVES):
        r, c = agent[0] + dr, agent[1] + dc
        inside = 0 <= r < SIZE and 0 <= c < SIZE and distance[r, c] >= 0
        values[action] = (goal_reward * gamma ** distance[r, c] if inside
                          else bump_reward + goal_reward * gamma ** here)
    return values, here


class OraclePolicy(TensorDictModuleBase):
    """The A* oracle as a TorchRL policy: reads ``"observation"`` ([..., 121] tokens), writes a
    one-hot ``"action"`` ([..., 4]), as the mazes' TorchRL envs expect."""

    def __init__(self, in_key="observation", out_key="action"):
        super().__init__()
        self.in_keys, self.out_keys = [in_key], [out_key]

    def forward(self, tensordict):
        obs = tensordict.get(self.in_keys[0])
        flat = obs.reshape(-1, obs.shape[-1]).cpu().numpy()
        actions = torch.tensor([oracle_action(o) for o in flat], device=obs.device)
        one_hot = torch.nn.functional.one_hot(actions, 4).reshape(*obs.shape[:-1], 4)
        tensordict.set(self.out_keys[0], one_hot)
        return tensordict


def episode_stats(env: gym.Env, policy, episodes: int, seed: int) -> dict:
    """Runs ``episodes`` episodes, episode k from ``reset(seed=seed + k)``; ``policy`` maps an
    observation to an action. Failures count as the step limit in the mean length."""
    lengths, successes, returns = [], [], []
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        total, done, steps, success = 0.0, False, 0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            total += reward
            steps += 1
            done = terminated or truncated
            success = terminated
        lengths.append(steps)
        successes.append(success)
        returns.append(total)
    scores = {"success": np.array(successes), "length": np.array(lengths),
              "episode_return": np.array(returns)}
    return {"episodes": episodes, **summarize(scores)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--env", choices=sorted(ENV_IDS), nargs="*", default=sorted(ENV_IDS))
    args = parser.parse_args(argv)
    import hrm_torchrl  # noqa: F401  (registers the gymnasium ids)

    results = {}
    for name in args.env:
        env = gym.make(ENV_IDS[name])
        results[name] = episode_stats(env, oracle_action, args.episodes, args.seed)
        env.close()
        print(json.dumps({"env": name, **results[name]}))
    return results


if __name__ == "__main__":
    main()
