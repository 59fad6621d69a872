"""Hindsight relabeling (its invariants on real maze frames, the "future" goal distribution, bad
input) and n-step returns that stop at the goal (the MultiStep terminal case)."""

import pytest
import torch
from tensordict import TensorDict
from torchrl.data.postprocs import MultiStep as TorchRLMultiStep

from hrm_torchrl import HindsightRelabel, MultiStep, make_env
from hrm_torchrl.mazes import CODES

AGENT, GOAL, FLOOR = CODES["agent"], CODES["goal"], CODES["floor"]
DOORS = (CODES["closed_door"], CODES["open_door"])
MASK = ("collector", "mask")


def collected(name, seed=0, mazes=24, steps=120, window=slice(50, 66)):
    """A [mazes, 16] window of random-policy frames from the middle of a rollout (episodes start
    and end inside it), as a collector would hand it over."""
    torch.manual_seed(seed)
    env = make_env(name, num_envs=mazes, seed=seed)
    data = env.rollout(steps, break_when_any_done=False)[:, window]
    env.close()
    return data


def cells(tokens, code):
    return (tokens == code).int().argmax(-1)


@pytest.mark.parametrize("name", ["FourRoomsDoors", "DynamicMaze"])
def test_relabeled_frames_keep_the_invariants(name):
    data = collected(name)
    n, t = data.shape
    out = HindsightRelabel(copies=2, generator=torch.Generator().manual_seed(1))(data)
    assert out.shape == (3 * n, t)
    # the originals come first, unchanged and valid
    assert out[MASK][:n].all()
    for key in ("observation", ("next", "observation"), ("next", "reward"), ("next", "terminated")):
        assert torch.equal(out[:n][key], data[key])

    obs, next_obs = data["observation"], data["next", "observation"]
    agent, next_agent = cells(obs, AGENT), cells(next_obs, AGENT)
    episode = torch.cat([torch.zeros(n, 1, dtype=torch.long),
                         data["next", "done"].squeeze(-1)[:, :-1].long().cumsum(-1)], -1)
    door_cells = torch.zeros(n, 121, dtype=torch.bool)
    for code in DOORS:
        door_cells |= (obs == code).any(1) | (next_obs == code).any(1)
    checked = 0
    for k in (1, 2):
        copy = out[k * n:(k + 1) * n]
        valid = copy[MASK]
        assert 0.4 < valid.float().mean() <= 1.0  # most frames get a goal
        rel_obs, rel_next = copy["observation"], copy["next", "observation"]
        assert ((rel_obs == GOAL).sum(-1)[valid] == 1).all()  # exactly one goal, old one erased
        goal = cells(rel_obs, GOAL)
        hit = next_agent == goal
        for i, j in valid.nonzero().tolist():
            g = goal[i, j]
            assert g != agent[i, j], "never the agent's own cell"
            assert not door_cells[i, g], "never a door cell"
            later = (episode[i] == episode[i, j]) & (torch.arange(t) >= j) & (next_agent[i] == g)
            assert later.any(), "a cell the agent occupies later in the same episode"
            checked += 1
        term = copy["next", "terminated"].squeeze(-1)
        reward = copy["next", "reward"].squeeze(-1)
        original = data["next", "reward"].squeeze(-1)
        assert torch.equal(term[valid], hit[valid])  # terminated where the next cell is the goal
        assert torch.equal(copy["next", "done"].squeeze(-1)[valid], hit[valid])
        assert (reward[valid & hit] == 1).all()
        bumps = valid & ~hit & (original < 0)
        assert bumps.any() and (reward[bumps] == original[bumps]).all()  # bump penalties kept
        assert (reward[valid & ~hit & (original >= 0)] == 0).all()
        # the goal shows in the next observation unless the agent stands on it
        shows = (rel_next == GOAL).sum(-1) == 1
        assert torch.equal(shows[valid], ~hit[valid])
        # nothing else in the grid changes: walls, doors, floor, agent
        same = (rel_obs == obs) | (obs == GOAL) | (rel_obs == GOAL)
        assert same.all()
        for key in ("action", "is_init", "env_changed"):
            assert torch.equal(copy[key], data[key])
    assert checked > 300


def test_each_goal_is_uniform_over_the_future():
    # an agent walking east along a corridor: every step reaches a new cell, no episode ends
    t, rows = 8, 4000
    obs = torch.full((rows, t + 1, 121), FLOOR, dtype=torch.uint8)
    for step in range(t + 1):
        obs[:, step, 11 * 5 + step] = AGENT
    data = TensorDict({
        "observation": obs[:, :-1],
        "next": {"observation": obs[:, 1:], "reward": torch.zeros(rows, t, 1),
                 "done": torch.zeros(rows, t, 1, dtype=torch.bool),
                 "terminated": torch.zeros(rows, t, 1, dtype=torch.bool)},
    }, [rows, t])
    out = HindsightRelabel(copies=1, generator=torch.Generator().manual_seed(0))(data)[rows:]
    # the step whose next cell is each frame's goal
    goal_step = cells(out["observation"], GOAL) - 11 * 5 - 1  # [rows, t]
    for start in (0, 3, 6):  # every frame's goal is uniform over its own future
        counts = torch.bincount(goal_step[:, start] - start, minlength=t - start).float()
        assert counts.shape == (t - start,)
        assert (counts / rows - 1 / (t - start)).abs().max() < 0.03
    assert out[MASK].all()


