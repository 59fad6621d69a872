"""The HRM as TorchRL TensorDict modules whose latent z = (z_H, z_L) is recurrent state in the
tensordict, the way :class:`torchrl.modules.LSTMModule` carries (h, c): ``HRMModule``, the
recurrent core (features in, features out), and ``HRMQValueNet``, the Q-network built on it
(observation tokens in, Q-values out)."""

from __future__ import annotations

import math

import torch
from tensordict import TensorDictBase, unravel_key, unravel_key_list
from tensordict.nn import TensorDictModuleBase, dispatch
from torch import nn
from torchrl.data import Unbounded
from torchrl.modules import MLP

from hrm_torchrl.config import HRMConfig
from hrm_torchrl.hrm import HRMCore, HRMEncoder, trunc_normal_

CARRY_MODES = ("carry", "reset")
CARRY_STATES = ("token", "full")
DIAGNOSTICS_KEYS = ("mse_H", "mse_L", "q_segments", "q_carried")


class DuelingHead(nn.Module):
    """Q-values as a state value plus each action's advantage, centred (Wang et al. 2016,
    "Dueling network architectures for deep RL"): ``Q = V + A - mean(A)``, V and A each from a
    one-hidden-layer MLP (as :class:`torchrl.modules.DuelingMlpDQNet`'s output streams) on the
    same features. The value every action shares is learned apart from the gaps between them.

    Examples:
        >>> import torch
        >>> head = DuelingHead(64, 4)
        >>> head(torch.randn(5, 64)).shape
        torch.Size([5, 4])
    """

    def __init__(self, hidden: int, n_actions: int):
        super().__init__()
        self.value = MLP(in_features=hidden, out_features=1, depth=1, num_cells=hidden,
                         activation_class=nn.GELU)
        self.advantage = MLP(in_features=hidden, out_features=n_actions, depth=1,
                             num_cells=hidden, activation_class=nn.GELU)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        advantage = self.advantage(features)
        return self.value(features) + advantage - advantage.mean(-1, keepdim=True)


def _as_tuple(key) -> tuple:
    key = unravel_key(key)
    return key if isinstance(key, tuple) else (key,)


def check_tokens(obs: torch.Tensor, key, seq_len: int, vocab_size: int, owner: str) -> None:
    """Raises a ValueError naming the problem unless ``obs`` holds integer tokens
    ``[..., seq_len]`` in ``[0, vocab_size)``."""
    if obs.dtype.is_floating_point or obs.dtype.is_complex or obs.dtype == torch.bool:
        raise ValueError(f"{owner}: observation {key!r} must hold integer tokens, got dtype {obs.dtype}")
    if obs.ndim == 0 or obs.shape[-1] != seq_len:
        raise ValueError(
            f"{owner}: observation {key!r} must have {seq_len} tokens in its last dimension "
            f"(seq_len), got shape {tuple(obs.shape)}"
        )
    if obs.numel() and (obs.min() < 0 or obs.max() >= vocab_size):
        raise ValueError(
            f"{owner}: observation tokens must lie in [0, {vocab_size}) (vocab_size), "
            f"got values in [{int(obs.min())}, {int(obs.max())}]"
        )


def read_tokens(obs: torch.Tensor, key, config: HRMConfig, owner: str):
    """``(tokens [rows, seq_len] long, batch_shape)`` of an observation of ``[*B, seq_len]``
    tokens, or of ``[*B, rows, cols]`` grids when ``config.grid_shape`` is ``(rows, cols)`` (as
    the gymnasium mazes emit them); a ValueError naming the problem otherwise."""
    grid = config.grid_shape
    if grid and obs.ndim >= 2 and tuple(obs.shape[-2:]) == grid and obs.shape[-1] != config.seq_len:
        obs = obs.flatten(-2)
    check_tokens(obs, key, config.seq_len, config.vocab_size, owner)
    return obs.reshape(-1, config.seq_len).long(), tuple(obs.shape[:-1])


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).flatten(1).mean(-1)


