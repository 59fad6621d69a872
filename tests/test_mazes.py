"""The two dynamic mazes on MiniHack/NLE, the A* oracle and the batched TorchRL env."""

import multiprocessing as mp

import gymnasium as gym
import numpy as np
import pytest
import torch
from torchrl.envs.utils import check_env_specs

import hrm_torchrl
from hrm_torchrl.astar import MOVES, astar, path_length
from hrm_torchrl.mazes import (
    AGENT,
    BUMP_PENALTY,
    CLOSED_DOOR,
    CODES,
    GOAL,
    OPEN_DOOR,
    WALL,
    DynamicMaze,
    FourRoomsDoors,
)
from hrm_torchrl.oracle import (
    OraclePolicy,
    episode_stats,
    optimal_actions,
    optimal_values,
    oracle_action,
)

IDS = ["HRM-FourRoomsDoors-v0", "HRM-DynamicMaze-v0"]


def random_walk(env, steps, seed):
    """Yields (obs, info, action, next_obs, reward, terminated, truncated, next_info)."""
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    for _ in range(steps):
        action = int(rng.integers(4))
        next_obs, reward, terminated, truncated, next_info = env.step(action)
        yield obs, info, action, next_obs, reward, terminated, truncated, next_info
        if terminated or truncated:
            obs, info = env.reset()
        else:
            obs, info = next_obs, next_info


@pytest.fixture(scope="module")
def walks():
    """4,000 random steps on each maze (p_change raised so that doors move often)."""
    out = {}
    for env_id in IDS:
        env = gym.make(env_id, p_change=0.2)
        out[env_id] = list(random_walk(env, 4000, seed=1))
        env.close()
    return out


def test_ids_registered_and_spaces():
    for env_id in IDS:
        env = gym.make(env_id)
        assert env.action_space == gym.spaces.Discrete(4)
        assert env.observation_space.shape == (11, 11)
        assert env.observation_space.dtype == np.uint8
        env.close()


def _make_in_spawned_worker(env_id):
    import gymnasium

    import hrm_torchrl  # noqa: F401

    env = gymnasium.make(env_id)
    obs, _ = env.reset(seed=0)
    env.close()
    return obs.shape


def test_make_in_a_spawned_process():
    with mp.get_context("spawn").Pool(1) as pool:
        assert pool.map(_make_in_spawned_worker, IDS) == [(11, 11), (11, 11)]


@pytest.mark.parametrize("env_id", IDS)
def test_moves_respect_walls_and_closed_doors(walks, env_id):
    moved = bumped = 0
    for obs, info, action, next_obs, reward, terminated, truncated, next_info in walks[env_id]:
        r, c = info["agent_pos"]
        target = (r + MOVES[action][0], c + MOVES[action][1])
        inside = 0 <= target[0] < 11 and 0 <= target[1] < 11
        blocked = not inside or obs[target] in (WALL, CLOSED_DOOR)
        if blocked:
            assert next_info["agent_pos"] == (r, c)
            assert reward == pytest.approx(BUMP_PENALTY)
            bumped += 1
        else:
            assert next_info["agent_pos"] == target
            moved += 1
            assert reward == (1.0 if terminated else 0.0)
        assert terminated == (next_info["agent_pos"] == next_info["goal_pos"])
    assert moved > 500 and bumped > 500


@pytest.mark.parametrize("env_id", IDS)
def test_rewards_truncation_and_codes(walks, env_id):
    rewards = {round(w[4], 4) for w in walks[env_id]}
    assert rewards == {0.0, 1.0, BUMP_PENALTY}
    allowed = set(CODES.values())
    lengths, length = [], 0
    for obs, info, *_, next_obs, reward, terminated, truncated, next_info in walks[env_id]:
        assert set(np.unique(obs)) <= allowed and obs.dtype == np.uint8
        assert (obs == AGENT).sum() == 1 and (obs == GOAL).sum() == 1
        assert obs[info["agent_pos"]] == AGENT and obs[info["goal_pos"]] == GOAL
        length += 1
        assert not (terminated and truncated)
        if truncated:
            assert length == 80
        if terminated or truncated:
            lengths.append(length)
            length = 0
    assert max(lengths) == 80 and min(lengths) < 80


