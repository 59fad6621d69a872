"""research/imitation.py in --quick mode and its parts: the loss, trajectories with the carried
state, the replay, moved goals and its errors (no accuracy is asserted)."""

import json

import pytest

from research import imitation


def test_imitation_quick(tmp_path, monkeypatch):
    out, data = tmp_path / "imitation.json", tmp_path / "states.pt"
    result = imitation.main(["--quick", "--json", str(out), "--data", str(data)])
    written = json.loads(out.read_text())["rows"]
    assert [row["accuracy"] for row in written] == [row["accuracy"] for row in result["rows"]]
    assert result["network"]["segments"] == 2 and result["states"] == 256  # the cpu preset's HRM
    assert [row["minibatches"] for row in result["rows"]] == [2, 4]
    for row in result["rows"]:
        assert row["optimizer_steps"] == row["minibatches"]  # one step per minibatch
        assert row["samples"] == row["minibatches"] * result["batch_size"]
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["success_rate"] <= 1
        assert row["loss"] > 0 and row["seconds"] > 0
        assert sum(b["episodes"] for b in row["success_by_distance"]) == 4  # --eval-episodes

    # a second run loads the labelled states from --data instead of collecting them again
    def collect(*args, **kwargs):
        raise AssertionError("collected although --data holds the states")

    monkeypatch.setattr(imitation, "oracle_states", collect)
    cells = imitation.main(["--quick", "--data", str(data), "--", "--hrm", "patch=1",
                            "--hrm", "segments=3", "--deep-supervision"])
    assert cells["network"]["patch"] == 1 and cells["states"] == 256
    # deep supervision: an optimizer step per segment
    assert [(row["minibatches"], row["optimizer_steps"]) for row in cells["rows"]] == [(2, 6), (4, 12)]
    with pytest.raises(SystemExit, match="holds states for .*'seed': 0.*asks for .*'seed': 1"):
        imitation.main(["--quick", "--data", str(data), "--seed", "1"])


def test_imitation_loss_and_bad_networks():
    import torch

    from tensordict import TensorDict

    q = torch.zeros(3, 4)
    nan = float("nan")
    batch = TensorDict({  # the third row has no path: it counts nothing
        "optimal": torch.tensor([[True, True, False, False], [False, False, False, True],
                                 [False] * 4]),
        "values": torch.tensor([[0.9, 0.9, 0.5, -0.01], [0.0, 0.0, 0.0, 1.0], [nan] * 4]),
        "distance": torch.tensor([3, 1, -1])}, [3])
    # uniform Q: P(optimal) = 1/2 and 1/4
    expected = -(torch.log(torch.tensor(0.5)) + torch.log(torch.tensor(0.25))) / 2
    assert torch.isclose(imitation.imitation_loss(q, batch, "actions", 0.95), expected)
    # values: the squared error over the 8 entries of the rows with a path
    expected = torch.tensor((2 * 0.81 + 0.25 + 0.0001 + 1.0) / 8)
    assert torch.isclose(imitation.imitation_loss(q, batch, "values", 0.95), expected)
    assert imitation.imitation_loss(batch["values"].nan_to_num(), batch, "values", 0.95) == 0
    # log-values: gamma^d becomes -d; a value below the floor counts as the floor
    assert torch.allclose(imitation.log_values(torch.tensor([0.95 ** 3, 1.0, -0.01]), 0.95),
                          torch.tensor([-3.0, 0.0, imitation.log_values(torch.tensor(1e-3), 0.95)]))
    target = imitation.log_values(batch["values"], 0.95)
    assert imitation.imitation_loss(target.nan_to_num(), batch, "log-values", 0.95) == 0
    assert torch.isclose(imitation.imitation_loss(q, batch, "log-values", 0.95),
                         target[:2].pow(2).mean())  # the row without a path left out
    for flags in (["--model", "lstm"], ["--carry", "carry"]):
        with pytest.raises(SystemExit, match="must not carry state"):
            imitation.main(["--quick", "--", *flags])
    with pytest.raises(SystemExit, match="--steps must be 0 .no limit. or more, got -1"):
        imitation.main(["--steps", "-1"])
    with pytest.raises(SystemExit, match="training never ends"):
        imitation.main(["--minutes", "0"])


