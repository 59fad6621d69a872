"""Watch a trained agent: greedy episodes in the terminal, or as animated GIFs.

    python -m hrm_torchrl.play RUN_OR_CHECKPOINT [--episodes 3] [--seed S] [--env ENV]
        [--carry carry|reset] [--delay 0.3] [--gif OUT.gif] [--no-astar] [--max-steps N]

Maze i starts from ``reset(seed=S + i)``; the default S is the training runs' evaluation seed, so
that the first episodes are those of the run's own evaluations. In the terminal each step prints
the maze, the action, the four Q-values and whether a door changed (``--delay`` seconds apart, the
screen redrawn, to watch it live). With ``--gif`` each episode becomes an animated GIF (``OUT.gif``,
or ``OUT-0.gif``, ``OUT-1.gif``, ... for several): per frame the maze with the agent's last moves
and the A* path under the current doors (``--no-astar`` hides it), the Q-values, the step and a
marker when the doors changed; under them, for an HRM, the latent as a picture: for every step so
far, the distance (MSE) between z_H after each segment and its final value (the paper's figures
5-6 for one episode), on a log scale: a carried z starts near its final value and jumps when a
door changes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torchrl.modules import QValueActor

from hrm_torchrl.dqn import EVAL_SEED
from hrm_torchrl.evaluation import first_episodes
from hrm_torchrl.mazes import AGENT, CLOSED_DOOR, COLORS, GOAL, OPEN_DOOR, WALL
from hrm_torchrl.module import HRMQValueNet
from hrm_torchrl.oracle import read_maze
from hrm_torchrl.runs import RunError, load_agent
from hrm_torchrl.torchrl_env import MAZES, make_env

ACTIONS = ("north", "east", "south", "west")
ARROWS = ("^", ">", "v", "<")
ANSI = {WALL: "\x1b[90m#", CLOSED_DOOR: "\x1b[31m+", OPEN_DOOR: "\x1b[32m'", AGENT: "\x1b[1;34m@",
        GOAL: "\x1b[1;33m>"}


def play(net, env_name: str, episodes: int, seed: int, max_steps: int | None = None) -> list[dict]:
    """Greedy first episodes of ``net`` on ``episodes`` mazes from ``seed``. Returns one dict per
    episode: ``observations`` [steps + 1, 11, 11] (the last one the state the episode ended in),
    ``actions``, ``q`` [steps, 4], ``changed`` (a door changed on the step that led there),
    ``success``, and for an HRM ``mse_H`` / ``mse_L`` [steps, segments]."""
    hrm = isinstance(net, HRMQValueNet)
    if hrm:
        net.diagnostics = True
    kwargs = {} if max_steps is None else {"max_steps": max_steps}
    env = make_env(env_name, num_envs=episodes, primer=net.make_tensordict_primer(), **kwargs)
    actor = QValueActor(net, spec=env.action_spec_unbatched)
    scores = first_episodes(actor, env, seed)
    env.close()
    data = scores["rollout"]
    done = data["next", "done"].squeeze(-1).numpy()
    out = []
    for i in range(episodes):
        steps = int(done[i].argmax()) + 1
        obs = data["observation"][i, :steps].reshape(steps, 11, 11).numpy()
        last = data["next", "observation"][i, steps - 1].reshape(1, 11, 11).numpy()
        episode = {
            "observations": np.concatenate([obs, last]),
            "actions": data["action"][i, :steps].argmax(-1).numpy(),
            "q": data["action_value"][i, :steps].numpy(),
            "changed": data["next", "env_changed"][i, :steps].squeeze(-1).numpy(),
            "success": bool(scores["success"][i]),
        }
        if hrm:
            episode["mse_H"] = data["diagnostics", "mse_H"][i, :steps].numpy()
            episode["mse_L"] = data["diagnostics", "mse_L"][i, :steps].numpy()
        out.append(episode)
    if hrm:
        net.diagnostics = False
    return out


def ansi_maze(grid: np.ndarray) -> str:
    return "\n".join("".join(ANSI.get(int(c), "\x1b[0m.") + "\x1b[0m" for c in row) for row in grid)


def print_episode(episode: dict, index: int, delay: float) -> None:
    for t, action in enumerate(episode["actions"]):
        if delay:
            print("\x1b[2J\x1b[H", end="")  # clear the screen: watch it live
        q = "  ".join(f"{ARROWS[a]} {v:+.3f}" for a, v in enumerate(episode["q"][t]))
        changed = "  door changed" if t and episode["changed"][t - 1] else ""
        print(f"episode {index} step {t}: {ACTIONS[action]}   Q: {q}{changed}")
        print(ansi_maze(episode["observations"][t]), flush=True)
        time.sleep(delay)
    print(f"episode {index}: {'reached the goal' if episode['success'] else 'failed'} in "
          f"{len(episode['actions'])} steps")


def astar_path(grid: np.ndarray) -> list[tuple[int, int]]:
    """The A* path from the agent to the goal under the grid's doors ([] when none)."""
    from hrm_torchrl.astar import astar

    maze = read_maze(grid)
    if maze is None:
        return []
    path = astar(maze[2], maze[0], maze[1])
    return path or []


