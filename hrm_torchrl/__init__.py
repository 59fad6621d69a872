"""hrm_torchrl: the HRM-Agent (Dang & Rawlinson 2025) on TorchRL.

A Hierarchical Reasoning Model Q-network whose recurrent latent z = (z_H, z_L) is carried from one
environment step to the next as TensorDict recurrent state, and the paper's dynamic MiniHack mazes.
"""

import gymnasium as _gym

from hrm_torchrl.baselines import LSTMQValueNet, MLPQValueNet
from hrm_torchrl.config import HRMConfig
from hrm_torchrl.hindsight import HindsightRelabel
from hrm_torchrl.module import HRMModule, HRMQValueNet
from hrm_torchrl.multistep import MultiStep
from hrm_torchrl.runs import load_agent
from hrm_torchrl.torchrl_env import ENV_IDS, MAZES, MazeEnv, make_env

# Registered on import, so that spawned workers that import the package can gymnasium.make them.
for _name, _env_id in ENV_IDS.items():
    if _env_id not in _gym.registry:
        _gym.register(_env_id, entry_point=f"hrm_torchrl.mazes:{_name}")

__all__ = ["ENV_IDS", "HRMConfig", "HRMModule", "HRMQValueNet", "HindsightRelabel", "LSTMQValueNet", "MAZES",
           "MLPQValueNet", "MazeEnv", "MultiStep", "load_agent", "make_env"]
__version__ = "0.1.0"
