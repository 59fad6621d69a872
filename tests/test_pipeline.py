"""HRMQValueNet composed with TorchRL: collectors carry z, and QValueActor + EGreedyModule +
DQNLoss + SoftUpdate train on what the policy collected."""

import functools

import torch
from tensordict.nn import TensorDictSequential
from torchrl.collectors import Collector, MultiSyncCollector
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.modules import EGreedyModule, QValueActor
from torchrl.objectives import DQNLoss, SoftUpdate

from hrm_torchrl import HRMConfig, HRMQValueNet, make_env

TINY = dict(hidden=16, heads=2, H_layers=1, L_layers=1, H_cycles=1, L_cycles=2, segments=2)


def tiny_net(**kwargs):
    torch.manual_seed(0)
    return HRMQValueNet(HRMConfig.cpu(**TINY), **kwargs)


def env_factory(num_envs=4, seed=0):
    """Module-level factory (picklable for spawned collector workers)."""
    env = make_env("FourRoomsDoors", num_envs=num_envs, seed=seed, p_change=0.3)
    return env.append_transform(tiny_net().make_tensordict_primer())


def check_state_travels(data, net):
    """Within an episode the root z at t+1 is ("next", z) at t; at an episode start it is the
    primer's zero state, and the module starts from H_init/L_init there."""
    is_init = data["is_init"].squeeze(-1)
    assert is_init[:, 0].all()  # every maze starts an episode in the first batch
    for key in ("z_H", "z_L"):
        root, nxt = data[key], data["next", key]
        continuing = ~is_init[:, 1:]
        assert continuing.sum() > 10
        torch.testing.assert_close(root[:, 1:][continuing], nxt[:, :-1][continuing])
        assert (root[is_init] == 0).all()
        assert nxt[~is_init].abs().sum() > 0
    starts = data[is_init][:8].clone()
    reset_net = HRMQValueNet(net.config, carry="reset")
    reset_net.load_state_dict(net.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(
            reset_net(starts.clone())["action_value"], net(starts.clone())["action_value"]
        )


def test_state_travels_in_a_collector():
    net = tiny_net()
    env = env_factory()
    actor, _ = make_policy(net, env)
    collector = Collector(env, actor, frames_per_batch=4 * 60, total_frames=4 * 60)
    data = next(iter(collector))
    collector.shutdown()
    assert data.batch_size == (4, 60)
    check_state_travels(data, net)


def test_state_travels_in_env_rollout_with_full_carry():
    net = tiny_net(carry_state="full")
    env = make_env("DynamicMaze", num_envs=3, seed=1).append_transform(
        net.make_tensordict_primer()
    )
    actor, policy = make_policy(net, env)
    with torch.no_grad():
        data = env.rollout(50, policy, break_when_any_done=False)
    assert data["z_H"].shape == (3, 50, 37, 16)  # 6x6 patches + the readout token
    check_state_travels(data, net)


def make_policy(net, env):
    actor = QValueActor(net, spec=env.action_spec)
    explore = EGreedyModule(env.action_spec, eps_init=1.0, eps_end=0.1, annealing_num_steps=1000)
    return actor, TensorDictSequential(actor, explore)


def test_dqn_update_on_collected_data():
    net = tiny_net()
    env = env_factory()
    actor, policy = make_policy(net, env)
    collector = Collector(env, policy, frames_per_batch=200, total_frames=400)
    buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(1000), batch_size=64)
    loss = DQNLoss(actor, loss_function="l2", delay_value=True)
    loss.make_value_estimator(gamma=0.95)
    target = SoftUpdate(loss, eps=0.999)
    optim = torch.optim.Adam(loss.parameters(), lr=1e-3)
    target_before = [p.clone() for p in loss.target_value_network_params.values(True, True)]
    for data in collector:
        buffer.extend(data.reshape(-1))
        batch = buffer.sample()
        assert ("next", "z_H") in batch.keys(True) and "z_H" in batch.keys()
        losses = loss(batch)
        assert torch.isfinite(losses["loss"])
        optim.zero_grad()
        losses["loss"].backward()
        grads = [p.grad for p in net.core.L_level.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)
        optim.step()
        target.step()
        collector.update_policy_weights_()
        policy[1].step(data.numel())
    collector.shutdown()
    target_after = list(loss.target_value_network_params.values(True, True))
    moved = [not torch.equal(a, b) for a, b in zip(target_before, target_after)]
    assert any(moved)
    assert policy[1].eps < 1.0


