"""The DQN pipeline's parts: its configuration (``DQNConfig`` and the ``cpu`` / ``paper`` presets,
validated in one place, with the command line generated from it) and builders of the network,
learner, exploration, collector and replay. ``examples/dqn_hrm.py`` is the loop that joins them;
any TorchRL loop can use them one by one.

Examples:
    >>> from hrm_torchrl import make_env
    >>> from hrm_torchrl.dqn import DQNConfig, make_learner, make_network
    >>> cfg = DQNConfig.cpu(env="DynamicMaze", double_dqn=True)
    >>> net = make_network(cfg)
    >>> env = make_env(cfg.env, num_envs=4, seed=0, primer=net.make_tensordict_primer())
    >>> learner = make_learner(net, env.action_spec_unbatched, cfg)
    >>> data = env.rollout(3, learner.actor, break_when_any_done=False).reshape(-1)
    >>> learner.loss(data)["loss"].backward()
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib.util
import math
import os
import signal
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torchrl.collectors import Collector, MultiAsyncCollector, MultiSyncCollector
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.envs import ParallelEnv
from torchrl.modules import EGreedyModule, QValueActor
from torchrl.objectives import DQNLoss, SoftUpdate
from torchrl.weight_update import MultiProcessWeightSyncScheme

from hrm_torchrl.baselines import LSTMQValueNet, MLPQValueNet
from hrm_torchrl.config import HRMConfig, from_known_fields
from hrm_torchrl.deep_supervision import DeepSupervisionDQNLoss
from hrm_torchrl.module import CARRY_MODES, CARRY_STATES, HRMQValueNet
from hrm_torchrl.torchrl_env import MAZES, make_env

MODELS = ("hrm", "mlp", "lstm")
COLLECTORS = ("multisync", "multiasync", "parallel", "ray")
EPS_UNITS = ("frames", "updates")
DEVICES = ("cpu", "cuda")
N_ACTIONS = 4
EVAL_SEED = 10_000_000  # evaluation mazes never share seeds with training mazes


def option(default, help: str, choices=None, cli: bool = True):
    """A DQNConfig field; ``help`` and ``choices`` become its command-line flag's."""
    kwargs = {"default_factory": default} if callable(default) else {"default": default}
    return field(**kwargs, metadata={"help": help, "choices": choices, "cli": cli})


class ConfigError(ValueError):
    """A DQNConfig field with a value it cannot take; ``field`` names it."""

    def __init__(self, name: str, message: str):
        super().__init__(f"DQNConfig.{name} {message}")
        self.field, self.message = name, message


