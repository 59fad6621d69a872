"""The MLP and DRQN baselines: shapes, the DRQN's carried (h, c) in a collector, Carry vs Reset,
one LSTM step per replayed frame inside DQNLoss, input errors."""

import pytest
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector
from torchrl.modules import QValueActor
from torchrl.objectives import DQNLoss

from hrm_torchrl import LSTMQValueNet, MLPQValueNet, make_env

STATE = ("recurrent_state_h", "recurrent_state_c")


def lstm_env(net, num_envs=4, seed=0):
    return make_env("FourRoomsDoors", num_envs=num_envs, seed=seed, p_change=0.3,
                    primer=net.make_tensordict_primer())


def test_mlp_q_values_depend_on_the_observation():
    torch.manual_seed(0)
    net = MLPQValueNet(4, hidden=32)
    env = make_env("DynamicMaze", num_envs=6, seed=0)
    data = env.rollout(3, QValueActor(net, spec=env.action_spec_unbatched))
    q = data["action_value"]
    assert q.shape == (6, 3, 4) and torch.isfinite(q).all()
    assert q.std(dim=(0, 1)).min() > 0  # different mazes, different Q-values


def test_lstm_state_travels_in_a_collector():
    torch.manual_seed(0)
    net = LSTMQValueNet(4, hidden=16)
    env = lstm_env(net)
    collector = Collector(env, QValueActor(net, spec=env.action_spec_unbatched),
                          frames_per_batch=4 * 50, total_frames=4 * 50)
    data = next(iter(collector))
    collector.shutdown()
    is_init = data["is_init"].squeeze(-1)
    assert is_init[:, 0].all()
    for key in STATE:
        continuing = ~is_init[:, 1:]
        assert continuing.sum() > 10
        torch.testing.assert_close(data[key][:, 1:][continuing], data["next", key][:, :-1][continuing])
        assert (data[key][is_init] == 0).all()
        assert data["next", key].abs().sum() > 0


def test_lstm_carry_uses_the_state_and_reset_ignores_it():
    torch.manual_seed(0)
    carry = LSTMQValueNet(4, hidden=16, carry="carry")
    reset = LSTMQValueNet(4, hidden=16, carry="reset")
    reset.load_state_dict(carry.state_dict())

    def td(state):
        return TensorDict({"observation": torch.full((3, 121), 46, dtype=torch.uint8),
                           "recurrent_state_h": state, "recurrent_state_c": state.clone(),
                           "is_init": torch.zeros(3, 1, dtype=torch.bool)}, [3])

    zeros, noise = torch.zeros(3, 1, 16), torch.randn(3, 1, 16)
    q = {name: [net(td(s))["action_value"] for s in (zeros, noise)]
         for name, net in (("carry", carry), ("reset", reset))}
    assert not torch.allclose(*q["carry"])
    torch.testing.assert_close(*q["reset"])
    torch.testing.assert_close(q["reset"][0], q["carry"][0])  # both start from zeros
    init = td(noise)
    init["is_init"][:] = True  # is_init restarts Carry from zeros
    torch.testing.assert_close(carry(init)["action_value"], q["carry"][0])
    untouched = td(noise)
    reset(untouched)
    assert not untouched["is_init"].any()  # Reset does not write the caller's is_init


@pytest.mark.parametrize("carry", ["carry", "reset"])
def test_lstm_loss_runs_one_step_per_replayed_frame(carry):
    # TorchRL losses switch LSTMModules to sequence mode; replayed frames are no sequence
    torch.manual_seed(0)
    net = LSTMQValueNet(4, hidden=16, carry=carry)
    env = lstm_env(net)
    actor = QValueActor(net, spec=env.action_spec_unbatched)
    with torch.no_grad():
        data = env.rollout(30, actor, break_when_any_done=False).reshape(-1)
    loss = DQNLoss(actor, loss_function="l2", delay_value=True)
    loss.make_value_estimator(gamma=0.95)
    shuffled = data[torch.randperm(len(data))]
    torch.testing.assert_close(loss(shuffled.clone())["loss"], loss(data.clone())["loss"])
    loss(data.clone())["loss"].backward()
    grad_hh = net.lstm.lstm.weight_hh_l0.grad
    assert (grad_hh.abs().sum() > 0) == (carry == "carry")  # Reset never reads h


def test_bad_input_raises_clear_errors():
    mlp, lstm = MLPQValueNet(4, hidden=8), LSTMQValueNet(4, hidden=8)
    obs = torch.zeros(2, 121, dtype=torch.uint8)
    with pytest.raises(ValueError, match="must have 121 tokens"):
        mlp(TensorDict({"observation": obs[:, :100]}, [2]))
    with pytest.raises(ValueError, match="integer tokens"):
        mlp(TensorDict({"observation": obs.float()}, [2]))
    with pytest.raises(ValueError, match=r"must lie in \[0, 128\)"):
        mlp(TensorDict({"observation": obs.long() + 200}, [2]))
    with pytest.raises(ValueError, match="no 'recurrent_state_h' entry.*make_tensordict_primer"):
        lstm(TensorDict({"observation": obs}, [2]))
    with pytest.raises(ValueError, match="no 'is_init' entry.*InitTracker"):
        lstm(TensorDict({"observation": obs, "recurrent_state_h": torch.zeros(2, 1, 8),
                         "recurrent_state_c": torch.zeros(2, 1, 8)}, [2]))
    with pytest.raises(ValueError, match="unknown carry mode 'keep'"):
        LSTMQValueNet(4, carry="keep")
    with pytest.raises(ValueError, match="hidden must be a positive integer"):
        MLPQValueNet(4, hidden=0)
