"""hrm_torchrl.analyze and hrm_torchrl.plot_runs on a fresh tiny model and a hand-made trace."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from hrm_torchrl import HRMConfig
from hrm_torchrl.analyze import condition_table
from hrm_torchrl.analyze import main as analyze_main
from hrm_torchrl.plot_runs import main as plot_main
from hrm_torchrl.plot_runs import read_run
from hrm_torchrl.dqn import DQNConfig, make_network
from hrm_torchrl.runs import RunError, load_agent

TINY = dict(hidden=16, heads=2, H_layers=1, L_layers=1, H_cycles=1, L_cycles=1, segments=3)


def test_condition_split_on_a_hand_made_trace():
    # 5 steps, 3 segments; step 0 is an episode start (not counted)
    mse_H = np.array([[9, 9, 0], [4, 2, 0], [6, 3, 0], [1, 1, 0], [3, 5, 0]], float)
    mse_L = mse_H * 10
    q = np.zeros((5, 4))
    q_carried = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [5, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0.0]])
    changed = np.array([True, True, False, False, True])
    counted = np.array([False, True, True, True, True])
    table = condition_table("carry", mse_H, mse_L, q_carried, q, changed, counted)
    assert set(table) == {"Carry Z, env changed", "Carry Z, env not changed"}
    on = table["Carry Z, env changed"]  # steps 1 and 4
    off = table["Carry Z, env not changed"]  # steps 2 and 3
    assert on["steps"] == 2 and off["steps"] == 2
    assert on["median_mse_H"] == [3.5, 3.5] and off["median_mse_H"] == [3.5, 2.0]
    assert on["median_mse_L"] == [35.0, 35.0]
    assert on["median_kl"] == pytest.approx(0.0)  # identical distributions
    # step 2: final uniform vs carried peaked on action 0 -> KL > 0
    p = np.full(4, 0.25)
    log_c = np.log(np.exp([5, 0, 0, 0]) / np.exp([5, 0, 0, 0]).sum())
    expected = float((p * (np.log(p) - log_c)).sum())
    assert off["mean_kl"] == pytest.approx(expected / 2)
    empty = condition_table("reset", mse_H, mse_L, q_carried, q, changed, np.zeros(5, bool))
    assert empty["Reset Z, env changed"]["steps"] == 0


def fake_run(tmp_path, name, carry, model="hrm", env="FourRoomsDoors"):
    """A run directory as dqn_hrm.py writes it, holding a freshly initialised tiny model."""
    torch.manual_seed(0)
    config = DQNConfig.cpu(hrm=HRMConfig.cpu(**TINY), carry=carry, model=model, env=env)
    run = tmp_path / name
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"config": config.to_dict(), "model": make_network(config).state_dict()},
               run / "checkpoints" / "last.pt")
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    with open(run / "metrics.csv", "w") as f:
        f.write("frames,updates,wall_seconds,epsilon,success_rate,mean_episode_length,"
                "mean_success_length,mean_return,oracle_mean_episode_length\n")
        f.write("1000,10,5.0,0.9,0.1,75.0,12.0,-0.5,11.5\n2000,20,9.0,0.8,0.3,60.0,11.0,-0.1,11.5\n")
        if carry == "carry":  # this one learns
            f.write("3000,30,13.0,0.7,0.6,40.0,11.0,0.3,11.5\n")
    return run


def test_load_agent_and_bad_paths(tmp_path):
    run = fake_run(tmp_path, "carry", "carry")
    net, config = load_agent(run)
    assert net.carry == "carry" and config.env == "FourRoomsDoors" and not net.training
    # a truncated best.pt (a crash mid-copy) falls back to last.pt; a truncated last.pt alone is
    # a clear error naming the file
    (run / "checkpoints" / "best.pt").write_bytes((run / "checkpoints" / "last.pt").read_bytes()[:100])
    assert load_agent(run)[1].carry == "carry"
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    with pytest.raises(RunError, match="best.pt is not a readable checkpoint.*last.pt is not"):
        load_agent(run)
    with pytest.raises(RunError, match="holds no checkpoints"):
        load_agent(tmp_path)
    with pytest.raises(RunError, match="no run directory or checkpoint"):
        load_agent(tmp_path / "missing.pt")
    mlp = fake_run(tmp_path, "mlp", "none", model="mlp")
    with pytest.raises(SystemExit, match="holds a mlp run; .* needs a --model hrm run"):
        analyze_main([str(mlp), "--out", str(tmp_path / "out")])
    dynamic = fake_run(tmp_path, "dynamic", "carry", env="DynamicMaze")
    with pytest.raises(SystemExit, match="trained on DynamicMaze, not FourRoomsDoors"):
        analyze_main([str(dynamic), "--env", "FourRoomsDoors", "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="different mazes.*give --env"):
        analyze_main([str(dynamic), str(fake_run(tmp_path, "four", "carry")), "--out",
                      str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()  # refused before any episode


def test_analyze_writes_tables_and_plots(tmp_path):
    runs = [fake_run(tmp_path, "carry", "carry"), fake_run(tmp_path, "reset", "reset")]
    out = tmp_path / "analysis"
    results = analyze_main([str(r) for r in runs] + ["--env", "FourRoomsDoors", "--episodes", "6",
                                                     "--out", str(out)])
    assert len(results) == 2
    conditions = {c for table in results.values() for c in table}
    assert conditions == {"Carry Z, env changed", "Carry Z, env not changed",
                          "Reset Z, env changed", "Reset Z, env not changed"}
    with open(out / "convergence.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["run", "condition", "level", "segment", "median_mse", "steps"]
    assert {r["segment"] for r in rows} == {"1", "2"}  # segments-1 values, never the last
    assert all(math.isfinite(float(r["median_mse"])) and float(r["median_mse"]) >= 0 for r in rows)
    divergence = json.loads((out / "divergence.json").read_text())
    for table in divergence.values():
        for row in table.values():
            assert row["steps"] == 0 or (math.isfinite(row["median_kl"]) and row["median_kl"] >= 0)
    for png in ("convergence.png", "divergence.png"):
        assert (out / png).stat().st_size > 10_000
    success = json.loads((out / "success_by_distance.json").read_text())
    assert set(success) == set(results)
    for bins in success.values():  # FourRoomsDoors: never blocked at the start, goal >= 1 away
        assert sum(b["episodes"] for b in bins) == 6 and "blocked" not in [b["distance"] for b in bins]
        assert all(0 <= b["success_rate"] <= 1 for b in bins)


def test_analyze_names_checkpoint_files_by_their_run(tmp_path):
    # two runs' checkpoints share a file name; each keeps its own rows, under its run's name
    runs = [fake_run(tmp_path, name, "carry") / "checkpoints" / "last.pt" for name in ("s7", "s8")]
    results = analyze_main([str(r) for r in runs] + ["--env", "FourRoomsDoors", "--episodes", "2",
                                                     "--out", str(tmp_path / "analysis")])
    assert set(results) == {"s7/last.pt (Carry Z)", "s8/last.pt (Carry Z)"}
    with pytest.raises(SystemExit, match="given twice"):
        analyze_main([str(runs[0])] * 2 + ["--env", "FourRoomsDoors", "--out", str(tmp_path)])


def test_plot_runs(tmp_path, capsys):
    runs = [fake_run(tmp_path, "a", "carry"), fake_run(tmp_path, "b", "reset")]
    out = tmp_path / "curves.png"
    plot_main([str(r) for r in runs] + ["--out", str(out), "--table"])
    assert out.stat().st_size > 10_000
    printed = capsys.readouterr().out.splitlines()
    # run a reaches 50% at its third evaluation (3K frames, 30 minibatches, 13 s); b never does
    row_a = next(line for line in printed if line.startswith("| a |"))
    row_b = next(line for line in printed if line.startswith("| b |"))
    assert row_a.split(" | ")[1] == "3K, 30, 0.2" and "not reached" in row_a
    assert row_a.endswith("| 60.0% |") and row_b.count("not reached") == 3
    with pytest.raises(SystemExit, match="holds no metrics.csv"):
        plot_main([str(tmp_path), "--out", str(out)])
    with pytest.raises(SystemExit, match="no run directory at .*missing"):
        plot_main([str(tmp_path / "missing"), "--out", str(out)])
    with open(runs[0] / "metrics.csv", "a") as f:
        f.write("4000,40,17.0\n")  # what a crash mid-write leaves
    with pytest.raises(SystemExit, match="a/metrics.csv has a row that is not numbers"):
        plot_main([str(runs[0]), "--out", str(out)])


def test_run_labels_say_what_is_carried(tmp_path):
    run = fake_run(tmp_path, "full", "carry")
    assert read_run(run)[0] == "full (hrm, FourRoomsDoors, cpu, carry, hindsight 1)"
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "carry_state": "full", "hindsight": 0}))
    assert read_run(run)[0] == "full (hrm, FourRoomsDoors, cpu, carry (full z), no hindsight)"


def curve_run(tmp_path, name, curve):
    """A run directory holding only metrics.csv, with (frames, success rate) evaluations."""
    run = tmp_path / name
    run.mkdir()
    with open(run / "metrics.csv", "w") as f:
        f.write("frames,updates,wall_seconds,success_rate,mean_episode_length,"
                "oracle_mean_episode_length\n")
        for frames, success in curve:
            f.write(f"{frames},{frames // 100},{frames / 100},{success},40.0,11.5\n")
    return run


def test_plot_runs_paired(tmp_path, capsys):
    runs = [curve_run(tmp_path, "a1", [(1000, 0.1), (2000, 0.3), (3000, 0.6)]),
            curve_run(tmp_path, "b1", [(1000, 0.2), (2000, 0.2), (3000, 0.4)]),
            # the means take the evaluations both runs made: 1,000 and 2,000 frames
            curve_run(tmp_path, "a2", [(1000, 0.25), (2000, 0.25), (2500, 0.25)]),
            curve_run(tmp_path, "b2", [(1000, 0.0), (2000, 0.4), (3000, 0.25)])]
    out = tmp_path / "curves.png"
    plot_main([str(r) for r in runs] + ["--out", str(out), "--paired", "--thresholds", "0.3", "0.5"])
    printed = capsys.readouterr().out.splitlines()
    assert next(line for line in printed if line.startswith("| pair")).count("frames A / B") == 2
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in printed
            if line.startswith(("| a1", "| a2", "| A ahead"))]
    assert rows[0] == ["a1 / b1", "3", "33.3% / 26.7%", "2,000 / 3,000", "3,000 / -", "60.0% / 40.0%"]
    assert rows[1] == ["a2 / b2", "2", "25.0% / 20.0%", "- / 2,000", "- / -", "25.0% / 25.0%"]
    # mean: both; to 30%: a1 only (a2 never); to 50%: a1 only (b1 never); final: a1 (a2 ties)
    assert rows[2] == ["A ahead in", "", "2 of 2", "1 of 2", "1 of 2", "1 of 2"]
    with pytest.raises(SystemExit, match="in pairs"):
        plot_main([str(r) for r in runs[:3]] + ["--out", str(out), "--paired"])
    lone = curve_run(tmp_path, "lone", [(5000, 0.5)])
    with pytest.raises(SystemExit, match="share no evaluation frames"):
        plot_main([str(runs[0]), str(lone), "--out", str(out), "--paired"])
    with pytest.raises(SystemExit):
        plot_main([str(runs[0]), "--out", str(out), "--thresholds", "80"])
    assert "--thresholds must lie in (0, 1], got [80.0]" in capsys.readouterr().err