@dataclass
class DQNConfig:
    """Everything a DQN run of ``examples/dqn_hrm.py`` is made of. Validated on creation (and by
    ``dataclasses.replace``): a bad value is a :class:`ConfigError` naming its field.

    ``DQNConfig.cpu()`` (the default) trains FourRoomsDoors on a 2-core CPU within 20 minutes;
    ``DQNConfig.paper()`` is HRM-Agent's appendix A. Each takes field overrides.
    """

    preset: str = option("cpu", "the preset's name, as recorded", cli=False)
    env: str = option("FourRoomsDoors", "the maze", MAZES)
    model: str = option("hrm", "the Q-network", MODELS)
    hrm: HRMConfig = option(HRMConfig.cpu, "the HRM's shape (--hrm FIELD=VALUE)", cli=False)
    carry: str = option("carry", "carry (Carry Z) or reset (Reset Z) the recurrent state from one "
                        "step to the next; none for the mlp, which has none", (*CARRY_MODES, "none"))
    carry_state: str = option("token", "hrm: carry the readout token's z or the whole z", CARRY_STATES)
    deep_supervision: bool = option(False, "hrm: one optimizer step per segment (HRM's deep "
                                    "supervision, DeepSupervisionDQNLoss) instead of DQNLoss")
    dueling: bool = option(False, "hrm: a dueling Q head (V + A - mean(A), DuelingHead) instead "
                           "of the linear one")
    hindsight: int = option(1, "relabeled copies per collected frame (hindsight goals; 0: off)")
    frames: int = option(1_000_000, "stop after this many collected frames")
    minutes: float = option(20.0, "stop after this much wall time (0: no limit)")
    workers: int = option(2, "collector worker processes (or Ray actors)")
    envs_per_worker: int = option(32, "mazes each worker steps as one batch")
    frames_per_batch: int = option(1024, "frames per collector round")
    batch_size: int = option(128, "replay minibatch size")
    buffer_size: int = option(1_000_000, "replay capacity in frames")
    updates_per_batch: int = option(16, "minibatches trained per collector round")
    warmup_frames: int = option(2_048, "frames in the replay before the first update")
    lr: float = option(1e-3, "learning rate of the model parameters")
    embedding_lr: float = option(1e-2, "hrm: learning rate of the readout token")
    embedding_weight_decay: float = option(0.1, "hrm: weight decay of the readout token")
    betas: tuple = option((0.9, 0.95), "AdamW's betas", cli=False)
    gamma: float = option(0.95, "discount")
    n_steps: int = option(3, "n-step returns (1: one-step TD)")
    double_dqn: bool = option(False, "Double DQN targets")
    grad_clip: float = option(1.0, "gradient norm clip")
    eps_init: float = option(1.0, "initial epsilon")
    eps_end: float = option(0.1, "final epsilon")
    eps_steps: int = option(100_000, "anneal epsilon over this many --eps-unit")
    eps_unit: str = option("frames", "count --eps-steps in collected frames or in optimizer steps "
                           "(the paper's count)", EPS_UNITS)
    target_eps: float = option(0.99, "SoftUpdate eps: the share of the target network kept per step")
    eval_every: int = option(50_000, "frames between greedy evaluations")
    eval_episodes: int = option(200, "episodes (mazes) per evaluation")
    checkpoint_minutes: float = option(5.0, "minutes between checkpoints (last.pt) besides those "
                                       "at evaluations; 0: at evaluations only")
    compile: bool = option(True, "torch.compile the learner's network (the workers stay eager)")
    threads: int = option(0, "torch threads of the learner process (0: torch's default)")
    device: str = option("cpu", "the policy's, learner's and replay's device", DEVICES)
    tf32: bool = option(True, "cuda: TF32 tensor cores for the fp32 matmuls (the Q-values and "
                        "targets stay fp32)")
    seed: int = option(0, "initial weights, replay sampling and (multisync) the workers' mazes "
                       "and exploration")
    collector: str = option("multisync", "multisync: worker processes, each with its mazes and a "
                            "copy of the policy; multiasync: the same, collecting while the "
                            "learner trains (a round is one worker's); parallel: the workers step "
                            "only the mazes, one policy here acts for all (a GPU's way); ray: Ray "
                            "actors", COLLECTORS)
    ray_address: str | None = option(None, "--collector ray: the cluster to join, e.g. auto or "
                                     "HEAD_IP:6379 (default: start a local one)")

    def __post_init__(self):
        if isinstance(self.hrm, dict):  # as read back from config.json
            self.hrm = HRMConfig.from_dict(self.hrm)
        self.betas = tuple(self.betas)
        self.validate()

    # -- presets ----------------------------------------------------------------------------
    @classmethod
    def cpu(cls, **overrides) -> DQNConfig:
        """Meant to learn FourRoomsDoors on a 2-core CPU within 20 minutes: the small HRM
        (``HRMConfig.cpu()``), hindsight relabeling, 3-step returns, 16 minibatches of 128 per
        1,024-frame round."""
        return cls._make("cpu", {}, overrides)

    @classmethod
    def paper(cls, **overrides) -> DQNConfig:
        """HRM-Agent's appendix A: ``HRMConfig.paper()``, deep supervision, no relabeling,
        epsilon annealed to 0.15 over 300K optimizer steps, batch 256, lr 1e-4, 3M frames."""
        base = dict(
            hrm=HRMConfig.paper(), deep_supervision=True, hindsight=0, frames=3_000_000,
            minutes=0.0, workers=5, envs_per_worker=16, frames_per_batch=256, batch_size=256,
            buffer_size=1_048_576, updates_per_batch=1, warmup_frames=2_560, lr=1e-4, n_steps=1,
            eps_end=0.15, eps_steps=300_000, eps_unit="updates", target_eps=0.999, compile=False,
        )
        return cls._make("paper", base, overrides)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> DQNConfig:
        """The preset called ``name`` (``"cpu"`` or ``"paper"``) with ``overrides``."""
        if name not in PRESETS:
            raise ConfigError("preset", f"{name!r} is unknown; choose one of {list(PRESETS)}")
        return getattr(cls, name)(**overrides)

    @classmethod
    def _make(cls, name: str, base: dict, overrides: dict) -> DQNConfig:
        values = {**base, **overrides, "preset": name}
        if values.get("model") == "mlp":  # the MLP carries nothing
            values.setdefault("carry", "none")
        return cls(**values)

    # -- (de)serialization ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> DQNConfig:
        return from_known_fields(cls, values)

    @property
    def steps_per_frame(self) -> float:
        """Optimizer steps per collected frame (deep supervision steps once per segment)."""
        segments = self.hrm.segments if self.deep_supervision else 1
        return self.updates_per_batch * segments / self.frames_per_batch

    # -- validation -------------------------------------------------------------------------
    def validate(self) -> None:
        fields = {f.name: f for f in dataclasses.fields(self)}
        for name in ("env", "model", "carry", "carry_state", "eps_unit", "collector", "device"):
            choices = fields[name].metadata["choices"]
            if getattr(self, name) not in choices:
                raise ConfigError(name, f"{getattr(self, name)!r} is unknown; choose one of {list(choices)}")
        for name in ("frames", "workers", "envs_per_worker", "frames_per_batch", "batch_size",
                     "buffer_size", "updates_per_batch", "eval_every", "eval_episodes", "n_steps",
                     "eps_steps"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ConfigError(name, f"must be an integer of at least 1, got {value!r}")
        for name, off in (("hindsight", "off"), ("warmup_frames", "none"),
                          ("threads", "torch's default"), ("seed", "")):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ConfigError(name, f"must be an integer of 0{f' ({off})' if off else ''} or "
                                  f"more, got {value!r}")
        for name in ("minutes", "checkpoint_minutes"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(name, f"must be 0 ({'no limit' if name == 'minutes' else 'off'}) "
                                  f"or a positive number, got {value!r}")
        if self.warmup_frames > self.buffer_size:  # the replay would never hold enough to start
            raise ConfigError("warmup_frames", f"({self.warmup_frames}) exceeds the replay's "
                              f"buffer_size ({self.buffer_size}): training would never start")
        _check_range("lr", self.lr, 0, math.inf, "(0, inf)")
        _check_range("embedding_lr", self.embedding_lr, 0, math.inf, "(0, inf)")
        _check_range("grad_clip", self.grad_clip, 0, math.inf, "(0, inf)")
        _check_range("gamma", self.gamma, 0, 1, "(0, 1]", high_ok=True)
        _check_range("target_eps", self.target_eps, 0, 1, "[0, 1)", low_ok=True)
        _check_range("embedding_weight_decay", self.embedding_weight_decay, 0, math.inf, "[0, inf)",
                     low_ok=True)
        _check_range("eps_init", self.eps_init, 0, 1, "[0, 1]", low_ok=True, high_ok=True)
        _check_range("eps_end", self.eps_end, 0, self.eps_init, f"[0, eps_init={self.eps_init}]",
                     low_ok=True, high_ok=True)
        if (self.model == "mlp") != (self.carry == "none"):
            raise ConfigError("carry", "applies to hrm and lstm (carry or reset); the mlp carries "
                              f"no state (none); got carry={self.carry!r} with model={self.model!r}")
        for name in ("deep_supervision", "dueling", "carry_state"):
            if self.model != "hrm" and getattr(self, name) != fields[name].default:
                raise ConfigError(name, f"applies to model 'hrm' only, not {self.model!r}")
        if not isinstance(self.hrm, HRMConfig):
            raise ConfigError("hrm", f"must be an HRMConfig, got {type(self.hrm).__name__}")
        # the mazes' observations: 121 ASCII codes of an 11x11 grid
        if (self.hrm.seq_len != 121 or self.hrm.vocab_size < 128
                or self.hrm.grid_shape not in (None, (11, 11))):
            raise ConfigError("hrm", "must read the mazes' 11x11 grids of ASCII codes: seq_len 121, "
                              f"vocab_size >= 128, grid_shape (11, 11) or None; got seq_len "
                              f"{self.hrm.seq_len}, vocab_size {self.hrm.vocab_size}, "
                              f"grid_shape {self.hrm.grid_shape}")
        if self.ray_address is not None and self.collector != "ray":
            raise ConfigError("ray_address", "applies to collector 'ray' only")
        if self.collector == "ray" and importlib.util.find_spec("ray") is None:
            raise ConfigError("collector", "'ray' needs Ray, an optional extra: pip install -e '.[ray]'")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device", "is 'cuda' but torch sees no CUDA device")


PRESETS = {"cpu": DQNConfig.cpu, "paper": DQNConfig.paper}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_range(name, value, low, high, text, low_ok=False, high_ok=False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low <= value if low_ok else low < value) and (value <= high if high_ok else value < high)
    if not ok:
        raise ConfigError(name, f"must lie in {text}, got {value!r}")


# -- the command line ---------------------------------------------------------------------------
def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def make_parser(preset: DQNConfig, description: str = "") -> argparse.ArgumentParser:
    """A parser with a flag per command-line field of ``DQNConfig``, its help showing
    ``preset``'s value, plus ``--preset``, ``--hrm FIELD=VALUE``, ``--run-dir``, ``--resume`` and
    ``--overwrite``. Flags left out stay out of the parsed namespace (argparse.SUPPRESS)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--preset", choices=list(PRESETS),
                   help=f"the preset whose values the other flags change (default: {preset.preset})")
    for f in dataclasses.fields(DQNConfig):
        if not f.metadata["cli"]:
            continue
        value = getattr(preset, f.name)
        kwargs = dict(default=argparse.SUPPRESS, help=f"{f.metadata['help']} (default: {value})")
        if f.type in ("bool", bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = {"int": int, "float": float}.get(str(f.type), str)
            if f.metadata["choices"]:
                kwargs["choices"] = list(f.metadata["choices"])
        p.add_argument(flag(f.name), **kwargs)
    shape = ", ".join(f"{k}={v}" for k, v in preset.hrm.to_dict().items())
    p.add_argument("--hrm", action="append", default=[], metavar="FIELD=VALUE",
                   help=f"hrm: change a field of the preset's HRMConfig, e.g. --hrm patch=1 "
                        f"(repeatable; the preset's: {shape})")
    p.add_argument("--run-dir", help="where the run's files go (default: runs/<env>-<preset>-"
                                     "<model>-<carry>-s<seed>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --run-dir from its checkpoints/last.pt, with its "
                        "saved config; flags given change it (not the network's or the maze's)")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in a --run-dir that holds a run, deleting its files")
    return p


def parse_args(argv=None, description: str = "") -> tuple[dict, argparse.Namespace]:
    """``(changes, args)``: the DQNConfig fields the flags set (``"hrm"`` holding the
    ``--hrm`` overrides, ``"preset"`` the preset, when given) and the namespace (``run_dir``, ``resume``,
    ``overwrite``). ``config_from_changes`` turns them into a config. Exits with a one-line error
    on a bad flag, before anything slow."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default="cpu")
    known, _ = pre.parse_known_args(argv)
    preset = DQNConfig.from_preset(known.preset) if known.preset in PRESETS else DQNConfig.cpu()
    if torch.cuda.is_available():  # what config_from_changes picks when --device is left out
        preset = dataclasses.replace(preset, device="cuda")
    parser = make_parser(preset, description)
    args = parser.parse_args(argv)
    changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(DQNConfig)
               if f.metadata["cli"] and hasattr(args, f.name)}
    try:
        hrm = HRMConfig.parse_overrides(args.hrm)
    except ValueError as error:
        parser.error(f"--hrm: {error}")
    if hrm:
        changes["hrm"] = hrm
    if args.preset is not None:
        changes["preset"] = args.preset
    return changes, args


def config_from_changes(changes: dict, base: DQNConfig | None = None) -> DQNConfig:
    """``base`` (default: the preset ``changes["preset"]``, device ``cuda`` where torch sees
    one) with ``changes`` applied; ``changes["hrm"]`` holds HRMConfig field overrides. A bad value
    raises a ConfigError naming its field."""
    changes = dict(changes)
    hrm_changes = changes.pop("hrm", {})
    name = changes.pop("preset", None)
    if base is None:
        base = DQNConfig.from_preset(name or "cpu")
        if "device" not in changes and torch.cuda.is_available():
            changes["device"] = "cuda"
        if changes.get("model") == "mlp":
            changes.setdefault("carry", "none")
    elif name is not None and name != base.preset:
        raise ConfigError("preset", f"is {base.preset!r} in the saved run, not {name!r}")
    if hrm_changes:
        if changes.get("model", base.model) != "hrm":
            raise ConfigError("hrm", f"applies to model 'hrm' only, not {changes.get('model', base.model)!r}")
        try:
            changes["hrm"] = dataclasses.replace(base.hrm, **hrm_changes)
        except ValueError as error:
            raise ConfigError("hrm", str(error)) from None
    return dataclasses.replace(base, **changes)


def flag_error(error: ConfigError) -> str:
    """A ConfigError as the command line says it."""
    name = "hrm" if error.field == "hrm" else error.field
    return f"error: {flag(name)}: {error.message}"


# -- builders ---------------------------------------------------------------------------------
def make_network(cfg: DQNConfig):
    """The Q-network of ``cfg.model``: an HRMQValueNet, MLPQValueNet or LSTMQValueNet. Each has
    ``make_tensordict_primer()`` (None for the MLP), ``param_groups(...)`` and
    ``compile_modules()``."""
    if cfg.model == "hrm":
        return HRMQValueNet(cfg.hrm, N_ACTIONS, carry=cfg.carry, carry_state=cfg.carry_state,
                            dueling=cfg.dueling)
    if cfg.model == "mlp":
        return MLPQValueNet(N_ACTIONS)
    return LSTMQValueNet(N_ACTIONS, carry=cfg.carry)


def carried_keys(primer) -> list:
    """The recurrent state's keys registered by ``primer`` (none without one)."""
    return [] if primer is None else list(primer.primers.keys())


class Learner(NamedTuple):
    actor: QValueActor
    loss: DQNLoss
    target_updater: SoftUpdate
    optimizer: torch.optim.Optimizer


def make_learner(net, action_spec, cfg: DQNConfig, value_estimator=None) -> Learner:
    """The greedy actor, its loss (``DQNLoss``, or ``DeepSupervisionDQNLoss`` with
    ``cfg.deep_supervision``; the target network inside), ``SoftUpdate`` and AdamW over the
    network's parameter groups. ``value_estimator``: a TorchRL value estimator for the loss, or a
    callable ``actor -> estimator``; default TD(0) with ``cfg.gamma``."""
    actor = QValueActor(net, spec=action_spec)
    loss_class = DeepSupervisionDQNLoss if cfg.deep_supervision else DQNLoss
    loss = loss_class(actor, loss_function="l2", delay_value=True, double_dqn=cfg.double_dqn)
    if callable(value_estimator) and not isinstance(value_estimator, torch.nn.Module):
        value_estimator = value_estimator(actor)
    if value_estimator is None:
        loss.make_value_estimator(gamma=cfg.gamma)
    else:
        loss.make_value_estimator(value_estimator)
    groups = net.param_groups(lr=cfg.lr, embedding_lr=cfg.embedding_lr,
                              embedding_weight_decay=cfg.embedding_weight_decay)
    optimizer = torch.optim.AdamW(groups, betas=cfg.betas)
    return Learner(actor, loss, SoftUpdate(loss, eps=cfg.target_eps), optimizer)


def gradient_steps(learner: Learner, batch, grad_clip: float):
    """Trains on one replayed minibatch: one optimizer step with ``DQNLoss``, one per segment
    with ``DeepSupervisionDQNLoss``; each clips the gradient norm to ``grad_clip`` and moves the
    target network (``SoftUpdate``), as the authors do. Yields each step's detached loss."""
    loss_module, optimizer = learner.loss, learner.optimizer
    deep = isinstance(loss_module, DeepSupervisionDQNLoss)
    for loss in loss_module.segment_losses(batch) if deep else [loss_module(batch)]:
        optimizer.zero_grad()
        loss["loss"].backward()
        torch.nn.utils.clip_grad_norm_(learner.actor.parameters(), grad_clip)
        optimizer.step()
        learner.target_updater.step()
        yield loss["loss"].detach()


def make_exploration(action_spec, cfg: DQNConfig) -> EGreedyModule:
    """Epsilon-greedy over ``cfg.eps_steps``; the loop calls ``step(n)`` with the frames
    collected (``eps_unit="frames"``) or once per optimizer step (``"updates"``)."""
    return EGreedyModule(action_spec, eps_init=cfg.eps_init, eps_end=cfg.eps_end,
                         annealing_num_steps=cfg.eps_steps)


def replay_keys(state_keys: list, n_step: bool) -> list:
    """What a replayed frame needs: the loss's keys and the carried state, now and next."""
    keys = ["observation", "is_init", "action", *state_keys,
            *[("next", key) for key in ("observation", "is_init", "reward", "done",
                                        "terminated", *state_keys)]]
    if n_step:
        keys.append("steps_to_next_obs")  # the value estimator's gamma ** steps
    return keys


def make_replay(cfg: DQNConfig, device) -> TensorDictReplayBuffer:
    """A ``LazyTensorStorage`` replay of ``cfg.buffer_size`` frames on ``device``: on a GPU the
    replay lives there too (a carried frame is ~1.3 KB), and sampling copies nothing."""
    return TensorDictReplayBuffer(storage=LazyTensorStorage(cfg.buffer_size, device=device),
                                  batch_size=cfg.batch_size)


@contextlib.contextmanager
def spawned_workers_ignore(signals):
    """Worker processes started inside inherit ``signals`` ignored (a disposition survives
    exec), so that a signal to the whole process group (Ctrl-C in a terminal, ``timeout``, a
    scheduler ending a job) reaches only this process, which then saves and shuts them down. The
    signals are blocked meanwhile: one that arrives waits, and reaches this process's own handlers
    when they are restored on exit."""
    signals = set(signals)
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signals)  # first: SIG_IGN drops pending ones
    handlers = {s: signal.signal(s, signal.SIG_IGN) for s in signals}
    try:
        yield
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def make_collector(cfg: DQNConfig, policy, primer, seed: int):
    """The training collector, yielding [workers, mazes, time] frames a round (multiasync:
    [mazes, time]), and a function that shuts it down.

    multisync: TorchRL's MultiSyncCollector, one process per worker on this machine;
    ``set_seed(seed)`` gives each worker's mazes and its torch and numpy generators (its
    exploration) their own seed of one chain, so a run's frames repeat with its seed.
    multiasync: TorchRL's MultiAsyncCollector, the same workers and seeds, but each keeps
    collecting while the learner trains on another's round, so collection and learning overlap
    (what spare cores or a GPU learner want); a round is ``frames_per_batch`` frames of one
    worker's mazes, so the replay ratio stays the preset's. A round is collected with the
    weights of when it began, a round or more behind the learner's, and the order in which the
    workers deliver depends on timing, so a run's frames do not repeat exactly.
    parallel: TorchRL's Collector over a ParallelEnv: the worker processes step only their mazes,
    and the policy, here on ``cfg.device``, acts for all of them in one batched forward (what a
    GPU wants); its weights are the learner's own, so nothing is sent to the workers.
    ray: TorchRL's RayCollector, one Ray actor per worker running a Collector of its mazes, on
    the cluster at ``cfg.ray_address`` or on a local one. Ray runs don't repeat: RayCollector's
    set_seed would seed only the envs, not the actors' exploration, so the mazes draw fresh seeds.
    All but parallel take fresh weights when the loop calls ``update_policy_weights_()``. The
    workers ignore Ctrl-C (SIGINT) and, except Ray's, SIGTERM: the process that made the collector
    handles them, with the handlers it had installed before, and shuts the workers down.
    """
    device = torch.device(cfg.device)
    factories = [functools.partial(make_env, cfg.env, num_envs=cfg.envs_per_worker, primer=primer)
                 for _ in range(cfg.workers)]
    if cfg.collector in ("multisync", "multiasync"):
        # Ours, so that it is shut down while the interpreter still runs: left to its __del__ at
        # exit, a scheme that never sent weights hangs the process (torchrl 0.14.1).
        weight_sync = MultiProcessWeightSyncScheme()
        with spawned_workers_ignore({signal.SIGINT, signal.SIGTERM}):
            collector = _multiprocess(cfg, factories, policy, device, weight_sync)
        collector.set_seed(seed)

        def shutdown():
            collector.shutdown()
            weight_sync.shutdown()

        return collector, shutdown
    if cfg.collector == "parallel":
        threads = torch.get_num_threads()
        with spawned_workers_ignore({signal.SIGINT, signal.SIGTERM}):
            env = ParallelEnv(cfg.workers, factories)
            env.start()
        torch.set_num_threads(threads)  # ParallelEnv takes a thread a worker; acting and learning take turns
        env.set_seed(seed)
        collector = Collector(env, policy, frames_per_batch=cfg.frames_per_batch, total_frames=-1,
                              env_device="cpu", policy_device=device, storing_device="cpu")
        return collector, collector.shutdown  # which closes the env
    with spawned_workers_ignore({signal.SIGINT}):  # Ray stops its local cluster with SIGTERM
        collector = _ray(cfg, factories, policy, device)
    collector.update_policy_weights_(policy)  # connects the actors' weight receivers
    return collector, collector.shutdown  # which also stops a local cluster it started