class HRMModule(TensorDictModuleBase):
    """The HRM's recurrent core as a TensorDict module, carrying z = (z_H, z_L) from one
    environment step to the next, as :class:`torchrl.modules.LSTMModule` carries (h, c).

    Reads input features ``[*B, config.tokens - 1, hidden]`` (what a user's encoder makes of an
    observation: one vector per position, of unit scale), the carried (z_H, z_L) and ``is_init``;
    runs ``config.segments`` segments of HRM recurrence (``config.gradient``: the one-step or the
    full gradient) and writes the features read at the readout token, ``[*B, hidden]``, and the
    final, detached (z_H, z_L) to ``"next"``, from where :func:`torchrl.envs.utils.step_mdp`
    moves them to the root of the following step. A head of the user's own turns the features
    into Q-values, logits, ...

    Args:
        config: an :class:`~hrm_torchrl.HRMConfig`; ``config.tokens - 1`` is the number of input
            positions (``config.seq_len``, or the patches with ``patch > 1``).

    Keyword Args:
        in_key, out_key: the input features and the output features (defaults ``"embedding"``
            and ``"features"``), as LSTMModule's ``in_key`` / ``out_key``.
        carry: ``"carry"`` (Carry Z: start from the carried state, or from H_init/L_init where
            ``is_init`` is True) or ``"reset"`` (Reset Z: always start from H_init/L_init; the
            carried keys are still written so that the specs do not depend on the mode).
        carry_state: what is carried. ``"token"`` (default): the readout token's final vector of
            each level, broadcast to every position at the next step: ``2 * hidden`` floats per
            frame (512 B at hidden 64 in float32). ``"full"``: each level's whole
            ``[config.tokens, hidden]`` state: ``2 * tokens * hidden`` floats per frame (62,464 B
            at the paper preset, 122 x 64, in float32).
        in_keys: ``[features, z_H, z_L, is_init]``; defaults to
            ``[in_key, "z_H", "z_L", "is_init"]``.
        out_keys: ``[features, ("next", z_H), ("next", z_L)]``; defaults to
            ``[out_key, ("next", "z_H"), ("next", "z_L")]``.

    Any batch shape works (``[]``, ``[B]``, ``[B, T]``: every entry is one environment step with
    its own carried state).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule, TensorDictSequential
        >>> from hrm_torchrl import HRMConfig, HRMModule
        >>> config = HRMConfig.cpu(patch=1, positions="rope", grid_shape=None)  # 121 positions
        >>> encoder = TensorDictModule(torch.nn.Linear(3, 64), ["pixels"], ["embedding"])
        >>> core = HRMModule(config, in_key="embedding", out_key="features")
        >>> head = TensorDictModule(torch.nn.Linear(64, 4), ["features"], ["action_value"])
        >>> net = TensorDictSequential(encoder, core, head)
        >>> td = TensorDict({"pixels": torch.randn(5, 121, 3), "z_H": torch.zeros(5, 64),
        ...                  "z_L": torch.zeros(5, 64), "is_init": torch.ones(5, 1, dtype=torch.bool)}, [5])
        >>> net(td)["action_value"].shape, td["next", "z_H"].shape
        (torch.Size([5, 4]), torch.Size([5, 64]))
        >>> primer = core.make_tensordict_primer()  # env.append_transform(primer) in a pipeline
    """

    def __init__(self, config: HRMConfig, *, in_key="embedding", out_key="features",
                 carry: str = "carry", carry_state: str = "token", in_keys=None, out_keys=None):
        super().__init__()
        if not isinstance(config, HRMConfig):
            raise ValueError(f"config must be an HRMConfig, got {type(config).__name__}")
        if carry not in CARRY_MODES:
            raise ValueError(f"unknown carry mode {carry!r}; choose one of {CARRY_MODES}")
        if carry_state not in CARRY_STATES:
            raise ValueError(f"unknown carry_state {carry_state!r}; choose one of {CARRY_STATES}")
        in_keys = unravel_key_list(in_keys or [in_key, "z_H", "z_L", "is_init"])
        out_keys = unravel_key_list(out_keys or [out_key, ("next", "z_H"), ("next", "z_L")])
        if len(in_keys) != 4:
            raise ValueError(f"in_keys must be [input, z_H, z_L, is_init], got {in_keys}")
        if len(out_keys) != 3:
            raise ValueError(f"out_keys must be [output, ('next', z_H), ('next', z_L)], got {out_keys}")
        self.config = config
        self.carry = carry
        self.carry_state = carry_state
        self.in_keys = in_keys
        self._base_out_keys = out_keys
        self.out_keys = list(out_keys)
        self.core = HRMCore(config)

    @property
    def state_shape(self) -> tuple[int, ...]:
        """Shape of one frame's carried z_H (and z_L)."""
        if self.carry_state == "token":
            return (self.config.hidden,)
        return (self.config.tokens, self.config.hidden)

    def make_tensordict_primer(self):
        """A :class:`~torchrl.envs.TensorDictPrimer` that registers z_H/z_L in the env's specs.

        Without it, ``step_mdp`` cannot move ``("next", z_H)`` to the root and collectors feed no
        carried state to the policy. :func:`torchrl.modules.utils.get_primers_from_module` finds
        this method.
        """
        from torchrl.envs import TensorDictPrimer

        _, key_H, key_L, _ = self.in_keys
        _, out_H, out_L = self._base_out_keys
        if _as_tuple(out_H) != ("next", *_as_tuple(key_H)) or _as_tuple(out_L) != (
            "next",
            *_as_tuple(key_L),
        ):
            raise RuntimeError(
                "make_tensordict_primer needs out_keys named ('next', <in_key>) for z_H and z_L; "
                f"got in_keys={self.in_keys} and out_keys={self._base_out_keys}"
            )
        return TensorDictPrimer(
            {key_H: Unbounded(shape=self.state_shape), key_L: Unbounded(shape=self.state_shape)},
            expand_specs=True,
        )

    def param_groups(self, lr: float, embedding_lr: float | None = None,
                     embedding_weight_decay: float = 0.0) -> list[dict]:
        """The paper's two optimizer groups: the readout token (``embedding_lr``, weight decay
        ``embedding_weight_decay``) and everything else (``lr``, no weight decay)."""
        embedding = self.core.embedding_parameters()
        rest = [p for p in self.parameters() if all(p is not e for e in embedding)]
        return [{"params": rest, "lr": lr, "weight_decay": 0.0},
                {"params": embedding, "lr": lr if embedding_lr is None else embedding_lr,
                 "weight_decay": embedding_weight_decay}]

    def compile_modules(self, mode: str | None = None) -> None:
        """``torch.compile`` the H and L modules in place, in ``mode`` (torch.compile's; e.g.
        ``"reduce-overhead"`` for CUDA graphs): parameters and state_dict keys stay the same, the
        TensorDict plumbing around them stays eager."""
        self.core.H_level.compile(mode=mode)
        self.core.L_level.compile(mode=mode)
        self.core.clone_level_outputs = mode in ("reduce-overhead", "max-autotune")  # CUDA graphs

    # -- input checks: clear errors instead of deep stack traces ----------------------------
    def _get(self, tensordict: TensorDictBase, key, hint: str) -> torch.Tensor:
        value = tensordict.get(key, None)
        if value is None:
            raise ValueError(f"{type(self).__name__}: the tensordict has no {key!r} entry; {hint}")
        return value

    def _input(self, tensordict: TensorDictBase):
        """``(x [rows, tokens - 1, hidden], batch_shape)``."""
        x = self._get(tensordict, self.in_keys[0], "it holds the input features")
        shape = (self.config.tokens - 1, self.config.hidden)
        if x.ndim < 2 or tuple(x.shape[-2:]) != shape or not x.dtype.is_floating_point:
            raise ValueError(f"{type(self).__name__}: input {self.in_keys[0]!r} must be floating "
                             f"point of shape [*batch, {shape[0]}, {shape[1]}] (positions, hidden), "
                             f"got {tuple(x.shape)} {x.dtype}")
        return x.reshape(-1, *shape), tuple(x.shape[:-2])

    def _carried(self, tensordict, key, batch_shape, rows) -> torch.Tensor:
        z = self._get(
            tensordict,
            key,
            "append module.make_tensordict_primer() to the env (TensorDictPrimer) so that the "
            "carried state travels",
        )
        if tuple(z.shape) != (*batch_shape, *self.state_shape):
            raise ValueError(
                f"{type(self).__name__}: carried state {key!r} must have shape "
                f"{(*batch_shape, *self.state_shape)} (batch + carry_state={self.carry_state!r}), "
                f"got {tuple(z.shape)}"
            )
        return z.reshape(rows, *self.state_shape).detach()

    def _initial_states(self, tensordict, batch_shape, rows):
        """(z_H, z_L) to start from, full [rows, tokens, hidden] each."""
        init_H, init_L = self.core.initial_state(rows)
        if self.carry == "reset":
            return init_H, init_L
        is_init = self._get(
            tensordict, self.in_keys[3], "add torchrl.envs.InitTracker() to the env"
        )
        if is_init.shape not in (batch_shape, (*batch_shape, 1)):
            raise ValueError(
                f"{type(self).__name__}: {self.in_keys[3]!r} must have shape {(*batch_shape, 1)}, "
                f"got {tuple(is_init.shape)}"
            )
        is_init = is_init.reshape(rows, 1, 1).bool()
        states = []
        for key, init in ((self.in_keys[1], init_H), (self.in_keys[2], init_L)):
            carried = self._carried(tensordict, key, batch_shape, rows).to(init.device)
            if self.carry_state == "token":
                carried = carried[:, None, :].expand_as(init)
            states.append(torch.where(is_init, init, carried))
        return tuple(states)

    def _carried_out(self, z: torch.Tensor, batch_shape) -> torch.Tensor:
        z = z[:, 0] if self.carry_state == "token" else z
        return z.detach().reshape(*batch_shape, *self.state_shape)

    def _write_state(self, tensordict, batch_shape, z_H, z_L) -> None:
        tensordict.set(self._base_out_keys[1], self._carried_out(z_H, batch_shape))
        tensordict.set(self._base_out_keys[2], self._carried_out(z_L, batch_shape))

    @dispatch(auto_batch_size=False)
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        x, batch_shape = self._input(tensordict)
        z_H, z_L = self._initial_states(tensordict, batch_shape, x.shape[0])
        features, z_H, z_L = self.core(x, z_H, z_L)
        tensordict.set(self._base_out_keys[0], features.reshape(*batch_shape, -1))
        self._write_state(tensordict, batch_shape, z_H, z_L)
        return tensordict