def test_relabeling_then_n_step_returns_stay_within_one_goal():
    data = collected("FourRoomsDoors", seed=3)
    gamma, n_steps = 0.9, 3
    out = MultiStep(gamma=gamma, n_steps=n_steps)(
        HindsightRelabel(copies=1, generator=torch.Generator().manual_seed(2))(data))
    one_step = HindsightRelabel(copies=1, generator=torch.Generator().manual_seed(2))(data)
    n = data.shape[0]
    relabeled, single = out[n:], one_step[n:]
    valid = relabeled[MASK]
    reward = single["next", "reward"].squeeze(-1)
    term = single["next", "terminated"].squeeze(-1)
    steps = relabeled["steps_to_next_obs"].reshape(valid.shape)
    summed = relabeled["next", "reward"].squeeze(-1)
    window_term = relabeled["next", "terminated"].squeeze(-1)
    rows, cols = valid.nonzero(as_tuple=True)
    assert len(rows) > 100
    for i, j in zip(rows.tolist(), cols.tolist()):
        k = int(steps[i, j])
        expected = sum(gamma ** s * reward[i, j + s] for s in range(k))
        assert torch.isclose(summed[i, j], torch.as_tensor(expected), atol=1e-5)
        # a window stops at its goal and is terminated exactly when it reached it
        assert not term[i, j:j + k - 1].any()
        assert bool(window_term[i, j]) == bool(term[i, j + k - 1])
        assert k == n_steps or term[i, j + k - 1] or j + k == data.shape[1]


def test_multistep_terminal_case_on_a_hand_made_trajectory():
    # goal reached at t=2, a new episode from t=3 on
    terminated = torch.tensor([0, 0, 1, 0, 0, 0], dtype=torch.bool)[None, :, None]
    td = TensorDict({"observation": torch.arange(6)[None], "next": {
        "observation": torch.arange(1, 7)[None], "reward": terminated.float(),
        "done": terminated.clone(), "terminated": terminated.clone(),
        "truncated": torch.zeros_like(terminated)}}, [1, 6])
    upstream = TorchRLMultiStep(gamma=0.9, n_steps=3)(td.clone())
    ours = MultiStep(gamma=0.9, n_steps=3)(td.clone())
    for out in (upstream, ours):  # both gather the terminal observation for t=0 and t=1
        assert out["next", "observation"].tolist() == [[3, 3, 3, 6, 6, 6]]
        assert out["next", "reward"].reshape(-1).tolist() == pytest.approx([0.81, 0.9, 1, 0, 0, 0])
    # TorchRL 0.14.1 leaves t=0 and t=1 non-terminal: they would bootstrap from the terminal obs
    assert upstream["next", "terminated"].squeeze(-1).tolist() == [[False, False, True, False, False, False]]
    assert ours["next", "terminated"].squeeze(-1).tolist() == [[True, True, True, False, False, False]]
    assert ours["next", "done"].squeeze(-1).tolist() == [[True, True, True, False, False, False]]
    # the last frames of the batch keep bootstrapping (shorter windows, gamma ** steps)
    assert ours["steps_to_next_obs"].reshape(-1).tolist() == [3, 2, 1, 3, 2, 1]


def test_copies_zero_only_adds_the_mask():
    data = collected("DynamicMaze", mazes=4)
    out = HindsightRelabel(copies=0)(data)
    assert out.shape == data.shape and out[MASK].all()
    assert torch.equal(out["observation"], data["observation"])


def test_bad_input_raises_clear_errors():
    data = collected("FourRoomsDoors", mazes=2)
    with pytest.raises(ValueError, match="copies must be a non-negative integer"):
        HindsightRelabel(copies=-1)
    with pytest.raises(ValueError, match=r"needs frames shaped \[\*batch, time\]"):
        HindsightRelabel()(data[:, 0])
    with pytest.raises(ValueError, match="no 'observation' entry"):
        HindsightRelabel()(data.exclude("observation"))
    no_agent = data.clone()
    no_agent["observation"][0, 0][no_agent["observation"][0, 0] == AGENT] = FLOOR
    with pytest.raises(ValueError, match="agent token 64 exactly once"):
        HindsightRelabel()(no_agent)
    floats = data.clone()
    floats["observation"] = floats["observation"].float()
    with pytest.raises(ValueError, match="must hold integer tokens"):
        HindsightRelabel()(floats)