def gif_frames(episode: dict, show_astar: bool = True) -> list[np.ndarray]:
    """The episode as RGB frames [H, W, 3]: one per state, the last the state it ended in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lut = np.zeros((128, 3), np.uint8)
    for code, color in COLORS.items():
        lut[code] = color
    latent = "mse_H" in episode
    steps = len(episode["actions"])
    fig = plt.figure(figsize=(6.4, 5.2 if latent else 3.6), dpi=80)
    grid_spec = fig.add_gridspec(2 if latent else 1, 2, width_ratios=(1.3, 1),
                                 height_ratios=(2.2, 1) if latent else None)
    frames = []
    for t in range(steps + 1):
        fig.clear()
        ax_maze = fig.add_subplot(grid_spec[0, 0])
        ax_q = fig.add_subplot(grid_spec[0, 1])
        grid = episode["observations"][t]
        ax_maze.imshow(lut[grid])
        if show_astar:
            path = astar_path(grid)
            if path:
                rows, cols = zip(*path)
                ax_maze.plot(cols, rows, ":", color="tab:orange", lw=2, label="A*")
        trail = [np.argwhere(o == AGENT)[0] for o in episode["observations"][max(0, t - 6) : t + 1]
                 if (o == AGENT).any()]
        if len(trail) > 1:
            rows, cols = zip(*trail)
            ax_maze.plot(cols, rows, "-", color="tab:blue", lw=3, alpha=0.5)
        changed = t > 0 and episode["changed"][t - 1]
        end = "" if t < steps else (" - goal" if episode["success"] else " - failed")
        ax_maze.set_title(f"step {t}{'  DOOR CHANGED' if changed else ''}{end}",
                          color="tab:red" if changed else "black", fontsize=10)
        ax_maze.set_xticks([])
        ax_maze.set_yticks([])
        if t < steps:
            q, action = episode["q"][t], episode["actions"][t]
            colors = ["tab:green" if a == action else "tab:gray" for a in range(4)]
            ax_q.bar(range(4), q, color=colors)
            ax_q.set_xticks(range(4), [f"{ARROWS[a]} {ACTIONS[a][0].upper()}" for a in range(4)])
            ax_q.set_title(f"Q-values: {ACTIONS[action]}", fontsize=10)
            low, high = float(episode["q"].min()), float(episode["q"].max())
            ax_q.set_ylim(min(0.0, low) - 0.05, high + 0.05)
        else:
            ax_q.axis("off")
        if latent:
            ax_z = fig.add_subplot(grid_spec[1, :])
            mse = np.log10(np.maximum(episode["mse_H"][: max(t, 1)].T[:-1], 1e-8))  # [segments-1, steps]
            ax_z.imshow(mse, aspect="auto", cmap="viridis", vmin=-6, vmax=0,
                        extent=(-0.5, mse.shape[1] - 0.5, mse.shape[0] + 0.5, 0.5))
            for s in np.flatnonzero(episode["changed"][: max(t - 1, 0)]) + 1:
                ax_z.axvline(s, color="tab:red", lw=1)
            ax_z.set_xlim(-0.5, steps - 0.5)
            ax_z.set_yticks(range(1, mse.shape[0] + 1))
            ax_z.set_ylabel("segment i", fontsize=8)
            ax_z.set_xlabel("step (red: a door changed)", fontsize=8)
            ax_z.set_title("log10 MSE(z_H after segment i, final z_H), per step", fontsize=9)
        fig.tight_layout()
        fig.canvas.draw()
        frames.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    plt.close(fig)
    return frames


def write_gif(frames: list[np.ndarray], path: Path, seconds_per_frame: float = 0.4) -> None:
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], loop=0,
                   duration=int(1000 * seconds_per_frame))


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run directory (its best.pt, else last.pt) or a checkpoint")
    parser.add_argument("--env", choices=list(MAZES), help="default: the maze it was trained on")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=EVAL_SEED,
                        help="maze i starts from seed + i (default: the evaluations' seed)")
    parser.add_argument("--carry", choices=("carry", "reset"),
                        help="run a recurrent agent as Carry Z or Reset Z (default: as trained)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between printed steps")
    parser.add_argument("--gif", help="write each episode as an animated GIF here")
    parser.add_argument("--no-astar", action="store_true", help="GIF: leave out the A* path")
    parser.add_argument("--max-steps", type=int, help="cut episodes (default: the maze's 80)")
    parser.add_argument("--quiet", action="store_true", help="no maze printed, the summary only")
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.seed < 0 or args.delay < 0 or (args.max_steps or 1) < 1:
        parser.error("--episodes and --max-steps must be at least 1, --seed and --delay at least 0")
    try:
        net, config = load_agent(args.run)
    except RunError as error:
        parser.exit(2, f"error: {error}\n")
    env = args.env or config.env
    if env != config.env:
        parser.exit(2, f"error: {args.run} was trained on {config.env}, not {env}; leave --env out\n")
    if args.carry is not None:
        if config.model == "mlp":
            parser.exit(2, "error: --carry: the mlp carries no state\n")
        net.carry = args.carry
    if args.gif and not Path(args.gif).parent.is_dir():
        parser.exit(2, f"error: --gif: no directory {Path(args.gif).parent}\n")
    with torch.no_grad():
        episodes = play(net, env, args.episodes, args.seed, args.max_steps)
    for i, episode in enumerate(episodes):
        if not args.quiet:
            print_episode(episode, i, args.delay)
        if args.gif:
            gif = Path(args.gif)
            path = gif if len(episodes) == 1 else gif.with_name(f"{gif.stem}-{i}{gif.suffix}")
            write_gif(gif_frames(episode, show_astar=not args.no_astar), path)
            print(f"wrote {path}")
    success = np.mean([e["success"] for e in episodes])
    print(f"{config.model} ({net.carry if config.model != 'mlp' else 'no state'}) on {env}: "
          f"greedy success {success:.1%} over {len(episodes)} episodes (seeds {args.seed}-"
          f"{args.seed + len(episodes) - 1})")
    return episodes


if __name__ == "__main__":
    main(sys.argv[1:])
