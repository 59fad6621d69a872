"""Learning curves of examples/dqn_hrm.py runs (HRM-Agent figures 3 and 4), beside the authors'.

    python -m hrm_torchrl.plot_runs RUN [RUN ...] --out FILE.png [--table] [--paired]
        [--thresholds 0.5 0.8 0.9]

Greedy success rate against collected frames (hardware-independent), optimizer steps and wall
time, and mean episode length (failures count 80) against frames, one line per run, with the A*
oracle's mean episode length on the same evaluation seeds. On FourRoomsDoors, the authors' agent
is drawn beside ours (approximate points read off their published curves, see AUTHORS). With
``--table``, prints a Markdown table of the frames, minibatches and minutes each run took to
reach each threshold (50, 80 and 90% greedy success unless ``--thresholds`` says otherwise).
With ``--paired``, the runs are read as pairs (A, B), e.g. Carry Z and Reset Z of one seed, and a
second table compares each pair: mean success over the evaluations both runs made (the area under
the curve against frames), frames to each threshold, final success, and in how many pairs A leads.
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
    if not run.exists():
        raise SystemExit(f"error: no run directory at {run}")
    if not metrics.exists():
        raise SystemExit(f"error: {run} holds no metrics.csv (is it a run directory?)")
    with open(metrics) as f:
        rows = list(csv.DictReader(f))
    try:  # a crash mid-write (before writes were atomic) could leave a short or garbled row
        columns = {key: [float(row[key]) for row in rows] for key in rows[0]} if rows else {}
    except (TypeError, ValueError) as error:
        raise SystemExit(f"error: {metrics} has a row that is not numbers ({error})") from None
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


def table(runs: list[Path], thresholds=THRESHOLDS) -> str:
    """Markdown: per run, frames / minibatches / minutes to each threshold of greedy success."""
    head = "| run | " + " | ".join(f"to {t:.0%}: frames, minibatches, min" for t in thresholds)
    lines = [head + " | final success |", "|---" * (len(thresholds) + 2) + "|"]
    for run in runs:
        _, columns, _ = read_run(run)
        cells = []
        for threshold in thresholds:
            row = first_reaching(columns, threshold)
            cells.append("not reached" if row is None else
                         f"{row['frames'] / 1e3:,.0f}K, {row['updates']:,.0f}, "
                         f"{row['wall_seconds'] / 60:.1f}")
        final = f"{columns['success_rate'][-1]:.1%}" if columns else "-"
        lines.append(f"| {run.name} | " + " | ".join(cells) + f" | {final} |")
    return "\n".join(lines)


def paired_table(runs: list[Path], thresholds=THRESHOLDS) -> str:
    """Markdown: runs (A1, B1, A2, B2, ...) compared pair by pair, and how many pairs A leads.

    The mean success is taken over the evaluations at the frames both runs of a pair were
    evaluated at, so for runs of the same ``--frames`` and ``--eval-every`` it is the area under
    their curves against frames: the paper's "reaches high success faster" as one number.
    """
    if len(runs) % 2:
        raise SystemExit(f"error: --paired takes runs in pairs (A, B); got {len(runs)} runs")
    pairs = [(runs[i], runs[i + 1]) for i in range(0, len(runs), 2)]
    head = ["pair (A / B)", "evaluations", "mean success A / B"]
    head += [f"to {t:.0%}: frames A / B" for t in thresholds] + ["final A / B"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    leads = [0] * (len(thresholds) + 2)  # mean, each threshold, final
    for a, b in pairs:
        (_, ca, _), (_, cb, _) = read_run(a), read_run(b)
        success = [dict(zip(c.get("frames", []), c.get("success_rate", []))) for c in (ca, cb)]
        shared = sorted(set(success[0]) & set(success[1]))
        if not shared:
            raise SystemExit(f"error: {a} and {b} share no evaluation frames; pair runs of the "
                             "same --frames and --eval-every")
        mean_a, mean_b = (sum(s[f] for f in shared) / len(shared) for s in success)
        reached = [[first_reaching(c, t) for t in thresholds] for c in (ca, cb)]
        frames = [[None if r is None else r["frames"] for r in rs] for rs in reached]
        final_a, final_b = ca["success_rate"][-1], cb["success_rate"][-1]
        leads[0] += mean_a > mean_b
        for i in range(len(thresholds)):  # A leads when it got there first, or B never did
            fa, fb = frames[0][i], frames[1][i]
            leads[i + 1] += fa is not None and (fb is None or fa < fb)
        leads[-1] += final_a > final_b
        cells = [f"{a.name} / {b.name}", str(len(shared)), f"{mean_a:.1%} / {mean_b:.1%}"]
        cells += [" / ".join("-" if f is None else f"{f:,.0f}" for f in pair)
                  for pair in zip(*frames)]
        cells.append(f"{final_a:.1%} / {final_b:.1%}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("| A ahead in | | " + " | ".join(f"{n} of {len(pairs)}" for n in leads) + " |")
    return "\n".join(lines)


def plot(runs: list[Path], out: Path, paired: bool = False) -> None:
    """The four panels; with ``paired``, a pair shares a colour, A solid and B dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    (ax_frames, ax_steps), (ax_wall, ax_length) = axes
    oracle, envs = [], set()
    for i, run in enumerate(runs):
        label, columns, config = read_run(run)
        if not columns:
            continue
        envs.add(config.get("env"))
        style = dict(marker=".")
        if paired:
            style.update(color=f"C{i // 2}", linestyle=("-", "--")[i % 2])
        line, = ax_frames.plot(columns["frames"], columns["success_rate"], label=label, **style)
        style = dict(marker=".", color=line.get_color(), linestyle=line.get_linestyle())
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
                        help="also print frames/minibatches/minutes to each threshold of success")
    parser.add_argument("--paired", action="store_true",
                        help="also compare the runs as pairs (A, B): A1 B1 A2 B2 ...")
    parser.add_argument("--thresholds", nargs="+", type=float, default=list(THRESHOLDS),
                        help="success rates for the tables (default: 0.5 0.8 0.9)")
    args = parser.parse_args(argv)
    bad = [t for t in args.thresholds if not 0 < t <= 1]
    if bad:
        parser.error(f"--thresholds must lie in (0, 1], got {bad}")
    paired = paired_table(args.runs, args.thresholds) if args.paired else None  # errors first
    plot(args.runs, args.out, args.paired)
    print(f"wrote {args.out}")
    if args.table:
        print(table(args.runs, args.thresholds))
    if paired:
        print(paired)


if __name__ == "__main__":
    main()
