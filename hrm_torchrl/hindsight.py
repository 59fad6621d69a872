"""Hindsight goal relabeling (Andrychowicz et al. 2017, "future" strategy) for grid observations
that draw their goal as a token, as the mazes' ``>``.

A collector postproc in the manner of :class:`torchrl.data.postprocs.MultiStep`: it takes collected
``[*batch, time]`` frames and returns them together with relabeled copies, in which the goal is a
cell the agent reached later in the same episode. Relabeled rows stay valid trajectories (one goal
per stretch of frames, terminated where it is reached), so n-step returns can be computed on them
afterwards, with :class:`hrm_torchrl.multistep.MultiStep`.

Why not :class:`torchrl.data.HERReplayBuffer`: it relabels single transitions at sample time from
a goal vector key and needs episodes stored contiguously. Here the goal lives in the observation
tokens, a collector interleaves the windows of many mazes in storage, ``terminated`` must change
with the goal, and n-step returns must see the new goal.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torch import nn

from hrm_torchrl.mazes import CODES


class HindsightRelabel(nn.Module):
    """Adds ``copies`` relabeled copies of every collected row of frames.

    In each copy, every row is cut into stretches, and the goal of a stretch is the cell the agent
    occupies after its last frame. Each frame ends a stretch with probability 1 / (frames left in
    its episode within the row, itself included), so the last frame of an episode always does,
    and for every frame the end of its stretch is uniform over its own future: each frame's goal
    is drawn as in HER's "future" strategy, while a stretch of frames shares one goal. Then, in the
    observation and in ``("next", observation)``, the old goal token becomes floor and the new
    goal cell shows the goal token (unless the agent stands on it); the reward is the original
    reward without the original goal's ``goal_reward``, plus ``goal_reward`` where the agent's
    next cell is the new goal, so bump penalties are kept; ``terminated`` and ``done`` are set
    exactly there, ``truncated`` nowhere. A stretch ends at every goal visit, so a stretch never
    crosses a terminal frame and n-step windows computed afterwards stay inside one goal.

    Frames that cannot be relabeled are kept but marked invalid in ``mask_key``: those whose
    stretch's goal is a door cell (a cell showing an open or closed door anywhere in the row),
    and those where the agent already stands on the goal. Original frames are valid (or keep the
    mask they came with). Store ``data[data[mask_key]]``.

    Other entries are copied unchanged, in particular the recurrent state carried in the original
    episode (``z_H``/``z_L``, ``(h, c)``): a relabeled frame's state was computed for the original
    goal. This is the same staleness as R2D2's stored state; the policy has to act well from it.

    Args:
        copies: relabeled copies per frame (0 returns the input unchanged, with its mask).

    Keyword Args:
        observation_key: the token observation, ``[*batch, time, cells]`` integers (flattened
            grid); ``("next", observation_key)`` is rewritten too. Defaults to ``"observation"``.
        reward_key, done_key, terminated_key, truncated_key: entries under ``"next"``.
        mask_key: where validity is written; defaults to ``("collector", "mask")``, the key that
            TorchRL collectors use for valid frames.
        agent, goal, floor: token codes (defaults: the mazes' ``@``, ``>``, ``.``).
        doors: token codes of door cells (defaults: ``+`` and ``'``).
        goal_reward: the environment's reward for reaching the goal (1.0 in the mazes).
        generator: a :class:`torch.Generator` for the random cuts (default: torch's global one).

    Returns:
        ``[(copies + 1) * prod(batch), time]``: the original rows first, then each copy.

    Examples:
        >>> import torch
        >>> from hrm_torchrl import HindsightRelabel, make_env
        >>> env = make_env("FourRoomsDoors", num_envs=4, seed=0)
        >>> data = env.rollout(16, break_when_any_done=False)  # [4 mazes, 16 steps]
        >>> out = HindsightRelabel(copies=1)(data)
        >>> out.shape
        torch.Size([8, 16])
        >>> bool(out["collector", "mask"][:4].all())
        True
        >>> kept = out[out["collector", "mask"]]  # what goes into the replay buffer
    """

    def __init__(
        self,
        copies: int = 1,
        *,
        observation_key="observation",
        reward_key="reward",
        done_key="done",
        terminated_key="terminated",
        truncated_key="truncated",
        mask_key=("collector", "mask"),
        agent: int = CODES["agent"],
        goal: int = CODES["goal"],
        floor: int = CODES["floor"],
        doors: tuple[int, ...] = (CODES["closed_door"], CODES["open_door"]),
        goal_reward: float = 1.0,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if not isinstance(copies, int) or isinstance(copies, bool) or copies < 0:
            raise ValueError(f"copies must be a non-negative integer, got {copies!r}")
        self.copies = copies
        self.observation_key = observation_key
        self.reward_key, self.done_key = reward_key, done_key
        self.terminated_key, self.truncated_key = terminated_key, truncated_key
        self.mask_key = mask_key
        self.agent, self.goal, self.floor = agent, goal, floor
        self.doors = tuple(doors)
        self.goal_reward = goal_reward
        self.generator = generator

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if tensordict.ndim < 2:
            raise ValueError(
                "HindsightRelabel needs frames shaped [*batch, time] (a collector batch or a "
                f"rollout), got batch size {tuple(tensordict.batch_size)}"
            )
        data = tensordict.reshape(-1, tensordict.shape[-1])
        n, t = data.shape
        mask = data.get(self.mask_key, None)
        mask = torch.ones(n, t, dtype=torch.bool) if mask is None else mask.reshape(n, t).bool()
        data = data.clone(False)
        data.set(self.mask_key, mask)
        if self.copies == 0:
            return data

        obs = self._tokens(data, self.observation_key)
        next_obs = self._tokens(data, ("next", self.observation_key))
        agent, next_agent = self._agent_cells(obs), self._agent_cells(next_obs)
        door = ((obs.unsqueeze(-1) == obs.new_tensor(self.doors)).any(-1).any(1)
                | (next_obs.unsqueeze(-1) == obs.new_tensor(self.doors)).any(-1).any(1))
        orig_done = data.get(("next", self.done_key)).reshape(n, t).bool()
        orig_terminated = data.get(("next", self.terminated_key)).reshape(n, t).bool()
        # Frames left in each frame's episode within this window, itself included: the last
        # frame of an episode (done) or of the window closes it.
        closes = orig_done.clone()
        closes[:, -1] = True
        episode_end = _next_true_index(closes)
        remaining = (episode_end - torch.arange(t)).float() + 1

        copies = [data]
        for _ in range(self.copies):
            u = torch.rand(n, t, generator=self.generator)
            cut = u * remaining < 1  # P = 1 / remaining: the stretch end is uniform (docstring)
            stretch_end = _next_true_index(cut)
            goal = next_agent.gather(1, stretch_end)  # [n, t] goal cell of each frame's stretch
            hit = next_agent == goal
            valid = mask & (agent != goal) & ~door.gather(1, goal)
            copy = data.clone()
            for key, tokens in ((self.observation_key, obs), (("next", self.observation_key), next_obs)):
                copy.set(key, self._draw_goal(tokens, goal).reshape(copy.get(key).shape))
            reward = data.get(("next", self.reward_key))
            new_reward = (reward.reshape(n, t) + self.goal_reward * (hit.float() - orig_terminated.float()))
            copy.set(("next", self.reward_key), new_reward.reshape(reward.shape).to(reward.dtype))
            for key, value in ((self.terminated_key, hit), (self.done_key, hit),
                               (self.truncated_key, torch.zeros_like(hit))):
                old = data.get(("next", key), None)
                if old is not None:
                    copy.set(("next", key), value.reshape(old.shape))
            copy.set(self.mask_key, valid)
            copies.append(copy)
        return torch.cat(copies, 0)

    def _tokens(self, data: TensorDictBase, key) -> torch.Tensor:
        tokens = data.get(key, None)
        if tokens is None:
            raise ValueError(f"HindsightRelabel: the frames have no {key!r} entry")
        if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise ValueError(f"HindsightRelabel: {key!r} must hold integer tokens, got {tokens.dtype}")
        return tokens.reshape(*data.shape, -1)

    def _agent_cells(self, tokens: torch.Tensor) -> torch.Tensor:
        is_agent = tokens == self.agent
        counts = is_agent.sum(-1)
        if not (counts == 1).all():
            raise ValueError(
                f"HindsightRelabel: every observation must show the agent token {self.agent} "
                f"exactly once; found observations with {sorted(set(counts.unique().tolist()) - {1})}"
            )
        return is_agent.int().argmax(-1)

    def _draw_goal(self, tokens: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """Old goal token -> floor; the cell ``goal`` -> goal token, unless the agent is on it."""
        out = torch.where(tokens == self.goal, torch.full_like(tokens, self.floor), tokens)
        at_goal = torch.nn.functional.one_hot(goal, tokens.shape[-1]).bool() & (out != self.agent)
        return torch.where(at_goal, torch.full_like(out, self.goal), out)


def _next_true_index(flags: torch.Tensor) -> torch.Tensor:
    """For ``flags`` [n, t] whose last column is True: the index of the first True at or after
    each position."""
    t = flags.shape[-1]
    index = torch.where(flags, torch.arange(t), torch.full_like(flags, t, dtype=torch.long))
    return index.flip(-1).cummin(-1).values.flip(-1)