def test_imitation_class_targets():
    import math

    import torch

    from tensordict import TensorDict

    g = 0.95
    values = torch.tensor([[g ** 3, g ** 5, g ** 4 - 0.01, g ** 40]])  # a move, a move, a bump, far
    steps = imitation.class_target(values, "distance-classes", g).argmax(-1)
    assert steps.tolist() == [[3, 5, 5, 31]]  # the bump a step more than staying; 31: 31 or more
    atoms = imitation.class_target(torch.tensor([[0.5, 0.51, 1.0, -0.01]]), "value-classes", g)
    support = imitation.class_support("value-classes", g)
    assert atoms.shape == (1, 4, 51) and torch.allclose(atoms.sum(-1), torch.ones(1, 4))
    # C51's projection keeps the mean: the atoms' expectation is the value, clipped to [0, 1]
    assert torch.allclose((atoms * support).sum(-1), torch.tensor([[0.5, 0.51, 1.0, 0.0]]))
    assert atoms[0, 1].nonzero().flatten().tolist() == [25, 26]  # two nearest atoms of 0.51
    # ClassValues ranks by the expected value: logits that pick a class give its value
    logits = imitation.class_target(values, "distance-classes", g).log().clamp_min(-50)
    ranked = imitation.ClassValues(imitation.class_support("distance-classes", g))(logits.flatten(-2))
    assert torch.allclose(ranked, torch.tensor([[g ** 3, g ** 5, g ** 5, g ** 31]]))
    # cross-entropy over 32 classes: log(32) from uniform logits; rows without a path count nothing
    batch = TensorDict({"values": torch.cat([values, torch.full((1, 4), float("nan"))]),
                        "distance": torch.tensor([3, -1])}, [2])
    loss = imitation.imitation_loss(torch.zeros(2, 4 * 32), batch, "distance-classes", g)
    assert math.isclose(float(loss), math.log(32), rel_tol=1e-6)
    assert float(imitation.imitation_loss(torch.cat([logits.flatten(-2), torch.zeros(1, 128)]),
                                          batch, "distance-classes", g)) < 1e-6

    result = imitation.main(["--quick", "--target", "distance-classes"])
    assert result["target"] == "distance-classes" and [r["minibatches"] for r in result["rows"]] == [2, 4]
    assert all(0 <= r["accuracy"] <= 1 and r["loss"] > 0 for r in result["rows"])
    for flags in (["--model", "mlp"], ["--deep-supervision"], ["--dueling"]):
        with pytest.raises(SystemExit, match="--target value-classes takes the HRM .* without deep"):
            imitation.main(["--quick", "--target", "value-classes", "--", *flags])


def test_imitation_trajectories_carry_the_state():
    import torch

    from hrm_torchrl import HRMConfig, HRMQValueNet, make_env
    from hrm_torchrl.oracle import optimal_actions, optimal_values


    def observations(carry):
        torch.manual_seed(0)
        net = HRMQValueNet(HRMConfig.cpu(), carry=carry, carry_state="full")
        env = make_env("DynamicMaze", num_envs=4, seed=0, primer=net.make_tensordict_primer())
        batches = imitation.trajectories(env, "oracle", 0.95)
        seen, carried = [], None
        for _ in range(6):
            batch = next(batches)
            assert "action_value" not in batch.keys()  # last step's graph is left behind
            for row, observation in enumerate(batch["observation"].numpy()):
                actions, distance = optimal_actions(observation)
                assert batch["optimal"][row].tolist() == actions.tolist()
                assert batch["distance"][row] == distance
                values = torch.from_numpy(optimal_values(observation, 0.95)[0])
                assert torch.allclose(batch["values"][row], values, rtol=0, atol=0, equal_nan=True)
            if carried is not None:  # the state the network wrote last step, where not reset
                kept = ~batch["is_init"].squeeze(-1)
                assert kept.any()
                for key in ("z_H", "z_L"):
                    assert torch.equal(batch[key][kept], carried[key][kept])
            net(batch)
            carried = batch["next"].select("z_H", "z_L").clone()
            seen.append(batch["observation"].clone())
        env.close()
        return torch.stack(seen)

    # the same seed: Carry Z and Reset Z see the same mazes and oracle actions
    assert torch.equal(observations("carry"), observations("reset"))


def test_imitation_trajectories_quick():
    result = imitation.main(["--quick", "--trajectories", "--", "--carry-state", "full"])
    assert (result["data"], result["carry"], result["carry_state"]) == ("trajectories", "carry", "full")
    assert result["batch_size"] == 8 and result["states"] is None  # --quick's 8 mazes
    assert [row["minibatches"] for row in result["rows"]] == [2, 4]
    for row in result["rows"]:
        assert row["optimizer_steps"] == row["minibatches"] and row["samples"] == 8 * row["minibatches"]
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["success_rate"] <= 1 and row["loss"] > 0
        assert (0 <= row["failed_steps_unchanged"] <= 1) == (row["success_rate"] < 1)  # nan: none failed
    for argv, message in ((["--trajectories", "--data", "x.pt"], "--data keeps single states"),
                          (["--replay", "8"], "--replay takes .* got --replay 8 alone"),
                          (["--trajectories", "--replay", "-1"], "got --replay -1"),
                          (["--trajectories", "--", "--deep-supervision"], "no --deep-supervision"),
                          (["--trajectories", "--mazes", "0"], "--mazes must be at least 1, got 0")):
        with pytest.raises(SystemExit, match=message):
            imitation.main(argv)
    values = imitation.main(["--quick", "--trajectories", "--target", "values"])
    assert (values["target"], values["gamma"]) == ("values", 0.95)  # the cpu preset's gamma
    assert [row["minibatches"] for row in values["rows"]] == [2, 4] and values["rows"][-1]["loss"] > 0


