"""Run directories of ``examples/dqn_hrm.py``: ``config.json``, ``metrics.csv``,
``checkpoints/{last,best}.pt`` and ``summary.json``; starting, resuming and loading them.

A directory that holds a run is never written over by accident: a new run there is refused
unless ``overwrite``, and a resumed run continues from ``checkpoints/last.pt`` with the saved
config, the changes given applied everywhere (optimizer, exploration, value estimator), but none
that would change the network or the maze. Every file is written to a temporary name, then
renamed, so a crash or a full disk never leaves a half-written one.

Examples:
    >>> import tempfile
    >>> from hrm_torchrl.runs import Run
    >>> run = Run.open(tempfile.mkdtemp() + "/run", {"env": "DynamicMaze", "eval_episodes": 8})
    >>> run.config.env, run.config.hrm.segments, run.checkpoint is None
    ('DynamicMaze', 2, True)
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing.util
import os
import shutil
import tempfile
from pathlib import Path

import torch

from hrm_torchrl.dqn import (ConfigError, DQNConfig, config_from_changes, flag, flag_error,
                             make_network, parse_args)

# what a resumed run may not change: the network's shape and what it was trained on
FIXED_ON_RESUME = ("preset", "env", "model", "hrm", "carry", "carry_state")
RUN_FILES = ("config.json", "metrics.csv", "summary.json", "checkpoints", "logs")


class RunError(ValueError):
    """A run directory or checkpoint that cannot be used as asked."""


def default_run_dir(cfg: DQNConfig) -> Path:
    return Path(f"runs/{cfg.env}-{cfg.preset}-{cfg.model}-{cfg.carry}-s{cfg.seed}")


def atomic_write(path: Path, write) -> None:
    """``write(file)`` into ``path.tmp``, then renamed onto ``path``; on any error the temporary
    file is removed and ``path`` keeps what it held."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint of ``examples/dqn_hrm.py``, with a RunError naming the file when it is
    missing, truncated or not one."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # truncated or foreign files fail deep inside torch.load
        raise RunError(f"{path} is not a readable checkpoint ({type(error).__name__}: "
                       f"{str(error).splitlines()[0] if str(error) else ''})") from None
    if not isinstance(state, dict) or not {"config", "model"} <= set(state):
        raise RunError(f"{path} is not a checkpoint of examples/dqn_hrm.py")
    if "hrm" not in state["config"]:
        raise RunError(f"{path} comes from an older version of hrm_torchrl (no DQNConfig)")
    return state


def load_agent(path: str | Path, device="cpu"):
    """``(net, config)``: the trained Q-network of a run (its directory, whose best.pt is read,
    else last.pt, or a checkpoint file) in eval mode on ``device``, and its ``DQNConfig``
    (``config.env`` is the maze it was trained on)."""
    path = Path(path)
    if path.is_dir():
        found = [p for p in (path / "checkpoints" / "best.pt", path / "checkpoints" / "last.pt")
                 if p.exists()]
        if not found:
            raise RunError(f"{path} holds no checkpoints/best.pt or checkpoints/last.pt")
        errors = []
        for candidate in found:  # a truncated best.pt falls back to last.pt
            try:
                state = load_checkpoint(candidate)
                break
            except RunError as error:
                errors.append(str(error))
        else:
            raise RunError("; ".join(errors))
    elif path.exists():
        state = load_checkpoint(path)
    else:
        raise RunError(f"no run directory or checkpoint at {path}")
    config = DQNConfig.from_dict({**state["config"], "device": "cpu", "ray_address": None,
                                  "collector": "multisync"})
    net = make_network(config)
    net.load_state_dict(state["model"])
    return net.to(device).eval(), config


