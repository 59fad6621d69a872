"""python -m hrm_torchrl.play on a tiny untrained network: printed steps, GIFs with a frame per
state, and its errors. No test trains."""


import pytest
import torch
from PIL import Image

from hrm_torchrl import HRMConfig
from hrm_torchrl.dqn import DQNConfig, make_network
from hrm_torchrl.play import main as play_main

TINY = dict(hidden=16, heads=2, H_layers=1, L_layers=1, H_cycles=1, L_cycles=1, segments=3)


def checkpoint(tmp_path, env="FourRoomsDoors", model="hrm"):
    torch.manual_seed(0)
    config = DQNConfig.cpu(hrm=HRMConfig.cpu(**TINY), env=env, model=model)
    path = tmp_path / f"{env}-{model}.pt"
    torch.save({"config": config.to_dict(), "model": make_network(config).state_dict()}, path)
    return path


def test_play_prints_steps_and_writes_a_gif_per_episode(tmp_path, capsys):
    path = checkpoint(tmp_path)
    gif = tmp_path / "episode.gif"
    episodes = play_main([str(path), "--episodes", "2", "--max-steps", "4", "--gif", str(gif)])
    printed = capsys.readouterr().out
    assert "episode 0 step 0:" in printed and "Q: ^" in printed and "greedy success" in printed
    for i, episode in enumerate(episodes):
        steps = len(episode["actions"])
        assert 1 <= steps <= 4 and episode["mse_H"].shape == (steps, 3)
        with Image.open(tmp_path / f"episode-{i}.gif") as image:
            assert image.n_frames == steps + 1  # every state the agent saw, and the last one
            assert image.size[0] > 300
    # a Carry Z agent played as Reset Z, one episode: one GIF under the name given
    play_main([str(path), "--episodes", "1", "--max-steps", "2", "--carry", "reset", "--gif",
               str(gif), "--quiet", "--no-astar"])
    assert gif.exists() and "(reset) on FourRoomsDoors" in capsys.readouterr().out


def test_play_refuses_another_env_and_missing_files(tmp_path, capsys):
    path = checkpoint(tmp_path, env="DynamicMaze")
    with pytest.raises(SystemExit):
        play_main([str(path), "--env", "FourRoomsDoors"])
    assert "was trained on DynamicMaze, not FourRoomsDoors" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        play_main([str(tmp_path / "missing.pt")])
    assert "no run directory or checkpoint at" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        play_main([str(checkpoint(tmp_path, model="mlp")), "--carry", "reset"])
    assert "the mlp carries no state" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        play_main([str(path), "--gif", str(tmp_path / "nowhere" / "x.gif")])
    assert "no directory" in capsys.readouterr().err


def test_shipped_agents_load_and_play():
    from pathlib import Path

    from hrm_torchrl import load_agent

    root = Path(__file__).resolve().parents[1] / "results"
    shipped = sorted(root.glob("*/agent.pt"))
    assert shipped, "no agent.pt under results/"
    for path in shipped:
        net, config = load_agent(path)
        name = path.parent.name  # e.g. fourrooms-cpu-carry-s0: what the README says it is
        assert name.startswith({"FourRoomsDoors": "fourrooms-", "DynamicMaze": "dynamicmaze-"}[config.env])
        assert f"-{config.preset}-{config.carry}-" in name and not net.training
        episodes = play_main([str(path), "--episodes", "2", "--max-steps", "5", "--quiet"])
        assert len(episodes) == 2
