"""Our pieces in the shape of TorchRL's "Recurrent DQN" tutorial: the gymnasium maze through
GymEnv(id) under ParallelEnv, a user's own encoder and head around the HRM's recurrent core
(HRMModule, as the tutorial puts LSTMModule between its encoder and head), Collector, DQNLoss
and SoftUpdate, a few hundred frames."""

import torch
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.collectors import Collector
from torchrl.envs import Compose, GymEnv, InitTracker, ParallelEnv, StepCounter, TransformedEnv
from torchrl.envs.utils import check_env_specs
from torchrl.modules import EGreedyModule, QValueModule
from torchrl.objectives import DQNLoss, SoftUpdate

from hrm_torchrl import HRMConfig, HRMModule  # importing hrm_torchrl registers the gymnasium ids

HIDDEN = 16


def make_gym_env():  # a spawned worker imports this module, and with it hrm_torchrl
    return GymEnv("HRM-DynamicMaze-v0")


class GridEncoder(nn.Module):
    """A user's encoder: the [11, 11] grid of ASCII codes -> one vector per cell."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(128, HIDDEN)

    def forward(self, grid):
        return self.embed(grid.long().flatten(-2))


def test_recurrent_dqn_tutorial_shape():
    torch.manual_seed(0)
    config = HRMConfig.cpu(hidden=HIDDEN, patch=1, positions="rope", grid_shape=None, segments=2)
    core = HRMModule(config, in_key="embedding", out_key="features")
    env = TransformedEnv(ParallelEnv(2, make_gym_env),
                         Compose(StepCounter(), InitTracker(), core.make_tensordict_primer()))
    check_env_specs(env)
    assert env.observation_spec["observation"].shape[-2:] == (11, 11)
    encoder = TensorDictModule(GridEncoder(), ["observation"], ["embedding"])
    head = TensorDictModule(nn.Linear(HIDDEN, 4), ["features"], ["action_value"])
    qvalue = QValueModule(spec=env.action_spec_unbatched)
    actor = TensorDictSequential(encoder, core, head, qvalue)
    policy = TensorDictSequential(actor, EGreedyModule(env.action_spec_unbatched,
                                                       annealing_num_steps=1_000))
    collector = Collector(env, policy, frames_per_batch=64, total_frames=256)
    loss = DQNLoss(actor, action_space=env.action_spec_unbatched, delay_value=True)
    loss.make_value_estimator(gamma=0.95)
    updater = SoftUpdate(loss, eps=0.95)
    optim = torch.optim.Adam(loss.parameters(), lr=1e-3)
    frames = 0
    try:
        for data in collector:  # [2 envs, 32 steps]
            frames += data.numel()
            # the carried z travels: the root state at t+1 is what the core wrote at t
            within = ~data["next", "done"][:, :-1].squeeze(-1)
            torch.testing.assert_close(data["z_H"][:, 1:][within], data["next", "z_H"][:, :-1][within])
            assert not torch.equal(data["z_H"][:, 1:][within], torch.zeros_like(data["z_H"][:, 1:][within]))
            value = loss(data.reshape(-1))["loss"]
            optim.zero_grad()
            value.backward()
            optim.step()
            updater.step()
            collector.update_policy_weights_()
    finally:
        collector.shutdown()  # closes the env too
    assert frames == 256 and torch.isfinite(value)
