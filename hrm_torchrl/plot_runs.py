"""Learning curves of examples/dqn_hrm.py runs (HRM-Agent figures 3 and 4), beside the authors'.

    python -m hrm_torchrl.plot_runs RUN [RUN ...] --out FILE.png [--table]

Greedy success rate against collected frames (hardware-independent), optimizer steps and wall
time, and mean episode length (failures count 80) against frames, one line per run, with the A*
oracle's mean episode length on the same evaluation seeds. On FourRoomsDoors, the authors' agent
is drawn beside ours (approximate points read off their published curves, see AUTHORS). With
``--table``, prints a Markdown table of the frames, minibatches and minutes each run took to
reach 50, 80 and 90% greedy success.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

# The authors' FourRoomsDoors agent (paper preset, no relabeling), approximate points read off
# their public training plots (shared/STACK.md): (frames, greedy success). Their optimizer steps
# are frames / 256 minibatch frames x 8 segment steps (~85K steps at ~2.7M frames).
AUTHORS = {
    "FourRoomsDoors": [(0, 0.05), (1_300_000, 0.15), (2_700_000, 0.90), (4_800_000, 0.95),
                       (6_400_000, 0.99)],
}
AUTHORS_OPTIMIZER_STEPS_PER_FRAME = 8 / 256
THRESHOLDS = (0.5, 0.8, 0.9)


def read_run(run: Path) -> tuple[str, dict, dict]:
    """(label, columns of metrics.csv as float lists, config.json or {})."""
    metrics = run / "metrics.csv"
    if not metrics.exists():
        raise SystemExit(f"error: {run} holds no metrics.csv (is it a run directory?)")
    with open(metrics) as f:
        rows = list(csv.DictReader(f))
    columns = {key: [float(row[key]) for row in rows] for key in rows[0]} if rows else {}
    if columns and "optimizer_steps" not in columns:  # runs from before the column existed
        columns["optimizer_steps"] = columns["updates"]
    config, label = {}, run.name
    config_file = run / "config.json"
    if config_file.exists():
        config = json.loads(config_file.read_text())
        carry = config["carry"]
        if config.get("carry_state") == "full" and carry != "none":
            carry += " (full z)"
        parts = [config.get("model", "hrm"), config["env"], config["preset"], carry]
        if "hindsight" in config:
            parts.append(f"hindsight {config['hindsight']}" if config["hindsight"] else "no hindsight")
        label = f"{run.name} ({', '.join(parts)})"
    return label, columns, config


def first_reaching(columns: dict, threshold: float) -> dict | None:
    """The first evaluation whose success rate reaches ``threshold``, or None."""
    for i, success in enumerate(columns.get("success_rate", [])):
        if success >= threshold:
            return {key: values[i] for key, values in columns.items()}
    return None


def table(runs: list[Path]) -> str:
    """Markdown: per run, frames / minibatches / minutes to 50, 80 and 90% greedy success."""
    head = "| run | " + " | ".join(f"to {t:.0%}: frames, minibatches, min" for t in THRESHOLDS)
    lines = [head + " | final success |", "|---" * (len(THRESHOLDS) + 2) + "|"]
    for run in runs:
        _, columns, _ = read_run(run)
        cells = []
        for threshold in THRESHOLDS:
            row = first_reaching(columns, threshold)
            cells.append("not reached" if row is None else
                         f"{row['frames'] / 1e3:,.0f}K, {row['updates']:,.0f}, "
                         f"{row['wall_seconds'] / 60:.1f}")
        final = f"{columns['success_rate'][-1]:.1%}" if columns else "-"
        lines.append(f"| {run.name} | " + " | ".join(cells) + f" | {final} |")
    return "\n".join(lines)


def plot(runs: list[Path], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    (ax_frames, ax_steps), (ax_wall, ax_length) = axes
    oracle, envs = [], set()
    for run in runs:
        label, columns, config = read_run(run)
        if not columns:
            continue
        envs.add(config.get("env"))
        line, = ax_frames.plot(columns["frames"], columns["success_rate"], marker=".", label=label)
        style = dict(marker=".", color=line.get_color())
        ax_steps.plot(columns["optimizer_steps"], columns["success_rate"], **style)
        ax_wall.plot([s / 60 for s in columns["wall_seconds"]], columns["success_rate"], **style)
        ax_length.plot(columns["frames"], columns["mean_episode_length"], **style)
        oracle.append(columns["oracle_mean_episode_length"][-1])
    for env in sorted(e for e in envs if e in AUTHORS):
        frames, success = zip(*AUTHORS[env])
        style = dict(color="0.4", linestyle="--", marker="x")
        ax_frames.plot(frames, success, label=f"authors' agent, {env} (approx., read off their plots)",
                       **style)
        ax_steps.plot([f * AUTHORS_OPTIMIZER_STEPS_PER_FRAME for f in frames], success, **style)
    if oracle:
        ax_length.axhline(sum(oracle) / len(oracle), color="k", linestyle=":",
                          label="A* oracle (same seeds)")
        ax_length.legend(fontsize=7)
    for ax, xlabel in ((ax_frames, "frames collected"), (ax_steps, "optimizer steps"),
                       (ax_wall, "wall time [min] (machine-dependent)")):
        ax.set(xlabel=xlabel, ylabel="greedy success rate", ylim=(0, 1.02))
        for threshold in (0.8, 0.9):
            ax.axhline(threshold, color="0.8", linewidth=0.8, zorder=0)
    for ax in (ax_frames, ax_steps):  # each on its own: steps run ~16-64x fewer than frames
        if ax.get_xlim()[1] > 1e5:
            ax.set_xscale("symlog", linthresh=1e5)
            ax.set_xlim(left=0)
    ax_frames.set_title("Goal reached against frames")
    ax_steps.set_title("... against optimizer steps")
    ax_wall.set_title("... against wall time")
    ax_length.set(xlabel="frames collected", ylabel="mean episode length (failure = 80)",
                  title="Episode length")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    ax_frames.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories of dqn_hrm.py")
    parser.add_argument("--out", required=True, type=Path, help="the PNG to write")
    parser.add_argument("--table", action="store_true",
                        help="also print frames/minibatches/minutes to 50/80/90%% success")
    args = parser.parse_args(argv)
    plot(args.runs, args.out)
    print(f"wrote {args.out}")
    if args.table:
        print(table(args.runs))


if __name__ == "__main__":
    main()