class HRMQValueNet(HRMModule):
    """An HRM Q-network that carries its recurrent latent from one environment step to the next:
    an :class:`~hrm_torchrl.hrm.HRMEncoder` of the observation tokens, the recurrent core of
    :class:`HRMModule` and a Q head on the readout token's z_H: linear, or a
    :class:`DuelingHead` (``dueling=True``).

    Reads tokens and the carried (z_H, z_L), runs ``config.segments`` segments of HRM recurrence
    (``config.gradient``: the one-step or the full gradient) and writes Q-values and the final,
    detached (z_H, z_L) to ``"next"``.

    Args:
        config: an :class:`~hrm_torchrl.HRMConfig` (e.g. ``HRMConfig.paper()``).
        n_actions: size of the discrete action space.

    Keyword Args:
        carry, carry_state: as in :class:`HRMModule`.
        dueling: a :class:`DuelingHead` instead of the linear head.
        diagnostics: also write, under ``diagnostics_key``: ``mse_H``/``mse_L`` ``[..., segments]``,
            the MSE between the state after segment i and the final one; ``q_segments``
            ``[..., segments, n_actions]``, the Q-values decoded after each segment; ``q_carried``
            ``[..., n_actions]``, the Q-values decoded from the carried-in state before any new
            computation. Off by default, and then free. Can be switched later
            (``module.diagnostics = True``).
        in_keys: ``[observation, z_H, z_L, is_init]``; defaults to
            ``["observation", "z_H", "z_L", "is_init"]``.
        out_keys: ``[action_value, ("next", z_H), ("next", z_L)]``; defaults to
            ``["action_value", ("next", "z_H"), ("next", "z_L")]``.
        diagnostics_key: where the diagnostics go; defaults to ``"diagnostics"``.

    Observations are integer tokens of shape ``[..., config.seq_len]`` (or grids
    ``[..., *config.grid_shape]``) with values in ``[0, config.vocab_size)``; any batch shape
    works.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from hrm_torchrl import HRMConfig, HRMQValueNet
        >>> net = HRMQValueNet(HRMConfig.cpu(), n_actions=4)
        >>> td = TensorDict(
        ...     {
        ...         "observation": torch.randint(0, 128, (5, 121), dtype=torch.uint8),
        ...         "z_H": torch.zeros(5, 64),  # carry_state="token": [batch, hidden]
        ...         "z_L": torch.zeros(5, 64),
        ...         "is_init": torch.ones(5, 1, dtype=torch.bool),
        ...     },
        ...     batch_size=[5],
        ... )
        >>> td = net(td)
        >>> td["action_value"].shape, td["next", "z_H"].shape
        (torch.Size([5, 4]), torch.Size([5, 64]))
        >>> primer = net.make_tensordict_primer()  # env.append_transform(primer) in a pipeline
    """

    def __init__(
        self,
        config: HRMConfig,
        n_actions: int = 4,
        *,
        carry: str = "carry",
        carry_state: str = "token",
        dueling: bool = False,
        diagnostics: bool = False,
        in_keys=None,
        out_keys=None,
        diagnostics_key="diagnostics",
    ):
        if not isinstance(n_actions, int) or n_actions < 1:
            raise ValueError(f"n_actions must be a positive integer, got {n_actions!r}")
        super().__init__(config, in_keys=in_keys or ["observation", "z_H", "z_L", "is_init"],
                         out_keys=out_keys or ["action_value", ("next", "z_H"), ("next", "z_L")],
                         carry=carry, carry_state=carry_state)
        self.n_actions = n_actions
        self.diagnostics_key = _as_tuple(diagnostics_key)
        self.encoder = HRMEncoder(config)
        if dueling:
            self.head = DuelingHead(config.hidden, n_actions)
        else:
            self.head = nn.Linear(config.hidden, n_actions)
            with torch.no_grad():
                trunc_normal_(self.head.weight, std=1.0 / math.sqrt(config.hidden))
                self.head.bias.zero_()
        self.diagnostics = diagnostics

    @property
    def diagnostics(self) -> bool:
        return self._diagnostics

    @diagnostics.setter
    def diagnostics(self, value: bool) -> None:
        self._diagnostics = bool(value)
        extra = [(*self.diagnostics_key, name) for name in DIAGNOSTICS_KEYS]
        self.out_keys = list(self._base_out_keys) + (extra if self._diagnostics else [])

    def _input(self, tensordict: TensorDictBase):
        obs = self._get(tensordict, self.in_keys[0], "it holds the observation tokens")
        tokens, batch_shape = read_tokens(obs, self.in_keys[0], self.config, type(self).__name__)
        return self.encoder(tokens), batch_shape

    def q_values(self, z_H: torch.Tensor) -> torch.Tensor:
        """Q-values decoded from a full z_H [rows, tokens, hidden] at the readout token."""
        return self.head(z_H[:, 0]).float()

    def supervision_segments(self, tensordict: TensorDictBase):
        """HRM deep supervision: yields the Q-values ``[*batch, n_actions]`` after each of the
        ``config.segments`` segments, each segment starting from the previous one's detached
        state with gradient through its last L- and H-update only. Take an optimizer step between
        two ``next()`` calls. Writes nothing to ``tensordict``.
        """
        obs = self._get(tensordict, self.in_keys[0], "it holds the observation tokens")
        tokens, batch_shape = read_tokens(obs, self.in_keys[0], self.config, type(self).__name__)
        z_H, z_L = self._initial_states(tensordict, batch_shape, tokens.shape[0])
        for _ in range(self.config.segments):  # the weights change between two segments
            features, z_H, z_L = self.core(self.encoder(tokens), z_H.detach(), z_L.detach(), segments=1)
            yield self.head(features).reshape(*batch_shape, self.n_actions)

    @dispatch(auto_batch_size=False)
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        x, batch_shape = self._input(tensordict)
        z_H, z_L = self._initial_states(tensordict, batch_shape, x.shape[0])
        features, final_H, final_L, *trace = self.core(x, z_H, z_L, trace=self._diagnostics)
        q = self.head(features).float()
        tensordict.set(self._base_out_keys[0], q.reshape(*batch_shape, self.n_actions))
        self._write_state(tensordict, batch_shape, final_H, final_L)
        if self._diagnostics:
            self._write_diagnostics(tensordict, batch_shape, z_H, trace[0])
        return tensordict

    @torch.no_grad()
    def _write_diagnostics(self, tensordict, batch_shape, start_H, states) -> None:
        final_H, final_L = states[-1]
        values = {
            "mse_H": torch.stack([_mse(zh, final_H) for zh, _ in states], -1),
            "mse_L": torch.stack([_mse(zl, final_L) for _, zl in states], -1),
            "q_segments": torch.stack([self.q_values(zh) for zh, _ in states], -2),
            "q_carried": self.q_values(start_H.float()),
        }
        for name, value in values.items():
            tensordict.set((*self.diagnostics_key, name),
                           value.reshape(*batch_shape, *value.shape[1:]))
