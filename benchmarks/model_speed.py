"""Inference frames/s (and training steps/s) of each HRM preset, fp32 and bf16, against the
matmul-bound limit: the config's FLOPs per frame over a matmul peak measured in the same run.

    python benchmarks/model_speed.py [--quick] [--json FILE] [--batch 256] [--compile]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from hrm_torchrl import HRMConfig, HRMQValueNet


def timed(fn, min_seconds: float, warmup: int = 1) -> float:
    """Seconds per call of ``fn``, repeated for at least ``min_seconds``."""
    for _ in range(warmup):
        fn()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / calls


def matmul_peak(dtype: torch.dtype, device: str, n: int, min_seconds: float) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def run():
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()

    return 2 * n**3 / timed(run, min_seconds)


def batch(net: HRMQValueNet, rows: int, device: str):
    from tensordict import TensorDict

    return TensorDict(
        {
            "observation": torch.randint(0, 128, (rows, net.config.seq_len), dtype=torch.uint8),
            "z_H": torch.randn(rows, *net.state_shape),
            "z_L": torch.randn(rows, *net.state_shape),
            "is_init": torch.zeros(rows, 1, dtype=torch.bool),
        },
        batch_size=[rows],
    ).to(device)


def measure(preset: str, dtype: str, device: str, rows: int, min_seconds: float, compile_: bool,
            peaks: dict) -> dict:
    torch.manual_seed(0)
    config = HRMConfig.preset(preset, dtype=dtype)
    net = HRMQValueNet(config).to(device)
    if compile_:
        net.core.segment = torch.compile(net.core.segment)
    td = batch(net, rows, device)

    def infer():
        with torch.no_grad():
            net(td.clone())
        if device == "cuda":
            torch.cuda.synchronize()

    optim = torch.optim.Adam(net.parameters(), lr=1e-4)

    def train():
        loss = net(td.clone())["action_value"].pow(2).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        if device == "cuda":
            torch.cuda.synchronize()

    frames_per_second = rows / timed(infer, min_seconds)
    limit = peaks[dtype] / config.flops_per_frame()
    return {
        "name": f"model-{preset}-{dtype}-{device}",
        "preset": preset,
        "dtype": dtype,
        "device": device,
        "batch": rows,
        "frames_per_second": frames_per_second,
        "limit_frames_per_second": limit,
        "ratio": frames_per_second / limit,
        "gflop_per_frame": config.flops_per_frame() / 1e9,
        "train_steps_per_second": 1 / timed(train, min_seconds),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny batch, short timings")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--compile", action="store_true", help="torch.compile the segment")
    parser.add_argument("--presets", nargs="*", default=["cpu", "paper"])
    args = parser.parse_args(argv)
    rows, seconds = (8, 0.2) if args.quick else (args.batch, 3.0)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = []
    for device in devices:
        n = 512 if args.quick else 2048
        peaks = {
            "float32": matmul_peak(torch.float32, device, n, seconds),
            "bfloat16": matmul_peak(torch.bfloat16, device, n, seconds),
        }
        print(f"{device}: matmul peak fp32 {peaks['float32'] / 1e9:.0f} GFLOP/s, "
              f"bf16 {peaks['bfloat16'] / 1e9:.0f} GFLOP/s")
        for preset in args.presets:
            for dtype in ("float32", "bfloat16"):
                row = measure(preset, dtype, device, rows, seconds, args.compile, peaks)
                results.append(row)
    print(f"{'name':34s} {'frames/s':>10s} {'limit':>10s} {'ratio':>6s} {'train steps/s':>14s}")
    for r in results:
        print(f"{r['name']:34s} {r['frames_per_second']:10.1f} {r['limit_frames_per_second']:10.1f} "
              f"{r['ratio']:6.2f} {r['train_steps_per_second']:14.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
