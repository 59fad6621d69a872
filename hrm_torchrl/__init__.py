"""hrm_torchrl: the HRM-Agent (Dang & Rawlinson 2025) on TorchRL.

A Hierarchical Reasoning Model Q-network whose recurrent latent z = (z_H, z_L) is carried from one
environment step to the next as TensorDict recurrent state, and the paper's dynamic MiniHack mazes.
"""

import gymnasium as _gym

from hrm_torchrl.config import HRMConfig
from hrm_torchrl.module import HRMQValueNet
from hrm_torchrl.torchrl_env import MAZES, MazeEnv, make_env

# Registered on import, so that spawned workers that import the package can gymnasium.make them.
for _name, _entry in (("HRM-FourRoomsDoors-v0", "FourRoomsDoors"), ("HRM-DynamicMaze-v0", "DynamicMaze")):
    if _name not in _gym.registry:
        _gym.register(_name, entry_point=f"hrm_torchrl.mazes:{_entry}")

__all__ = ["HRMConfig", "HRMQValueNet", "MAZES", "MazeEnv", "make_env"]
__version__ = "0.1.0"
