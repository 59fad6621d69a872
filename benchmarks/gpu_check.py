"""The paper preset on one device, in one run: the learner's paths, the collectors, the pipeline and
a short training run, every faster path checked against eager fp32.

    bash benchmarks/gpu_check.sh                              # on a lent GPU: cuda, ~8 minutes
    python benchmarks/gpu_check.py --device cpu --quick       # tiny, on a CPU (the tests run it)

Rows, written to OUT/gpu_check.json:
  learn-PATH        the learner alone (pipeline_speed.learn: sample, loss, backward, step, SoftUpdate,
                    deep supervision as the preset does): ms per optimizer step, and the largest
                    difference of its Q-values from eager fp32's on one batch (same weights)
                    PATH: eager, tf32 (cuda), bf16 (autocast), compiled (torch.compile), cudagraphs
                    (cuda: torch.compile mode "reduce-overhead"); a path that fails says why
  collect-KIND      frames/s of the multisync, multiasync and parallel collectors with the
                    preset's policy
  pipeline-KIND     the example itself for --seconds, each collector (not with --quick)
  train             the example with the preset for --train-minutes: frames, optimizer steps and
                    greedy success at its end; its metrics.csv and summary.json go to OUT/train/
It exits 1 when a path's Q-values differ from eager's by more than its tolerance.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_speed import EXAMPLE, QUICK_FLAGS, ROOT, collect, learn, pipeline  # noqa: E402

from hrm_torchrl import make_env  # noqa: E402
from hrm_torchrl.dqn import config_from_changes, make_learner, make_network, parse_args  # noqa: E402

# the largest |Q - Q_eager| each path may show (Q-values of these mazes lie within about [-1, 1])
TOLERANCE = {"eager": 0.0, "tf32": 1e-2, "bf16": 5e-2, "compiled": 1e-3, "cudagraphs": 1e-3}
CUDA_ONLY = ("tf32", "cudagraphs")


@contextlib.contextmanager
def tf32(enabled: bool):
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def variant(cfg, path: str):
    """(the config, the torch.compile argument of pipeline_speed.learn) of a path."""
    if path == "bf16":
        cfg = dataclasses.replace(cfg, hrm=dataclasses.replace(cfg.hrm, dtype="bfloat16"))
    return cfg, {"compiled": True, "cudagraphs": "reduce-overhead"}.get(path, False)


def q_difference(cfg, path: str) -> float:
    """max |Q_path - Q_eager| on the replayed-like states of a short rollout, same weights."""
    torch.manual_seed(0)
    eager = make_network(cfg).to(cfg.device)
    path_cfg, compiled = variant(cfg, path)
    other = make_network(path_cfg).to(cfg.device)
    other.load_state_dict(eager.state_dict())
    if compiled:
        other.compile_modules(mode=None if compiled is True else compiled)
    env = make_env(cfg.env, num_envs=16, seed=0, primer=eager.make_tensordict_primer(),
                   device=cfg.device)
    actor = make_learner(eager, env.action_spec_unbatched, cfg).actor
    with torch.no_grad(), tf32(False):
        data = env.rollout(8, actor, break_when_any_done=False).reshape(-1)
        q_eager = eager(data.clone())["action_value"]
    env.close()
    with torch.no_grad(), tf32(path == "tf32"):
        for _ in range(3):  # CUDA graphs record on the first calls
            q_other = other(data.clone())["action_value"]
    return float((q_other.float() - q_eager.float()).abs().max())


def train(flags: list, minutes: float, out: Path) -> dict:
    run_dir = out / "train"
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, str(EXAMPLE), "--minutes", str(minutes), "--frames", str(10**9), *flags,
           "--run-dir", str(run_dir)]  # flags given after the defaults win
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    for name in ("checkpoints", "logs", "tmp"):  # the small files stay
        shutil.rmtree(run_dir / name, ignore_errors=True)
    return {k: summary[k] for k in ("frames", "optimizer_steps", "success_rate",
                                    "frames_per_second", "wall_seconds")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    parser.add_argument("--preset", default="paper", help="the example's preset")
    parser.add_argument("--seconds", type=float, default=45.0, help="each pipeline row's run")
    parser.add_argument("--train-minutes", type=float, default=4.0, help="the training run")
    parser.add_argument("--quick", action="store_true", help="tiny rows (the tests use it)")
    parser.add_argument("--out", default=None, help="where gpu_check.json goes (default: a "
                        "temporary folder, printed)")
    parser.add_argument("example_flags", nargs="*", help="after --: flags of examples/dqn_hrm.py")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.exit(2, "error: --device cuda, but torch sees no CUDA device\n")
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu_check-"))
    out.mkdir(parents=True, exist_ok=True)
    flags = ["--preset", args.preset, "--device", args.device, "--no-compile", *args.example_flags]
    if args.quick:
        flags += [*QUICK_FLAGS, "--hrm", "segments=2", "--hrm", "H_layers=1", "--hrm", "L_layers=1"]
    cfg = config_from_changes(parse_args(flags)[0])
    seconds = 1.0 if args.quick else 10.0
    rows, disagree = [], []

    def add(name, **values):
        rows.append({"name": name, **values})
        print(f"{name:22s} " + "  ".join(f"{k} {v:,.4g}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in values.items()), flush=True)

    paths = ["eager", "bf16"] if args.quick else list(TOLERANCE)
    for path in paths:
        if path in CUDA_ONLY and args.device != "cuda":
            continue
        try:
            difference = q_difference(cfg, path)
            path_cfg, compiled = variant(cfg, path)
            with tf32(path == "tf32"):
                steps_per_second = learn(path_cfg, compiled, seconds)
        except Exception as error:  # a path that fails is a row that says why, not the end
            add(f"learn-{path}", error=f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")
            continue
        add(f"learn-{path}", ms_per_optimizer_step=1000 / steps_per_second,
            max_q_difference=difference, tolerance=TOLERANCE[path])
        if difference > TOLERANCE[path]:
            disagree.append(path)
    for kind in ("parallel",) if args.quick else ("multisync", "multiasync", "parallel"):
        kind_cfg = dataclasses.replace(cfg, collector=kind)
        add(f"collect-{kind}", frames_per_second=collect(kind_cfg, seconds))
        if not args.quick:
            run = pipeline([*flags, "--collector", kind], args.seconds, cfg.frames_per_batch * 4)
            add(f"pipeline-{kind}", **run)
    started = time.time()
    train_flags = [*flags, "--eval-every", str(cfg.frames_per_batch * 4)]
    if args.quick:  # a few rounds, 8 evaluation mazes
        train_flags += ["--frames", str(cfg.frames_per_batch * 3), "--eval-episodes", "8"]
    add("train", **train(train_flags, 0 if args.quick else args.train_minutes, out),
        seconds_with_start_up=time.time() - started)
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    result = {"device": device, "torch": torch.__version__, "preset": args.preset,
              "quick": args.quick, "date": time.strftime("%Y-%m-%d"), "rows": rows}
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out / 'gpu_check.json'}")
    if disagree:
        print(f"error: these paths' Q-values differ from eager's beyond tolerance: {disagree}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