def test_four_rooms_has_exactly_one_closed_door(walks):
    for obs, info, *_ in walks["HRM-FourRoomsDoors-v0"]:
        assert len(info["closed_doors"]) == 1
        assert info["closed_doors"][0] in FourRoomsDoors.DOORWAYS
        assert (obs == CLOSED_DOOR).sum() == 1
        assert (obs == OPEN_DOOR).sum() + (obs == AGENT).sum() >= 3
    # the fixed layout: the walls of the four rooms
    env = FourRoomsDoors()
    env.reset(seed=0)
    np.testing.assert_array_equal(env.walls, FourRoomsDoors.layout())


@pytest.mark.parametrize("env_id", IDS)
def test_door_change_rate_matches_p_change(env_id):
    p, steps = 0.2, 6000
    env = gym.make(env_id, p_change=p)
    changes = trials = 0
    for _, info, *_, terminated, _, next_info in random_walk(env, steps, seed=7):
        if terminated:
            continue  # doors freeze at the goal
        changed = next_info["closed_doors"] != info["closed_doors"]
        assert changed == next_info["env_changed"]
        if env_id == "HRM-FourRoomsDoors-v0":
            changes += changed
            trials += 1
        else:  # each door toggles independently; one the agent stands in may not close
            doors = env.unwrapped.doors
            before, after = set(info["closed_doors"]), set(next_info["closed_doors"])
            for door in doors:
                if door == next_info["agent_pos"] and door not in before:
                    continue
                changes += (door in before) != (door in after)
                trials += 1
    env.close()
    rate, sd = changes / trials, np.sqrt(p * (1 - p) / trials)
    assert abs(rate - p) < 4 * sd, (rate, p, trials)


@pytest.mark.parametrize("cls", [FourRoomsDoors, DynamicMaze])
def test_reset_start_goal_and_path(cls):
    env = cls()
    starts = set()
    for seed in range(60):
        obs, info = env.reset(seed=seed)
        assert info["agent_pos"] != info["goal_pos"]
        free = ~env.walls  # all doors open
        assert astar(free, info["agent_pos"], info["goal_pos"]) is not None
        if cls is DynamicMaze:
            assert info["agent_pos"][0] % 2 == 0 and info["agent_pos"][1] % 2 == 0
            assert env.walls.sum() == 25 + env.n_walls
            assert len(env.doors) == env.n_doors
        else:
            assert info["agent_pos"] not in FourRoomsDoors.DOORWAYS
        starts.add(info["agent_pos"])
    assert len(starts) > 15
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_seeded_reset_reproduces_the_episode(env_id):
    def trace(seed):
        env = gym.make(env_id, p_change=0.3)
        obs, info = env.reset(seed=seed)
        frames = [obs.copy()]
        for action in [0, 1, 2, 3] * 10:
            obs, reward, terminated, truncated, _ = env.step(action)
            frames.append(obs.copy())
            if terminated or truncated:
                break
        env.close()
        return np.stack(frames)

    np.testing.assert_array_equal(trace(5), trace(5))
    assert not np.array_equal(trace(5), trace(6))


@pytest.mark.parametrize(
    "env_id, kwargs, match",
    [
        (IDS[0], {"p_change": 1.5}, "p_change must lie in"),
        (IDS[1], {"p_change": -0.1}, "p_change must lie in"),
        (IDS[1], {"n_walls": 50, "n_doors": 11}, "more than the 60 candidate"),
        (IDS[1], {"n_walls": -1}, "n_walls must be a non-negative"),
        (IDS[0], {"max_steps": 0}, "max_steps must be a positive"),
        (IDS[1], {"shortest_path": "yes"}, "shortest_path must be True or False, got 'yes'"),
    ],
)
def test_bad_arguments_raise(env_id, kwargs, match):
    with pytest.raises(ValueError, match=match):
        gym.make(env_id, **kwargs)


def test_unknown_arguments_are_type_errors_as_in_python():
    # TorchRL's GymEnv passes frameskip and retries without it on a TypeError saying so
    with pytest.raises(TypeError, match=r"got an unexpected keyword argument 'n_walls'; known: "):
        gym.make(IDS[0], n_walls=3)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'colour', unexpected keyword "
                                        r"argument 'frameskip'"):
        gym.make(IDS[1], colour=3, frameskip=1)


