"""research/depth_study.py: the table's cost columns and scores, the plot, and its errors."""

import json

import pytest

from hrm_torchrl.config import HRMConfig
from research import depth_study


def write_run(path, network, rows, target="actions"):
    path.write_text(json.dumps({"network": network, "rows": rows, "target": target}))
    return path


def row(minibatches, seconds, accuracy, success):
    return {"minibatches": minibatches, "optimizer_steps": minibatches, "seconds": seconds,
            "loss": 0.25, "accuracy": accuracy, "accuracy_far": accuracy - 0.1,
            "success_rate": success}


def test_table_and_plot(tmp_path, capsys):
    deep = HRMConfig.cpu(H_cycles=2, L_cycles=2, gradient="full").to_dict()
    one_step = HRMConfig.cpu(H_cycles=2, L_cycles=2, gradient="one_step").to_dict()
    runs = [write_run(tmp_path / "full-2x2.json", deep, [row(1000, 100.0, 0.8, 0.5),
                                                          row(2000, 250.0, 0.9, 0.4)]),
            write_run(tmp_path / "onestep-2x2.json", one_step, [row(1000, 50.0, 0.85, 0.6)],
                      target="values"),
            write_run(tmp_path / "mlp.json", {"model": "mlp"}, [row(1000, 10.0, 0.84, 0.7)])]
    out = tmp_path / "study.png"
    depth_study.main([*map(str, runs), "--out", str(out)])
    lines = capsys.readouterr().out.splitlines()
    # 2 segments x 2 H cycles x (2 L + 1 H) = 12 passes: all with the full gradient, 1 + 1 without
    assert lines[2] == "| full-2x2 | actions | 12 (12) | 2,000 | 8.0 | 0.25 | 90.0 / 80.0% | 40.0% (50.0%) |"
    assert lines[3] == ("| onestep-2x2 | values | 12 (2) | 1,000 | 20.0 | 0.25 | 85.0 / 75.0% | "
                        "60.0% (60.0%) |")
    assert lines[4].startswith("| mlp | actions |  | 1,000 | 100.0 |")
    assert out.stat().st_size > 10_000


def test_old_rows_and_errors(tmp_path):
    old = {"network": HRMConfig.cpu().to_dict(), "rows": [row(1000, 60.0, 0.85, 0.5)]}
    del old["rows"][0]["minibatches"]  # written before the column existed: one step a minibatch
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert depth_study.load(tmp_path / "old.json")["rows"][0]["minibatches"] == 1000
    with pytest.raises(SystemExit, match="no such file"):
        depth_study.main([str(tmp_path / "missing.json")])
    (tmp_path / "empty.json").write_text(json.dumps({"network": {}, "rows": []}))
    with pytest.raises(SystemExit, match="holds no rows"):
        depth_study.main([str(tmp_path / "empty.json")])