def _multiprocess(cfg, factories, policy, device, weight_sync):
    # MultiSync's frames_per_batch is the round's, split over the workers; MultiAsync's is each
    # worker's, which delivers a round on its own
    cls = MultiSyncCollector if cfg.collector == "multisync" else MultiAsyncCollector
    return cls(
        factories, policy, frames_per_batch=cfg.frames_per_batch, total_frames=-1,
        env_device="cpu", policy_device=device, storing_device="cpu",
        weight_sync_schemes={"policy": weight_sync},
        # With MultiSync, collection and updates take turns, so the learner may use every core
        # (with MultiAsync they share them); left alone the collector would cut this process to
        # (threads - workers), i.e. 1 on 2 cores.
        num_threads=torch.get_num_threads(),
    )


def _ray(cfg, factories, policy, device):
    from torchrl.collectors.distributed import RayCollector

    # A Ray actor asks for one CPU (and a share of the GPU when the policy runs on CUDA); a local
    # cluster gets at least one logical CPU per worker, so that it oversubscribes the cores as
    # MultiSyncCollector does instead of waiting for free ones.
    ray_init = {"address": cfg.ray_address, "include_dashboard": False,
                "log_to_driver": False}  # the actors' logs stay in Ray's session folder
    if cfg.ray_address is None:
        ray_init["num_cpus"] = max(os.cpu_count() or 1, cfg.workers)
    remote = {"num_cpus": 1, "num_gpus": 1 / cfg.workers if device.type == "cuda" else 0}
    per_round = cfg.workers * cfg.envs_per_worker  # whole steps of every maze, as MultiSync
    return RayCollector(
        factories, policy, collector_class=Collector, num_collectors=cfg.workers, sync=True,
        frames_per_batch=per_round * math.ceil(cfg.frames_per_batch / per_round),
        total_frames=2**62,  # the loop decides when to stop
        env_device="cpu", policy_device=device, storing_device="cpu",
        ray_init_config=ray_init, remote_configs=remote,
    )