def test_state_travels_in_a_multisync_collector():
    net = tiny_net()
    actor, policy = make_policy(net, env_factory())
    collector = MultiSyncCollector(
        [env_factory, env_factory],
        policy,
        frames_per_batch=2 * 4 * 40,
        total_frames=2 * 4 * 40,
    )
    data = next(iter(collector))
    collector.shutdown()
    data = data.reshape(-1, data.shape[-1])  # [workers, mazes, time] -> [workers * mazes, time]
    check_state_travels(data, net)


def test_state_travels_in_the_parallel_collector_acting_here():
    """dqn.make_collector's "parallel": the workers step their mazes, the policy of this process
    acts for all of them; its weights are the learner's own."""
    from hrm_torchrl.dqn import DQNConfig, make_collector

    net = tiny_net()
    cfg = DQNConfig.cpu(hrm=net.config, collector="parallel", workers=2, envs_per_worker=4,
                        frames_per_batch=2 * 4 * 40)
    spec = env_factory().action_spec_unbatched  # the policy acts on [workers, mazes] at once
    policy = TensorDictSequential(QValueActor(net, spec=spec), EGreedyModule(spec, eps_init=0.5))
    collector, shutdown = make_collector(cfg, policy, net.make_tensordict_primer(), seed=0)
    try:
        data = next(iter(collector))
        with torch.no_grad():
            net.head.bias.add_(torch.tensor([0.0, 0.0, 100.0, 0.0]))  # south, always
        collector.update_policy_weights_()
        policy[1].eps.fill_(0.0)
        after = next(iter(collector))
    finally:
        shutdown()
    assert data.batch_size == (2, 4, 40)
    check_state_travels(data.reshape(-1, data.shape[-1]), net)
    assert (after["action"].argmax(-1) == 2).all()  # the learner's weights act at once


def test_multiasync_collector_delivers_one_workers_round_and_takes_weights():
    """dqn.make_collector's "multiasync": each round is frames_per_batch frames of one worker's
    mazes, the carried state travels in it, and new weights reach the workers within a round
    or two (each worker's next round may already be under way when they are sent)."""
    from hrm_torchrl.dqn import DQNConfig, make_collector

    net = tiny_net()
    cfg = DQNConfig.cpu(hrm=net.config, collector="multiasync", workers=2, envs_per_worker=4,
                        frames_per_batch=4 * 40)
    spec = env_factory().action_spec_unbatched
    policy = TensorDictSequential(QValueActor(net, spec=spec), EGreedyModule(spec, eps_init=0.5))
    collector, shutdown = make_collector(cfg, policy, net.make_tensordict_primer(), seed=0)
    try:
        rounds = iter(collector)
        data = next(rounds)
        with torch.no_grad():
            net.head.bias.add_(torch.tensor([0.0, 0.0, 100.0, 0.0]))  # south, always
            policy[1].eps.fill_(0.0)
        collector.update_policy_weights_()
        later = [next(rounds) for _ in range(4)]
    finally:
        shutdown()
    assert data.batch_size == (4, 40)  # [mazes, time] of one worker
    check_state_travels(data, net)
    assert (data["action"].argmax(-1) != 2).any()  # before: epsilon 0.5 and the random head
    assert (later[-1]["action"].argmax(-1) == 2).all()


def test_state_and_weights_travel_through_a_ray_collector():
    from torchrl.collectors.distributed import RayCollector

    net = tiny_net()
    actor, policy = make_policy(net, env_factory())
    # Ray actors import what they unpickle: a factory from the package, not from this file
    factory = functools.partial(make_env, "FourRoomsDoors", num_envs=4, seed=0, p_change=0.3,
                                primer=net.make_tensordict_primer())
    collector = RayCollector(
        [factory, factory], policy, collector_class=Collector, num_collectors=2, sync=True,
        frames_per_batch=2 * 4 * 40, total_frames=3 * 2 * 4 * 40,
        ray_init_config={"num_cpus": 2, "include_dashboard": False, "log_to_driver": False},
        remote_configs={"num_cpus": 1},
    )
    try:
        collector.update_policy_weights_(policy)
        batches = iter(collector)
        data = next(batches)
        assert data.batch_size == (2, 4, 40)  # [workers, mazes, time], as MultiSyncCollector's
        check_state_travels(data.reshape(-1, 40), net)
        assert data["action"].float().std(dim=(0, 1, 2)).sum() > 0  # epsilon 1: random moves
        # new weights reach the actors: a greedy policy whose Q always prefers action 2
        with torch.no_grad():
            policy[1].eps.fill_(0.0)
            net.head.weight.zero_()
            net.head.bias.copy_(torch.tensor([0.0, 0.0, 1.0, 0.0]))
        collector.update_policy_weights_()
        data = next(batches)
        assert (data["action"].argmax(-1) == 2).all()
    finally:
        collector.shutdown()
