"""Learning curves of examples/dqn_hrm.py runs (HRM-Agent figures 3 and 4).

    python -m hrm_torchrl.plot_runs RUN [RUN ...] --out FILE.png

Greedy success rate and mean episode length (failures count 80) against collected frames, one line
per run, with the A* oracle's mean episode length on the same evaluation seeds as a reference.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def read_run(run: Path) -> tuple[str, dict]:
    metrics = run / "metrics.csv"
    if not metrics.exists():
        raise SystemExit(f"error: {run} holds no metrics.csv (is it a run directory?)")
    with open(metrics) as f:
        rows = list(csv.DictReader(f))
    columns = {key: [float(row[key]) for row in rows] for key in rows[0]} if rows else {}
    label = run.name
    config_file = run / "config.json"
    if config_file.exists():
        config = json.loads(config_file.read_text())
        label = f"{run.name} ({config['env']}, {config['preset']}, {config['carry']})"
    return label, columns


def plot(runs: list[Path], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_success, ax_length) = plt.subplots(1, 2, figsize=(12, 4.5))
    oracle = []
    for run in runs:
        label, columns = read_run(run)
        if not columns:
            continue
        ax_success.plot(columns["frames"], columns["success_rate"], marker=".", label=label)
        ax_length.plot(columns["frames"], columns["mean_episode_length"], marker=".", label=label)
        oracle.append(columns["oracle_mean_episode_length"][-1])
    if oracle:
        ax_length.axhline(sum(oracle) / len(oracle), color="k", linestyle=":",
                          label="A* oracle (same seeds)")
    ax_success.set(xlabel="frames collected", ylabel="greedy success rate", ylim=(0, 1.02),
                   title="Goal reached")
    ax_length.set(xlabel="frames collected", ylabel="mean episode length (failure = 80)",
                  title="Episode length")
    for ax in (ax_success, ax_length):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories of dqn_hrm.py")
    parser.add_argument("--out", required=True, type=Path, help="the PNG to write")
    args = parser.parse_args(argv)
    plot(args.runs, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
