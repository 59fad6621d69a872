"""The depth study's table and plot from ``research/imitation.py``'s JSON rows (issue 33): one
line per variant, held-out accuracy on states >= 8 steps from the goal against minibatches, and a
markdown table with each variant's cost beside its scores.

    python research/depth_study.py research/depth_study/*.json [--out FILE.png]

A variant is named by its JSON file's stem. Cost columns: block passes per environment step
(forward), those that keep gradient (``HRMConfig.gradient``), and minibatches per second of
training (the rows' ``seconds``: training only, evaluations excluded). The target column says what
the network was taught (``--target``): A*'s actions (loss in nats), its values (squared error),
their log scale (squared error in steps²), or classes of steps or of value (cross-entropy, nats).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hrm_torchrl.config import HRMConfig


def load(path: Path) -> dict:
    """The run's JSON, with its rows' minibatches filled in from optimizer steps for runs written
    before ``minibatches`` was a column (one optimizer step per minibatch there)."""
    result = json.loads(path.read_text())
    if not result.get("rows"):
        raise SystemExit(f"error: {path} holds no rows")
    for row in result["rows"]:
        row.setdefault("minibatches", row["optimizer_steps"])
    return result


def block_passes(network: dict) -> tuple[int | None, int | None]:
    """(block passes per forward, of which with gradient), or (None, None) for a non-HRM."""
    if "hidden" not in network:
        return None, None
    cfg = HRMConfig.from_dict(network)
    passes = cfg.block_passes_per_segment * cfg.segments
    return passes, passes if cfg.gradient == "full" else cfg.L_layers + cfg.H_layers


def table(runs: dict[str, dict]) -> str:
    lines = ["| variant | target | block passes (with gradient) | minibatches | minibatches/s | loss | "
             "held-out accuracy: all / >= 8 away | greedy success (best) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, result in runs.items():
        last = result["rows"][-1]
        passes, with_grad = block_passes(result["network"])
        cost = "" if passes is None else f"{passes} ({with_grad})"
        rate = last["minibatches"] / last["seconds"] if last["seconds"] else float("nan")
        best = max(row["success_rate"] for row in result["rows"])
        target = result.get("target", "actions")  # runs before --target taught actions
        lines.append(f"| {name} | {target} | {cost} | {last['minibatches']:,} | {rate:.1f} | "
                     f"{last['loss']:.2g} | "
                     f"{100 * last['accuracy']:.1f} / {100 * last['accuracy_far']:.1f}% | "
                     f"{100 * last['success_rate']:.1f}% ({100 * best:.1f}%) |")
    return "\n".join(lines)


def plot(runs: dict[str, dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_far, ax_success) = plt.subplots(1, 2, figsize=(13, 5))
    for name, result in runs.items():
        minibatches = [row["minibatches"] for row in result["rows"]]
        ax_far.plot(minibatches, [100 * row["accuracy_far"] for row in result["rows"]], "o-",
                    label=name)
        ax_success.plot(minibatches, [100 * row["success_rate"] for row in result["rows"]], "o-",
                        label=name)
    ax_far.set(xlabel="minibatches of 128", ylabel="held-out accuracy, >= 8 steps away (%)",
               title="taught A*: per-state accuracy on far goals")
    ax_success.set(xlabel="minibatches of 128", ylabel="greedy success, 200 mazes (%)",
                   title="greedy success on the evaluation mazes")
    for ax in (ax_far, ax_success):
        ax.grid(alpha=0.3)
    ax_far.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="research/imitation.py --json files")
    parser.add_argument("--out", type=Path, help="write the plot here")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.runs if not p.is_file()]
    if missing:
        raise SystemExit(f"error: no such file: {', '.join(missing)}")
    runs = {path.stem: load(path) for path in args.runs}
    print(table(runs))
    if args.out:
        plot(runs, args.out)


if __name__ == "__main__":
    main()