def test_bad_action_render_mode_and_unknown_maze_raise():
    with pytest.raises(ValueError, match="unknown render_mode 'video'"):
        FourRoomsDoors(render_mode="video")
    env = FourRoomsDoors()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action must be 0"):
        env.step(4)
    short = FourRoomsDoors(max_steps=1)
    with pytest.raises(RuntimeError, match="call reset"):
        short.step(0)
    short.reset(seed=0)
    assert short.step(0)[3]  # truncated after one step
    with pytest.raises(RuntimeError, match="step\\(\\) on a finished episode"):
        short.step(0)
    with pytest.raises(ValueError, match="unknown maze 'Maze'"):
        hrm_torchrl.make_env("Maze")
    with pytest.raises(ValueError, match="num_envs must be a positive"):
        hrm_torchrl.make_env("DynamicMaze", num_envs=0)


def test_render_modes():
    env = gym.make(IDS[0], render_mode="ansi")
    obs, _ = env.reset(seed=0)
    text = env.render()
    assert text.splitlines() == [bytes(row).decode() for row in obs]
    env = gym.make(IDS[1], render_mode="rgb_array")
    env.reset(seed=0)
    image = env.render()
    assert image.shape == (176, 176, 3) and image.dtype == np.uint8 and image.std() > 0


def test_oracle_solves_four_rooms():
    env = gym.make(IDS[0])
    stats = episode_stats(env, oracle_action, episodes=200, seed=0)
    assert stats["success_rate"] >= 0.99
    assert 5 < stats["mean_success_length"] < 20


@pytest.mark.parametrize("env_id", IDS)
def test_shortest_path_info_is_opt_in_and_shrinks_along_the_oracle(env_id):
    env = gym.make(env_id)
    _, info = env.reset(seed=0)
    assert "shortest_path" not in info  # off by default: training never reads it
    env = gym.make(env_id, p_change=0.0, shortest_path=True)  # doors fixed: A* lengths are exact
    solved = 0
    for seed in range(10):
        obs, info = env.reset(seed=seed)
        (r, c), (gr, gc) = info["agent_pos"], info["goal_pos"]
        length = info["shortest_path"]
        if length == -1:  # DynamicMaze's closed doors may cut every path; FourRoomsDoors' never
            assert env_id == IDS[1]
            continue
        solved += 1
        assert length >= abs(r - gr) + abs(c - gc) >= 1
        terminated = False
        while not terminated:  # each oracle move takes one step off the remaining path
            obs, _, terminated, truncated, info = env.step(oracle_action(obs))
            assert not truncated
            length -= 1
            if not terminated:
                assert info["shortest_path"] == length
        assert length == 0
    assert solved >= 5
    env.close()


def test_oracle_on_dynamic_maze_and_its_waiting():
    env = gym.make(IDS[1])
    stats = episode_stats(env, oracle_action, episodes=100, seed=0)
    assert stats["success_rate"] >= 0.9
    # a blocked agent bumps in place
    grid = np.full((11, 11), ord("."), np.uint8)
    grid[0, 0], grid[0, 1], grid[1, 0] = AGENT, CLOSED_DOOR, WALL
    grid[5, 5] = GOAL
    grid[2, 0] = grid[1, 1] = grid[0, 2] = WALL
    action = oracle_action(grid)
    target = (MOVES[action][0], MOVES[action][1])
    assert not (0 <= target[0] < 11 and 0 <= target[1] < 11) or grid[target] != ord(".")


def test_optimal_actions_are_the_shortest_path_moves(walks):
    """Checked against A* from each neighbour, on the random walks' DynamicMaze states."""
    blocked = branching = 0
    for obs, *_ in walks[IDS[1]][:1500]:
        actions, distance = optimal_actions(obs.reshape(-1))  # the TorchRL envs' 121 tokens
        free = (obs != WALL) & (obs != CLOSED_DOOR)
        agent, goal = tuple(np.argwhere(obs == AGENT)[0]), tuple(np.argwhere(obs == GOAL)[0])
        assert distance == path_length(free, agent, goal)
        if distance < 0:
            blocked += 1
            assert not actions.any()
            continue
        for action, (dr, dc) in enumerate(MOVES):
            cell = (agent[0] + dr, agent[1] + dc)
            inside = 0 <= cell[0] < 11 and 0 <= cell[1] < 11 and free[cell]
            shortest = inside and path_length(free, cell, goal) == distance - 1
            assert actions[action] == shortest
        assert actions[oracle_action(obs)]
        branching += actions.sum() > 1
    assert blocked > 0 and branching > 0  # both cases were met
    done = np.full((11, 11), ord("."), np.uint8)  # a terminal frame: no agent, no goal drawn
    assert optimal_actions(done)[1] == -1