class Run:
    """A run directory and the config that runs in it; ``checkpoint`` is the state to resume
    from (None for a fresh run). Build it with :meth:`open`."""

    def __init__(self, path: Path, config: DQNConfig, checkpoint: dict | None = None,
                 changes: dict | None = None):
        self.path, self.config, self.checkpoint = Path(path), config, checkpoint
        self.changes = changes or {}  # the saved config's fields changed on resume: (old, new)
        self.saved_frames = None if checkpoint is None else checkpoint.get("frames")  # in last.pt
        self.last, self.best = self.path / "checkpoints" / "last.pt", self.path / "checkpoints" / "best.pt"

    @classmethod
    def open(cls, run_dir, changes: dict, *, resume: bool = False, overwrite: bool = False) -> Run:
        """Checks everything before anything slow: the config (``changes`` applied to the preset,
        or with ``resume`` to the saved config), the directory and the checkpoint. Creates the
        directory. Raises ConfigError or RunError."""
        if resume and overwrite:
            raise RunError("give --resume or --overwrite, not both")
        if resume:
            if run_dir is None:
                raise RunError("--resume needs the --run-dir of the run to continue")
            path = Path(run_dir)
            state = load_checkpoint(path / "checkpoints" / "last.pt")
            saved = state["config"]
            fixed = [k for k in FIXED_ON_RESUME
                     if k in changes and (k == "hrm" or changes[k] != saved.get(k))]
            if fixed:
                given = ", ".join("--hrm" if k == "hrm" else flag(k) for k in fixed)
                trained = [f"{k}={saved.get(k)!r}" for k in fixed if k != "hrm"]
                if "hrm" in fixed:  # name the HRMConfig fields asked for
                    trained += [f"hrm.{k}={saved['hrm'].get(k)!r}" for k in changes["hrm"]]
                raise RunError(f"{path} was trained with {', '.join(trained)}; a resumed run "
                               f"keeps its network and maze: drop {given}")
            # the changes applied with the saved values, so that e.g. a run trained on a GPU
            # resumes with --device cpu where there is none
            config = DQNConfig.from_dict({**saved, **changes})
            diff = {k: (saved.get(k), getattr(config, k)) for k in changes
                    if saved.get(k) != getattr(config, k)}
            run = cls(path, config, state, diff)
        else:
            config = config_from_changes(changes)
            path = Path(run_dir) if run_dir is not None else default_run_dir(config)
            if path.exists() and not path.is_dir():
                raise RunError(f"--run-dir {path} is a file, not a directory")
            held = [name for name in RUN_FILES if (path / name).exists()]
            if held and not overwrite:
                raise RunError(f"{path} already holds a run ({', '.join(held)}): continue it with "
                               "--resume, or start afresh there with --overwrite")
            for name in held:
                target = path / name
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            run = cls(path, config)
        try:
            (run.path / "checkpoints").mkdir(parents=True, exist_ok=True)
            probe = run.path / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as error:
            raise RunError(f"cannot write to the run directory {run.path}: {error.strerror}") from None
        return run

    @classmethod
    def from_command_line(cls, argv=None, description: str = "") -> Run:
        """The run the command line asks for (``dqn.parse_args``, then :meth:`open`); a bad flag,
        value, directory or checkpoint exits with a one-line error, before anything slow."""
        changes, args = parse_args(argv, description)
        try:
            return cls.open(args.run_dir, changes, resume=args.resume, overwrite=args.overwrite)
        except ConfigError as error:
            raise SystemExit(flag_error(error)) from None
        except RunError as error:
            raise SystemExit(f"error: {error}") from None

    def restore(self, learner, exploration) -> dict:
        """Loads the checkpoint's weights, target network, optimizer and epsilon into
        ``learner`` and ``exploration``, then applies this run's config to them (learning
        rates, betas and weight decay, epsilon's ends, the value estimator's gamma), so that
        changes given on resume take effect. Returns the checkpoint's counters."""
        state, cfg = self.checkpoint, self.config
        # the value estimator learns nothing: it stays as built from this config (its gamma, or an
        # estimator given to make_learner), not as saved
        built = {k: v for k, v in learner.loss.state_dict().items() if k.startswith("_value_estimator.")}
        learner.loss.load_state_dict({**state["loss_module"], **built})
        fresh = learner.optimizer.param_groups
        hyper = [{k: g[k] for k in ("lr", "betas", "weight_decay")} for g in fresh]
        learner.optimizer.load_state_dict(state["optimizer"])
        for group, values in zip(learner.optimizer.param_groups, hyper):
            group.update(values)
        exploration.load_state_dict(state["egreedy"])
        exploration.eps_init.fill_(cfg.eps_init)
        exploration.eps_end.fill_(cfg.eps_end)
        exploration.eps.clamp_(min=cfg.eps_end, max=cfg.eps_init)
        return {k: state[k] for k in ("frames", "updates", "optimizer_steps", "wall_seconds",
                                      "best_success")}

    def scope_temporary_files(self) -> Path:
        """NetHack makes a directory per maze in the temporary folder, which a killed process
        leaves behind (~0.3 MB each; the evaluation alone holds 200 mazes). Moves this process's
        and its future workers' (``TMPDIR``) temporary files to ``RUN/tmp``: emptied now, which
        cleans up after a killed run, and removed at exit. Ray keeps its own folder."""
        tmp = (self.path / "tmp").resolve()  # NetHack moves files into it from elsewhere
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        os.environ.setdefault("RAY_TMPDIR", tempfile.gettempdir())  # its sockets need short paths
        os.environ["TMPDIR"] = tempfile.tempdir = str(tmp)
        # at exit, after multiprocessing's own folder in it (its finalizer's priority is -100)
        multiprocessing.util.Finalize(None, shutil.rmtree, args=(tmp, True), exitpriority=-200)
        return tmp

    def write_config(self) -> None:
        text = json.dumps(self.config.to_dict(), indent=1)
        atomic_write(self.path / "config.json", lambda f: f.write(text.encode()))

    def save(self, path: Path, state: dict) -> None:
        """``state`` with this run's config, to ``path`` (``self.last``, ``self.best``)."""
        buffer = io.BytesIO()
        torch.save({"config": self.config.to_dict(), **state}, buffer)
        atomic_write(path, lambda f: f.write(buffer.getbuffer()))
        if path == self.last:
            self.saved_frames = state.get("frames")

    def log_metrics(self, row: dict) -> None:
        """Appends ``row`` to metrics.csv (rewritten whole, atomically; the header first)."""
        metrics = self.path / "metrics.csv"
        old = metrics.read_bytes() if metrics.exists() else b""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        if not old:
            writer.writerow(row)
        writer.writerow(row.values())
        atomic_write(metrics, lambda f: (f.write(old), f.write(out.getvalue().encode())))

    def write_summary(self, summary: dict) -> None:
        text = json.dumps(summary, indent=1)
        atomic_write(self.path / "summary.json", lambda f: f.write(text.encode()))


__all__ = ["ConfigError", "Run", "RunError", "atomic_write", "default_run_dir", "load_agent",
           "load_checkpoint"]
