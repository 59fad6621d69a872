"""hrm_torchrl.dqn and hrm_torchrl.deep_supervision: the config and its presets, the command line
mapped onto it, the builders, the networks' common interface, and deep supervision as a DQNLoss
(Double DQN included)."""

import dataclasses

import pytest
import torch
from torchrl.envs.utils import step_mdp
from torchrl.modules import QValueActor
from torchrl.objectives import DQNLoss

from hrm_torchrl import HRMConfig, make_env
from hrm_torchrl.deep_supervision import DeepSupervisionDQNLoss
from hrm_torchrl.dqn import (ConfigError, DQNConfig, config_from_changes, gradient_steps,
                             make_learner, make_network, parse_args)

TINY = dict(hidden=16, heads=2, H_layers=1, L_layers=1, H_cycles=1, L_cycles=1)


def from_flags(*flags):
    return config_from_changes(parse_args(list(flags))[0])


def test_flags_override_the_preset():
    cfg = from_flags("--preset", "paper", "--lr", "0.5", "--no-deep-supervision", "--device", "cpu")
    assert cfg.lr == 0.5 and cfg.deep_supervision is False and cfg.preset == "paper"
    assert cfg.batch_size == 256 and cfg.target_eps == 0.999 and cfg.workers == 5
    assert cfg.hrm == HRMConfig.paper()
    # the paper's algorithm: no relabeling, epsilon annealed over 300K optimizer steps
    assert cfg.hindsight == 0 and (cfg.eps_steps, cfg.eps_unit) == (300_000, "updates")
    cells = from_flags("--hrm", "patch=1", "--hrm", "hidden=32", "--hrm", "segments=3")
    assert (cells.hrm.patch, cells.hrm.hidden, cells.hrm.segments) == (1, 32, 3)
    assert cells.hrm.positions == "2d" and cells.hrm.H_layers == 1  # the rest: cpu's
    mlp = from_flags("--model", "mlp")
    assert mlp.carry == "none" and mlp.deep_supervision is False
    assert DQNConfig.cpu(model="mlp").carry == "none"
    # the config round-trips through config.json
    assert DQNConfig.from_dict(cells.to_dict()) == cells


def test_config_errors_name_their_field():
    with pytest.raises(ConfigError, match=r"^DQNConfig.batch_size must be an integer of at least 1"):
        DQNConfig.cpu(batch_size=0)
    with pytest.raises(ConfigError, match="DQNConfig.batch_size") as error:
        dataclasses.replace(DQNConfig.cpu(), batch_size=2.5)  # replace validates too
    assert error.value.field == "batch_size"
    with pytest.raises(ConfigError, match="DQNConfig.env 'Maze' is unknown"):
        DQNConfig.cpu(env="Maze")
    with pytest.raises(ConfigError, match="DQNConfig.preset 'gpu' is unknown"):
        DQNConfig.from_preset("gpu")
    with pytest.raises(ValueError, match="unknown DQNConfig fields \\['segments'\\]"):
        DQNConfig.from_dict({"segments": 2})
    with pytest.raises(ConfigError, match="DQNConfig.hrm must read the mazes' 11x11 grids"):
        DQNConfig.cpu(hrm=HRMConfig.cpu(grid_shape=(121, 1)))


def test_steps_per_frame_counts_deep_supervision_segments():
    assert DQNConfig.cpu().steps_per_frame == 16 / 1024
    assert DQNConfig.paper().steps_per_frame == 8 / 256


@pytest.mark.parametrize("model", ["hrm", "mlp", "lstm"])
def test_every_network_has_one_interface_and_compiles_to_the_same_values(model):
    cfg = DQNConfig.cpu(model=model, device="cpu")
    torch.manual_seed(0)
    eager, compiled = make_network(cfg), make_network(cfg)
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_modules()
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # checkpoints unchanged
    primer = eager.make_tensordict_primer()
    assert (primer is None) == (model == "mlp")
    groups = eager.param_groups(lr=1e-3, embedding_lr=1e-2, embedding_weight_decay=0.1)
    assert sum(len(g["params"]) for g in groups) == len(list(eager.parameters()))
    assert len(groups) == (2 if model == "hrm" else 1)
    env = make_env("FourRoomsDoors", num_envs=6, seed=0, primer=primer)
    data = env.rollout(4, break_when_any_done=False).reshape(-1).exclude("action_value")
    env.close()
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            q_eager = eager(data.clone())["action_value"]
            q_compiled = compiled(data.clone())["action_value"]
        torch.testing.assert_close(q_compiled, q_eager, atol=1e-5, rtol=1e-4)