def test_optimal_values_satisfy_bellman_on_the_mazes_own_steps(walks):
    """Q*(s, a) = r + gamma * max Q*(s') on the random walks' steps whose doors stayed put, with
    the reward and next state the mazes themselves gave (r alone where the goal was reached)."""
    gamma, checked, kinds = 0.95, 0, set()
    for obs, _, action, next_obs, reward, terminated, *_ in walks[IDS[1]]:
        if not np.array_equal(np.isin(obs, (WALL, CLOSED_DOOR)), np.isin(next_obs, (WALL, CLOSED_DOOR))):
            continue  # a door opened or closed: Q* of the old doors does not hold
        values, distance = optimal_values(obs, gamma)
        if distance < 0:
            assert np.isnan(values).all()
            continue
        after = 0.0 if terminated else np.nanmax(optimal_values(next_obs, gamma)[0])
        assert values[action] == pytest.approx(reward + gamma * after, abs=1e-6)
        kinds.add("goal" if terminated else "bump" if reward < 0 else "move")
        checked += 1
    assert checked > 500 and kinds == {"goal", "bump", "move"}
    with pytest.raises(ValueError, match="gamma"):
        optimal_values(obs, gamma=0.0)


@pytest.mark.parametrize("num_envs", [1, 8])
@pytest.mark.parametrize("name", hrm_torchrl.MAZES)
def test_torchrl_env_specs(name, num_envs):
    env = hrm_torchrl.make_env(name, num_envs=num_envs, seed=0)
    check_env_specs(env)
    td = env.reset()
    assert td["observation"].shape == (num_envs, 121) and td["observation"].dtype == torch.uint8
    env.close()


def test_torchrl_env_matches_the_gymnasium_maze_and_resets_done_mazes():
    env = hrm_torchrl.make_env("FourRoomsDoors", num_envs=4, seed=3)
    gym_env = FourRoomsDoors()
    obs, _ = gym_env.reset(seed=3 + 2)
    rollout = env.rollout(200, policy=OraclePolicy(), break_when_any_done=False)
    np.testing.assert_array_equal(rollout["observation"][2, 0].numpy(), obs.reshape(-1))
    # the oracle policy reaches the goal; the env resets the maze and counts from 1 again
    done = rollout["next", "done"].squeeze(-1)
    assert done.sum() >= 4 * 200 / 40
    terminated = rollout["next", "terminated"].squeeze(-1)
    assert (rollout["next", "reward"].squeeze(-1)[terminated] == 1).all()
    assert (rollout["is_init"].squeeze(-1)[:, 1:] == done[:, :-1]).all()
    assert (rollout["step_count"].squeeze(-1)[rollout["is_init"].squeeze(-1)] == 0).all()
    env.close()


def test_first_episodes_reuses_one_env_and_matches_the_gymnasium_oracle():
    from hrm_torchrl.evaluation import first_episodes

    env = hrm_torchrl.make_env("FourRoomsDoors", num_envs=12)
    first = first_episodes(OraclePolicy(), env, seed=40)
    again = first_episodes(OraclePolicy(), env, seed=40)
    env.close()
    np.testing.assert_array_equal(first["length"], again["length"])
    assert first["success"].all()
    # the same seeds through gymnasium give the same episodes
    stats = episode_stats(gym.make(IDS[0]), oracle_action, episodes=12, seed=40)
    assert stats["mean_episode_length"] == pytest.approx(first["length"].mean())


def test_success_by_distance_bins_the_start_distance():
    from tensordict import TensorDict

    from hrm_torchrl.evaluation import success_by_distance

    def maze(goal, closed=()):
        grid = np.full((11, 11), ord("."), np.uint8)
        grid[0, 0], grid[goal] = AGENT, GOAL
        for cell in closed:
            grid[cell] = CLOSED_DOOR
        return grid.reshape(-1)

    starts = [maze((0, 2)), maze((0, 3)), maze((10, 10)), maze((5, 5), closed=[(0, 1), (1, 0)])]
    observation = torch.tensor(np.stack(starts))[:, None].expand(4, 3, 121)  # 3 steps each
    scores = {"rollout": TensorDict({"observation": observation}, [4, 3]),
              "success": np.array([True, False, True, False])}
    bins = {b["distance"]: (b["episodes"], b["success_rate"]) for b in success_by_distance(scores)}
    assert bins == {"blocked": (1, 0.0), "1-3": (2, 0.5), ">=16": (1, 1.0)}  # 2, 3 and 20 steps


