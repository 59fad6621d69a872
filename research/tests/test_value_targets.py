"""The research value targets: AdvantageLearningEstimator (DQNLoss trains toward the TD target
minus alpha times the target network's action gap at the replayed state, carried recurrent state
included) and OracleValueEstimator (the A* oracle's exact Q*)."""

import numpy as np
import pytest
import torch
from torchrl.envs.utils import step_mdp
from torchrl.modules import QValueActor
from torchrl.objectives import DQNLoss

import hrm_torchrl
from hrm_torchrl import HRMConfig, HRMQValueNet, make_env
from hrm_torchrl.mazes import AGENT, CLOSED_DOOR, GOAL, WALL
from hrm_torchrl.oracle import optimal_values
from research.value_targets import AdvantageLearningEstimator, OracleValueEstimator

TINY = dict(hidden=16, heads=2, H_layers=1, L_layers=1, H_cycles=1, L_cycles=2, segments=2)
GAMMA = 0.9


@pytest.fixture(scope="module")
def replayed():
    """A tiny Carry Z HRM's actor and 4 x 12 DynamicMaze steps of its own, carried z included,
    as a replay would hold them (n-step windows of 1-3 steps)."""
    torch.manual_seed(0)
    net = HRMQValueNet(HRMConfig.cpu(**TINY), carry="carry", carry_state="full")
    env = make_env("DynamicMaze", num_envs=4, seed=0, primer=net.make_tensordict_primer())
    actor = QValueActor(net, spec=env.action_spec_unbatched)
    with torch.no_grad():
        data = env.rollout(12, actor, break_when_any_done=False).reshape(-1)
    env.close()
    data["steps_to_next_obs"] = torch.randint(1, 4, (data.numel(), 1))
    data["next", "reward"] = torch.rand_like(data["next", "reward"])  # rewards that count
    return actor, data


def dqn_loss(actor, alpha):
    loss = DQNLoss(actor, loss_function="l2", delay_value=True)
    if alpha is not None:
        loss.make_value_estimator(
            AdvantageLearningEstimator(gamma=GAMMA, value_network=actor, alpha=alpha))
    else:
        loss.make_value_estimator(gamma=GAMMA)
    with torch.no_grad():  # a target network that differs from the online one
        for p in loss.target_value_network_params.values(True, True):
            p.add_(0.05 * torch.randn_like(p))
    return loss


def q_values(actor, params, td):
    with torch.no_grad(), params.to_module(actor):
        return actor(td.clone()).get("action_value")


def test_the_loss_is_the_squared_error_to_td_minus_alpha_times_the_gap(replayed):
    actor, data = replayed
    torch.manual_seed(1)
    loss = dqn_loss(actor, alpha=0.7)
    online, target = loss.value_network_params, loss.target_value_network_params
    action = data["action"].float()
    q, q_target = q_values(actor, online, data), q_values(actor, target, data)
    q_next = q_values(actor, target, step_mdp(data, keep_other=False))
    not_ended = (~data["next", "terminated"]).float().squeeze(-1)
    discount = GAMMA ** data["steps_to_next_obs"].squeeze(-1).float()
    td = data["next", "reward"].squeeze(-1) + discount * not_ended * q_next.max(-1).values
    gap = q_target.max(-1).values - (q_target * action).sum(-1)
    assert (gap > 1e-4).sum() > 10  # the taken action is often not the target's greedy one
    expected = ((q * action).sum(-1) - (td - 0.7 * gap)).pow(2).mean()
    torch.testing.assert_close(loss(data.clone())["loss"], expected, rtol=1e-5, atol=1e-6)


def test_alpha_zero_is_torchrls_td0(replayed):
    actor, data = replayed
    torch.manual_seed(2)
    plain = dqn_loss(actor, alpha=None)(data.clone())["loss"]
    torch.manual_seed(2)  # the same target network
    zero = dqn_loss(actor, alpha=0.0)(data.clone())["loss"]
    torch.manual_seed(2)
    wide = dqn_loss(actor, alpha=0.9)(data.clone())["loss"]
    torch.testing.assert_close(zero, plain)
    assert not torch.isclose(wide, plain)


def test_bad_input_raises_clear_errors(replayed):
    actor, _ = replayed
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\), got 1.0"):
        AdvantageLearningEstimator(gamma=GAMMA, value_network=actor, alpha=1.0)
    with pytest.raises(ValueError, match="needs the value_network"):
        AdvantageLearningEstimator(gamma=GAMMA, value_network=None)


def test_oracle_value_estimator_gives_dqn_loss_the_exact_target():
    from torchrl.modules import QValueActor
    from torchrl.objectives import DQNLoss

    torch.manual_seed(0)
    env = hrm_torchrl.make_env("DynamicMaze", num_envs=8, seed=0)
    actor = QValueActor(hrm_torchrl.MLPQValueNet(4), spec=env.action_spec_unbatched)
    loss = DQNLoss(actor, loss_function="l2", delay_value=False)
    loss.make_value_estimator(OracleValueEstimator(gamma=0.9))
    with torch.no_grad():
        data = env.rollout(6, actor, break_when_any_done=False).reshape(-1)
    env.close()
    q = actor(data.clone())["action_value"].detach()
    taken = data["action"].argmax(-1)
    values = [optimal_values(o, 0.9)[0][a] for o, a in zip(data["observation"].numpy(), taken)]
    target = torch.tensor(values)
    predicted = q.gather(-1, taken[:, None]).squeeze(-1)
    target = torch.where(target.isnan(), predicted, target)  # no path: no loss
    expected = (predicted - target).pow(2).mean()
    assert torch.isclose(loss(data)["loss"], expected, atol=1e-6)
    # a maze whose closed door blocks every path: the target is the prediction itself
    grid = np.full((11, 11), ord("."), np.uint8)
    grid[0, 0], grid[0, 1], grid[1, 0], grid[5, 5] = AGENT, CLOSED_DOOR, WALL, GOAL
    blocked = data[:1].clone()
    blocked["observation"] = torch.from_numpy(grid.reshape(1, -1)).to(blocked["observation"].dtype)
    blocked["action_value"] = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    blocked["action"] = torch.tensor([[False, False, True, False]])
    assert loss.value_estimator.value_estimate(blocked).item() == pytest.approx(0.3)
    assert loss.value_estimator(blocked.clone())["value_target"].item() == pytest.approx(0.3)
    with pytest.raises(KeyError, match="needs the network's 'action_value'"):
        loss.value_estimator.value_estimate(data.exclude("action_value"))
    with pytest.raises(ValueError, match="gamma must lie in"):
        OracleValueEstimator(gamma=1.5)
