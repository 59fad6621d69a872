"""The benchmarks run in --quick mode, so that they keep working (no timing is asserted)."""

import importlib.util
import json
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_rows(rows, names):
    assert {r["name"] for r in rows} >= set(names)
    for row in rows:
        assert set(row) >= {"name", "frames_per_second", "limit_frames_per_second", "ratio"}
        assert row["frames_per_second"] > 0 and row["limit_frames_per_second"] > 0
        assert abs(row["ratio"] - row["frames_per_second"] / row["limit_frames_per_second"]) < 1e-9


def test_model_speed_quick(tmp_path):
    out = tmp_path / "model.json"
    load("model_speed").main(["--quick", "--json", str(out), "--presets", "cpu"])
    rows = json.loads(out.read_text())
    check_rows(rows, ["model-cpu-float32-cpu", "model-cpu-bfloat16-cpu"])
    assert all(r["train_steps_per_second"] > 0 for r in rows)


def test_collector_throughput_quick(tmp_path):
    out, png = tmp_path / "collector.json", tmp_path / "collector.png"
    load("collector_throughput").main(["--quick", "--json", str(out), "--plot", str(png)])
    assert png.stat().st_size > 10_000
    rows = json.loads(out.read_text())
    check_rows(rows, ["plain-loop", "plain-loop-astar", "torchrl-env-1", "torchrl-env-16",
                      "multisync-random-2-4", "multisync-hrm-cpu-2-4", "ray-random-2-4",
                      "ray-hrm-cpu-2-4", "model-only-cpu-16", "hand-rolled-hrm-cpu"])
    plain = next(r for r in rows if r["name"] == "plain-loop")
    assert plain["ratio"] == 1.0


def test_pipeline_speed_quick(tmp_path):
    out = tmp_path / "pipeline.json"
    load("pipeline_speed").main(["--quick", "--json", str(out)])
    rows = {row["name"]: row for row in json.loads(out.read_text())}
    assert set(rows) == {"collect-cpu", "learn-cpu-eager", "pipeline-cpu"}
    assert rows["collect-cpu"]["frames_per_second"] > 0
    assert rows["learn-cpu-eager"]["optimizer_steps_per_second"] > 0
    pipeline = rows["pipeline-cpu"]
    assert pipeline["frames_per_second"] > 0 and pipeline["optimizer_steps_per_second"] > 0
    # the example's own loop: 2 optimizer steps per 64-frame round (the quick flags)
    ratio = pipeline["optimizer_steps_per_second"] / pipeline["frames_per_second"]
    assert abs(ratio - 2 / 64) < 1e-6
    assert abs(pipeline["ratio"] - pipeline["frames_per_second"] / pipeline["limit_frames_per_second"]) < 1e-9


def test_gpu_check_quick_on_cpu(tmp_path):
    """benchmarks/gpu_check.py's CPU mode: every row there, the paths' Q-values within tolerance."""
    code = load("gpu_check").main(["--device", "cpu", "--quick", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = {row["name"]: row for row in result["rows"]}
    assert code == 0 and set(rows) == {"learn-eager", "learn-bf16", "collect-parallel", "train"}
    assert rows["learn-eager"]["max_q_difference"] == 0.0
    assert 0 < rows["learn-bf16"]["max_q_difference"] <= rows["learn-bf16"]["tolerance"]
    assert rows["collect-parallel"]["frames_per_second"] > 0
    assert rows["train"]["frames"] > 0 and 0 <= rows["train"]["success_rate"] <= 1
    assert (tmp_path / "train" / "metrics.csv").exists()
