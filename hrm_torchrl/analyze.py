"""Recurrent-convergence analysis (HRM-Agent §3.2, figures 5-7) of trained agents.

    python -m hrm_torchrl.analyze RUN [RUN ...] [--env FourRoomsDoors] --episodes 200 --out DIR

Each RUN is a run directory of examples/dqn_hrm.py (its checkpoints/best.pt, else last.pt) or a
checkpoint file; its variant (Carry Z / Reset Z) comes from the saved config. Greedy episodes run
with the module's diagnostics on, and every step of each maze's first episode, but its first step
(where both variants start from H_init/L_init), falls in one of four conditions: variant x
environment changed or not, "changed" meaning that a door changed on the step that produced the
observation.

Per condition and segment i = 1 .. segments-1 (the state after segment i; the last one equals the
final state by definition): the median over steps of MSE(z_H^i, z_H^final) and MSE(z_L^i,
z_L^final) (figures 5 and 6). And the divergence of the action distributions (figure 7):
KL(p_final || p_carried), p = softmax(Q), p_carried decoded from the state carried into the step
before any new computation. KL in that direction reads as the information the carried-in plan
lacks about the final decision, in nats; it is 0 when carrying already gives the final choice.

Writes convergence.csv/.json, divergence.csv/.json and convergence.png, divergence.png to DIR,
and success_by_distance.json: each run's greedy success by the goal's distance at the start
(``hrm_torchrl.evaluation.success_by_distance``), which tells a short-sighted agent apart.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch

from hrm_torchrl.evaluation import first_episodes, success_by_distance
from hrm_torchrl.module import HRMQValueNet
from hrm_torchrl.runs import load_agent
from hrm_torchrl.torchrl_env import MAZES

VARIANTS = {"carry": "Carry Z", "reset": "Reset Z"}


def condition_table(variant: str, mse_H, mse_L, q_carried, q_final, changed, counted) -> dict:
    """Splits one run's steps into (variant, changed) conditions.

    ``mse_H``/``mse_L`` [steps, segments], ``q_carried``/``q_final`` [steps, actions],
    ``changed``/``counted`` [steps] bool. Returns, per condition name, the number of steps, the
    per-segment medians for segments 1..segments-1 and the divergence statistics.
    """
    mse_H, mse_L = np.asarray(mse_H), np.asarray(mse_L)
    p_final = torch.softmax(torch.as_tensor(q_final, dtype=torch.float64), -1)
    log_p_carried = torch.log_softmax(torch.as_tensor(q_carried, dtype=torch.float64), -1)
    kl = (p_final * (p_final.log() - log_p_carried)).sum(-1).numpy()
    table = {}
    for is_changed in (True, False):
        rows = np.asarray(counted) & (np.asarray(changed) == is_changed)
        name = f"{VARIANTS[variant]}, env {'changed' if is_changed else 'not changed'}"
        n = int(rows.sum())
        table[name] = {
            "variant": VARIANTS[variant],
            "env_changed": is_changed,
            "steps": n,
            "median_mse_H": np.median(mse_H[rows][:, :-1], axis=0).tolist() if n else [],
            "median_mse_L": np.median(mse_L[rows][:, :-1], axis=0).tolist() if n else [],
            "median_kl": float(np.median(kl[rows])) if n else float("nan"),
            "mean_kl": float(np.mean(kl[rows])) if n else float("nan"),
        }
    return table


def analyze_run(net: HRMQValueNet, variant: str, env: str, episodes: int,
                seed: int) -> tuple[dict, list]:
    """The run's condition table, and its greedy success by the goal's distance at the start."""
    from torchrl.modules import QValueActor

    from hrm_torchrl.torchrl_env import make_env

    net.diagnostics = True
    maze_env = make_env(env, num_envs=episodes, primer=net.make_tensordict_primer())
    actor = QValueActor(net, spec=maze_env.action_spec_unbatched)
    scores = first_episodes(actor, maze_env, seed)
    maze_env.close()
    data = scores["rollout"]
    done = data["next", "done"].squeeze(-1).numpy()
    first_end = done.argmax(-1)
    in_first = np.arange(done.shape[1])[None, :] <= first_end[:, None]
    counted = in_first & ~data["is_init"].squeeze(-1).numpy()
    diag = data["diagnostics"]
    flat = lambda x: x.reshape(-1, *x.shape[2:]).numpy()  # noqa: E731
    table = condition_table(
        variant,
        flat(diag["mse_H"]), flat(diag["mse_L"]), flat(diag["q_carried"]),
        flat(diag["q_segments"][..., -1, :]),
        data["env_changed"].squeeze(-1).numpy().reshape(-1), counted.reshape(-1),
    )
    return table, success_by_distance(scores)


def write_outputs(results: dict, out: Path, title: str) -> None:
    """results: {run label: condition table}. Writes the CSV/JSON tables and the PNG plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "convergence.json").write_text(json.dumps(results, indent=1))
    with open(out / "convergence.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "condition", "level", "segment", "median_mse", "steps"])
        for run, table in results.items():
            for condition, row in table.items():
                for level in ("H", "L"):
                    for i, value in enumerate(row[f"median_mse_{level}"], start=1):
                        writer.writerow([run, condition, level, i, value, row["steps"]])
    divergence = {run: {c: {k: row[k] for k in ("steps", "median_kl", "mean_kl")}
                        for c, row in table.items()} for run, table in results.items()}
    (out / "divergence.json").write_text(json.dumps(divergence, indent=1))
    with open(out / "divergence.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "condition", "steps", "median_kl", "mean_kl"])
        for run, table in divergence.items():
            for condition, row in table.items():
                writer.writerow([run, condition, row["steps"], row["median_kl"], row["mean_kl"]])

    curves = sum(len(table) for table in results.values())
    legend_height = 0.2 * ((curves + 1) // 2)  # inches: two columns of entries
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2 + legend_height))
    for ax, level in zip(axes, ("H", "L")):
        for run, table in results.items():
            for condition, row in table.items():
                values = row[f"median_mse_{level}"]
                if values:
                    style = "-" if row["variant"] == "Carry Z" else "--"
                    marker = "o" if row["env_changed"] else "s"
                    ax.plot(range(1, len(values) + 1), values, style, marker=marker,
                            label=f"{run}: {condition} (n={row['steps']})")
        longest = max([1] + [len(row[f"median_mse_{level}"]) for table in results.values()
                             for row in table.values()])
        ax.set_xticks(range(1, longest + 1))
        ax.set_xlim(0.5, longest + 0.5)
        ax.set_xlabel("segment i (recurrent step)")
        ax.set_ylabel(f"median MSE(z_{level}^i, z_{level}^final)")
        ax.set_title(f"z_{level} convergence")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    # below the plots: inside, the legend of several runs hides their points
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=7)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, (legend_height + 0.1) / fig.get_figheight(), 1, 1))
    fig.savefig(out / "convergence.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(7.0, 1.6 * curves), 4.2))  # a bar per condition
    labels, values = [], []
    for run, table in divergence.items():
        for condition, row in table.items():
            labels.append(f"{run}\n{condition}")
            values.append(row["median_kl"])
    bars = ax.bar(range(len(values)), values,
                  color=["tab:blue", "tab:cyan", "tab:red", "tab:orange"] * (len(values) // 4 + 1))
    ax.bar_label(bars, fmt="%.2g", fontsize=8)  # small bars stay readable
    ax.set_xticks(range(len(values)), labels, fontsize=7)
    ax.set_ylabel("median KL(p_final || p_carried) [nats]")
    ax.set_title(f"{title}: divergence of the carried-in action distribution")
    fig.tight_layout()
    fig.savefig(out / "divergence.png", dpi=120)
    plt.close(fig)


def run_names(runs: list[str]) -> list[str]:
    """The runs' names in the tables: a directory's name, or for a checkpoint file in a run's
    checkpoints/ its run's and its own (``carry-s7/last.pt``); the paths as given where two
    names would be the same, since the tables are keyed by name."""
    names = []
    for run in map(Path, runs):
        if run.suffix == ".pt" and run.parent.name == "checkpoints":
            names.append(f"{run.parent.parent.name}/{run.name}")
        else:
            names.append(run.name)
    if len(set(names)) < len(names):
        names = list(runs)
    if len(set(names)) < len(names):
        raise ValueError(f"a run is given twice: {sorted(n for n in set(names) if names.count(n) > 1)}")
    return names


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories or checkpoint files")
    parser.add_argument("--env", choices=list(MAZES),
                        help="the maze; default: the one the runs were trained on")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20_000_000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.episodes < 1:
        raise SystemExit(f"error: --episodes must be at least 1, got {args.episodes}")
    try:
        names = run_names(args.runs)
        agents = [load_agent(run) for run in args.runs]  # every run checked before any episode
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    envs = {config.env for _, config in agents}
    env = args.env or (envs.pop() if len(envs) == 1 else None)
    if env is None:
        raise SystemExit(f"error: the runs were trained on different mazes {sorted(envs)}; "
                         "give --env")
    results, success = {}, {}
    for run, name, (net, config) in zip(args.runs, names, agents):
        if config.model != "hrm":
            raise SystemExit(f"error: {run} holds a {config.model} run; the analysis reads the "
                             "HRM's latent z, so it needs a --model hrm run")
        if config.env != env:
            raise SystemExit(f"error: {run} was trained on {config.env}, not {env}; give its own "
                             "--env or leave --env out")
        label = f"{name} ({VARIANTS[config.carry]})"
        results[label], success[label] = analyze_run(net, config.carry, env, args.episodes,
                                                     args.seed)
    write_outputs(results, Path(args.out), env)
    (Path(args.out) / "success_by_distance.json").write_text(json.dumps(success, indent=1))
    print(json.dumps({run: {c: {k: r[k] for k in ("steps", "median_kl")} for c, r in t.items()}
                      for run, t in results.items()}, indent=1))
    return results


if __name__ == "__main__":
    main()