def test_imitation_trajectories_acting_network(monkeypatch):
    """--acting network: the mazes take the network's greedy action under the Q-values it wrote
    on that step (eps 0 here, so every action is greedy), each state still labelled by A*."""
    import torch

    from hrm_torchrl import HRMConfig, HRMQValueNet, make_env

    monkeypatch.setattr(imitation, "EPS", 0.0)
    torch.manual_seed(0)
    net = HRMQValueNet(HRMConfig.cpu(), carry="carry", carry_state="full")
    env = make_env("DynamicMaze", num_envs=4, seed=0, primer=net.make_tensordict_primer())
    taken, step = [], env.step_and_maybe_reset
    monkeypatch.setattr(env, "step_and_maybe_reset",
                        lambda td: (taken.append(td["action"].clone()), step(td))[1])
    batches = imitation.trajectories(env, "network", 0.95)
    greedy = []
    for _ in range(6):
        batch = next(batches)
        assert batch["optimal"].shape == (4, 4)
        with torch.no_grad():
            greedy.append(net(batch)["action_value"].argmax(-1))
    next(batches)
    env.close()
    assert torch.equal(torch.stack(taken).argmax(-1), torch.stack(greedy))
    with pytest.raises(ValueError, match="acting must be one of .*, got 'learner'"):
        next(imitation.trajectories(env, "learner", 0.95))
    with pytest.raises(SystemExit, match="--acting network picks .* give --trajectories"):
        imitation.main(["--acting", "network"])
    result = imitation.main(["--quick", "--trajectories", "--acting", "network"])
    assert result["acting"] == "network" and [row["minibatches"] for row in result["rows"]] == [2, 4]


def test_imitation_trajectories_replay(monkeypatch):
    """--replay: the learner's minibatch is drawn from the stored states, each with the network
    state carried into it when it was new (a replay of 16 holds the last two steps of --quick's 8
    mazes)."""
    new_states, learned = [], []
    trajectories, train_minibatch = imitation.trajectories, imitation.train_minibatch

    def recorded_trajectories(*args):
        for batch in trajectories(*args):
            new_states.append(batch.select("observation", "z_H").clone())
            yield batch

    def recorded_train_minibatch(net, batch, *args):
        learned.append(batch.select("observation", "z_H").clone())
        return train_minibatch(net, batch, *args)

    monkeypatch.setattr(imitation, "trajectories", recorded_trajectories)
    monkeypatch.setattr(imitation, "train_minibatch", recorded_train_minibatch)
    result = imitation.main(["--quick", "--trajectories", "--replay", "16", "--",
                             "--carry-state", "full"])
    assert result["replay"] == 16 and len(learned) == 4

    def stored_in(states, observation, z_H):
        return bool(((states["observation"] == observation).all(-1)
                     & (states["z_H"] == z_H).flatten(1).all(-1)).any())

    older = 0
    for step, batch in enumerate(learned):
        for observation, z_H in zip(batch["observation"], batch["z_H"]):
            now = stored_in(new_states[step], observation, z_H)
            before = step > 0 and stored_in(new_states[step - 1], observation, z_H)
            assert now or before
            older += before and not now
    assert older > 0  # drawn from the replay, not only this step's states
    assert learned[-1]["z_H"].abs().sum() > 0  # carried, not the initial zeros


def test_imitation_moved_goal():
    """--relabel's copies: one goal each, on a former floor cell, labelled for it; the carried
    state kept."""
    import torch
    from tensordict import TensorDict

    from hrm_torchrl import make_env
    from hrm_torchrl.mazes import CODES
    from hrm_torchrl.oracle import optimal_actions

    env = make_env("DynamicMaze", num_envs=6, seed=0)
    observation = env.reset()["observation"]
    env.close()
    states = TensorDict({"observation": observation, "z_H": torch.randn(6, 3)}, [6])
    moved = imitation.moved_goal(states, torch.Generator().manual_seed(0), 0.95)
    assert torch.equal(moved["z_H"], states["z_H"])
    for before, after, optimal, distance in zip(observation, moved["observation"],
                                                moved["optimal"], moved["distance"]):
        assert (after == CODES["goal"]).sum() == 1
        assert before[after == CODES["goal"]].item() == CODES["floor"]
        changed = before != after
        assert set(before[changed].tolist()) <= {CODES["goal"], CODES["floor"]}
        actions, steps = optimal_actions(after.numpy())
        assert optimal.tolist() == actions.tolist() and distance == steps
    assert not torch.equal(moved["observation"], observation)
    with pytest.raises(SystemExit, match="--relabel relabels .* give --replay"):
        imitation.main(["--trajectories", "--relabel"])
    result = imitation.main(["--quick", "--trajectories", "--replay", "32", "--relabel"])
    assert result["relabel"] and [row["minibatches"] for row in result["rows"]] == [2, 4]
