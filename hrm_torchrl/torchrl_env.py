"""The mazes as one batched TorchRL env: N mazes stepped in one process, one tensordict a step.

TorchRL's GymEnv costs about 0.5 ms a step against NetHack's ~0.07 ms, and SerialEnv does not
amortize it (shared/STACK.md). ``MazeEnv`` steps its N mazes in a plain loop and writes numpy
buffers once, so the per-step TorchRL cost is paid once per batch, not once per maze.
"""

from __future__ import annotations

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, OneHot, Unbounded
from torchrl.envs import Compose, EnvBase, InitTracker, RewardSum, StepCounter, TransformedEnv

# The mazes by name, with their gymnasium ids (registered when hrm_torchrl is imported).
ENV_IDS = {"FourRoomsDoors": "HRM-FourRoomsDoors-v0", "DynamicMaze": "HRM-DynamicMaze-v0"}
MAZES = tuple(ENV_IDS)


def _maze_class(name: str):
    from hrm_torchrl import mazes

    if name not in MAZES:
        raise ValueError(f"unknown maze {name!r}; choose one of {list(MAZES)}")
    return getattr(mazes, name)


class MazeEnv(EnvBase):
    """``num_envs`` mazes of one kind as a TorchRL env of batch size ``[num_envs]``.

    Keys: ``"observation"`` (uint8, ``[num_envs, 121]``, the 11x11 grid row by row),
    ``"env_changed"`` (bool, ``[num_envs, 1]``: a door changed on the step that produced this
    observation), one-hot ``"action"`` ``[num_envs, 4]`` (0 north, 1 east, 2 south, 3 west),
    ``"reward"``, ``"done"``, ``"terminated"`` (goal reached), ``"truncated"`` (step limit).

    Args:
        name: ``"FourRoomsDoors"`` or ``"DynamicMaze"``.
        num_envs: mazes stepped together.
        seed: maze i is first reset with seed ``seed + i``; later resets continue its own stream.
        device: where the tensordicts go (the mazes run on the CPU).
        **maze_kwargs: passed to every maze (``p_change``, ``n_walls``, ...).

    Examples:
        >>> from hrm_torchrl import MazeEnv
        >>> env = MazeEnv("FourRoomsDoors", num_envs=4, seed=0)
        >>> # finished mazes reset in place; by default rollout() stops when the first one finishes
        >>> env.rollout(3, break_when_any_done=False)["next", "observation"].shape
        torch.Size([4, 3, 121])
    """

    def __init__(self, name: str = "FourRoomsDoors", num_envs: int = 1, seed: int | None = None,
                 device="cpu", **maze_kwargs):
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device} asked for, but torch sees no CUDA device")
        cls = _maze_class(name)
        super().__init__(device=device, batch_size=torch.Size([num_envs]))
        self.name = name
        self.mazes = [cls(**maze_kwargs) for _ in range(num_envs)]
        self._seeds = [None] * num_envs
        self._obs = np.zeros((num_envs, 121), np.uint8)
        shape = (num_envs,)
        self.observation_spec = Composite(
            observation=Bounded(0, 127, (*shape, 121), dtype=torch.uint8, device=device),
            env_changed=Categorical(2, (*shape, 1), dtype=torch.bool, device=device),
            shape=shape,
            device=device,
        )
        self.action_spec = OneHot(4, (*shape, 4), dtype=torch.long, device=device)
        self.reward_spec = Unbounded((*shape, 1), device=device)
        self.done_spec = Composite(
            {key: Categorical(2, (*shape, 1), dtype=torch.bool, device=device)
             for key in ("done", "terminated", "truncated")},
            shape=shape,
            device=device,
        )
        if seed is not None:
            self.set_seed(seed)

    def _set_seed(self, seed: int | None):
        self._seeds = [None if seed is None else seed + i for i in range(len(self.mazes))]

    def _tensordict(self, values: dict) -> TensorDictBase:
        return TensorDict(
            {key: torch.as_tensor(value) for key, value in values.items()},
            batch_size=self.batch_size,
        ).to(self.device)

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        mask = None if tensordict is None else tensordict.get("_reset", None)
        mask = np.ones(len(self.mazes), bool) if mask is None else mask.reshape(-1).cpu().numpy()
        for i in np.flatnonzero(mask):
            obs, _ = self.mazes[i].reset(seed=self._seeds[i])
            self._seeds[i] = None
            self._obs[i] = obs.reshape(-1)
        n = len(self.mazes)
        falses = np.zeros((n, 1), bool)
        return self._tensordict({
            "observation": self._obs.copy(),
            "env_changed": falses,
            "done": falses, "terminated": falses, "truncated": falses,
        })

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get("action")
        n = len(self.mazes)
        # index actions ([N]) would argmax to maze 0 alone, an all-zero row to north. A row with
        # several ones is QValueModule's answer to tied Q-values: the first of them is taken.
        if tuple(action.shape) != (n, 4) or not action.bool().any(-1).all():
            raise ValueError(f"MazeEnv: 'action' must be one-hot of shape [{n}, 4] (a 1 per maze: "
                             f"0 north, 1 east, 2 south, 3 west), got shape {tuple(action.shape)}"
                             + ("" if tuple(action.shape) != (n, 4) else " with an all-zero row"))
        actions = action.long().argmax(-1).reshape(-1).tolist()
        reward = np.zeros((n, 1), np.float32)
        terminated = np.zeros((n, 1), bool)
        truncated = np.zeros((n, 1), bool)
        changed = np.zeros((n, 1), bool)
        for i, (maze, action) in enumerate(zip(self.mazes, actions)):
            reward[i], terminated[i] = maze._advance(action)
            truncated[i] = not terminated[i] and maze.steps >= maze.max_steps
            changed[i] = maze.env_changed
            self._obs[i] = maze._observation().reshape(-1)
        return self._tensordict({
            "observation": self._obs.copy(),
            "env_changed": changed,
            "reward": reward,
            "done": terminated | truncated, "terminated": terminated, "truncated": truncated,
        })

    def close(self, *, raise_if_closed: bool = True):
        for maze in self.mazes:
            maze.close()
        super().close(raise_if_closed=raise_if_closed)


def make_env(name: str = "FourRoomsDoors", num_envs: int = 1, seed: int | None = None,
             device="cpu", primer=None, **maze_kwargs) -> TransformedEnv:
    """A batched maze env with ``StepCounter``, ``InitTracker`` and ``RewardSum``
    (``"episode_reward"``), and ``primer`` last when given: a recurrent policy's
    ``module.make_tensordict_primer()``, without which its state does not travel. Being a plain
    function of picklable arguments, ``functools.partial(make_env, ...)`` serves as the env
    factory of spawned collector workers.

    Examples:
        >>> from hrm_torchrl import HRMConfig, HRMQValueNet, make_env
        >>> net = HRMQValueNet(HRMConfig.cpu())
        >>> env = make_env("FourRoomsDoors", num_envs=2, seed=0, primer=net.make_tensordict_primer())
        >>> sorted(env.reset().keys())[:3]
        ['done', 'env_changed', 'episode_reward']
    """
    env = MazeEnv(name, num_envs=num_envs, seed=seed, device=device, **maze_kwargs)
    transforms = [StepCounter(), InitTracker(), RewardSum()]
    if primer is not None:
        transforms.append(primer.clone())  # a transform belongs to one env only
    return TransformedEnv(env, Compose(*transforms))
