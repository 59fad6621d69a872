"""hrm_torchrl: the HRM-Agent (Dang & Rawlinson 2025) on TorchRL.

A Hierarchical Reasoning Model Q-network whose recurrent latent z = (z_H, z_L) is carried from one
environment step to the next as TensorDict recurrent state.
"""

from hrm_torchrl.config import HRMConfig
from hrm_torchrl.module import HRMQValueNet

__all__ = ["HRMConfig", "HRMQValueNet"]
__version__ = "0.1.0"