def test_learning_diagnostics_on_hand_made_episodes():
    from tensordict import TensorDict

    from hrm_torchrl.evaluation import learning_diagnostics

    # 3 mazes x 4 steps: maze 0 reaches its goal at step 1 (its steps 2-3 are a second episode,
    # not scored), mazes 1 and 2 fail; maze 1 stays in place after steps 0 and 2, maze 2 always
    observation = torch.zeros(3, 5, 121, dtype=torch.uint8)
    observation[0, 1:], observation[0, 2:] = 1, 2
    observation[1, 2:], observation[1, 4:] = 1, 2
    q = torch.zeros(3, 4, 4)
    q[:2, :, 0] = 1.0  # greedy action 0, value 1
    q[2, :, 1] = 3.0  # greedy action 1, value 3
    q[0, 2:, 3] = 100.0  # the second episode's states: left out
    done = torch.zeros(3, 4, 1, dtype=torch.bool)
    done[0, 1], done[1:, 3] = True, True
    rollout = TensorDict({"observation": observation[:, :4], "action_value": q,
                          "next": {"observation": observation[:, 1:], "done": done}}, [3, 4])
    scores = {"rollout": rollout, "success": np.array([True, False, False])}
    result = learning_diagnostics(scores)
    assert result["failed_steps_unchanged"] == pytest.approx(6 / 8)
    assert result["action_entropy"] == pytest.approx(-(0.6 * np.log(0.6) + 0.4 * np.log(0.4)))
    assert result["q_std"] == pytest.approx(torch.tensor([1.0] * 6 + [3.0] * 4).std().item())
    assert np.isnan(result["replay_reward_share"])  # no buffer
    scores["success"][:] = True
    assert np.isnan(learning_diagnostics(scores)["failed_steps_unchanged"])  # none failed


def test_bad_input_is_refused_clearly():
    """What a user composing the mazes may hand them by mistake."""
    env = FourRoomsDoors()
    with pytest.raises(RuntimeError, match=r"render\(\) before the first reset\(\)"):
        env.render()
    env.reset(seed=0)
    for action in (-0.5, 3.99, 2.0, True, np.array([1, 2])):  # truncation would move north / west
        with pytest.raises(ValueError, match="action must be an integer"):
            env.step(action)
    env.step(np.int64(1))  # numpy integers are integers
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        env.reset(seed=-1)
    env.close()
    with pytest.raises(ValueError, match="max_steps must be a positive integer, got True"):
        FourRoomsDoors(max_steps=True)
    with pytest.raises(ValueError, match="p_change must lie in \\[0, 1\\], got 'abc'"):
        FourRoomsDoors(p_change="abc")
    crowded = DynamicMaze(n_walls=60, n_doors=0)
    crowded.MAX_LEVELS = 20  # the default's 2,000 draws take ~1 s
    with pytest.raises(RuntimeError, match="no level with a path from start to goal in 20 draws"):
        crowded.reset(seed=0)
    crowded.close()
    with pytest.raises(ValueError, match="seed must be a non-negative integer or None, got -1"):
        hrm_torchrl.make_env("FourRoomsDoors", seed=-1)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA device"):
            hrm_torchrl.make_env("FourRoomsDoors", device="cuda")


def test_maze_env_refuses_actions_that_are_not_one_hot():
    env = hrm_torchrl.make_env("DynamicMaze", num_envs=3, seed=0)
    td = env.reset()
    td["action"] = torch.tensor([1, 2, 3])  # indices: argmax would step maze 0 alone
    with pytest.raises(ValueError, match=r"one-hot of shape \[3, 4\].*got shape \(3,\)"):
        env.step(td)
    td["action"] = torch.zeros(3, 4, dtype=torch.long)  # all zero: argmax would move north
    with pytest.raises(ValueError, match="with an all-zero row"):
        env.step(td)
    # QValueModule's one-hot of tied Q-values has several ones: the first is taken
    td["action"] = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 1], [1, 1, 1, 1]])
    assert env.step(td)["next", "observation"].shape == (3, 121)
    env.close()