def own_steps(cfg: DQNConfig, steps: int):
    """A network of ``cfg``, its greedy actor and 4 x ``steps`` of its own steps, flattened."""
    torch.manual_seed(0)
    net = make_network(cfg)
    env = make_env(cfg.env, num_envs=4, seed=0, primer=net.make_tensordict_primer())
    actor = QValueActor(net, spec=env.action_spec_unbatched)
    with torch.no_grad():
        data = env.rollout(steps, actor, break_when_any_done=False).reshape(-1)
    env.close()
    return net, actor, data


@pytest.fixture(scope="module")
def replayed():
    """A tiny Carry Z HRM (3 segments) and 4 x 6 of its own DynamicMaze steps, as replayed."""
    cfg = DQNConfig.cpu(hrm=HRMConfig.cpu(segments=3, **TINY), env="DynamicMaze", n_steps=1,
                        deep_supervision=True)
    net, _, data = own_steps(cfg, 6)
    data["next", "reward"] = torch.rand_like(data["next", "reward"])  # rewards that count
    return cfg, net, data.exclude("action_value", "chosen_action_value")


def perturbed_learner(cfg, net, double_dqn):
    learner = make_learner(net, make_env("DynamicMaze").action_spec_unbatched,
                           dataclasses.replace(cfg, double_dqn=double_dqn))
    torch.manual_seed(1)  # a target network unlike the online one, so that Double DQN tells
    for value in learner.loss.target_value_network_params.values(True, True):
        value.data.add_(torch.randn_like(value) * 0.3)
    return learner


def test_deep_supervision_target_reads_double_dqn(replayed):
    cfg, net, data = replayed
    plain = perturbed_learner(cfg, net, double_dqn=False)
    double = perturbed_learner(cfg, net, double_dqn=True)
    assert isinstance(double.loss, DeepSupervisionDQNLoss)
    target_plain, target_double = plain.loss.value_target(data), double.loss.value_target(data)
    # by hand: the next state as stored; the online network picks the action, the target one values it
    next_td = step_mdp(data.clone(), keep_other=False)
    with double.loss.target_value_network_params.to_module(double.actor):
        q_target = double.actor(next_td.clone())["action_value"]
    q_online = double.actor(next_td.clone())["action_value"]
    not_done = 1 - data["next", "terminated"].float().squeeze(-1)
    reward = data["next", "reward"].squeeze(-1)
    picked = q_target.gather(-1, q_online.argmax(-1, keepdim=True)).squeeze(-1)
    torch.testing.assert_close(target_double, reward + cfg.gamma * not_done * picked)
    torch.testing.assert_close(target_plain, reward + cfg.gamma * not_done * q_target.max(-1).values)
    assert not torch.allclose(target_plain, target_double)  # the flag changes the target


def test_deep_supervision_steps_once_per_segment_toward_one_target(replayed):
    cfg, net, data = replayed
    learner = perturbed_learner(cfg, net, double_dqn=False)
    target = learner.loss.value_target(data)
    before = [p.detach().clone() for p in net.parameters()]
    losses = list(gradient_steps(learner, data, cfg.grad_clip))
    assert len(losses) == 3 and all(torch.isfinite(loss) for loss in losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    # the first segment's loss is the squared error of its Q-values (from the carried state) to
    # the target computed before any step
    for p, value in zip(net.parameters(), before):
        p.data.copy_(value)
    first = next(net.supervision_segments(data))
    expected = ((first * data["action"]).sum(-1) - target).pow(2).mean()
    torch.testing.assert_close(losses[0], expected.detach())


def test_deep_supervision_forward_is_dqnloss_for_one_segment():
    """One segment and no carried state to tell them apart: loss(batch) is DQNLoss's loss, with
    and without Double DQN."""
    cfg = DQNConfig.cpu(hrm=HRMConfig.cpu(segments=1, **TINY), carry="reset", deep_supervision=True)
    _, actor, data = own_steps(cfg, 5)
    for double_dqn in (False, True):
        deep = DeepSupervisionDQNLoss(actor, loss_function="l2", delay_value=True, double_dqn=double_dqn)
        plain = DQNLoss(actor, loss_function="l2", delay_value=True, double_dqn=double_dqn)
        plain.target_value_network_params.update(deep.target_value_network_params.clone())
        for loss in (deep, plain):
            loss.make_value_estimator(gamma=0.9)
        torch.testing.assert_close(deep(data.clone())["loss"], plain(data.clone())["loss"])
    with pytest.raises(ValueError, match="supervision_segments"):
        DeepSupervisionDQNLoss(QValueActor(make_network(DQNConfig.cpu(model="mlp")),
                                           spec=make_env("FourRoomsDoors").action_spec_unbatched))
