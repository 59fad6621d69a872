"""HRMQValueNet: the HRM as a TorchRL TensorDictModule whose latent z = (z_H, z_L) is recurrent
state in the tensordict, the way :class:`torchrl.modules.LSTMModule` carries (h, c)."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase, unravel_key, unravel_key_list
from tensordict.nn import TensorDictModuleBase, dispatch
from torchrl.data import Unbounded

from hrm_torchrl.config import HRMConfig
from hrm_torchrl.hrm import HRM

CARRY_MODES = ("carry", "reset")
CARRY_STATES = ("token", "full")
DIAGNOSTICS_KEYS = ("mse_H", "mse_L", "q_segments", "q_carried")


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


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).flatten(1).mean(-1)


class HRMQValueNet(TensorDictModuleBase):
    """An HRM Q-network that carries its recurrent latent from one environment step to the next.

    Reads tokens and the carried (z_H, z_L), runs ``config.segments`` segments of HRM recurrence
    (one-step gradient) and writes Q-values and the final, detached (z_H, z_L) to ``"next"``, from
    where :func:`torchrl.envs.utils.step_mdp` moves them to the root of the following step.

    Args:
        config: an :class:`~hrm_torchrl.HRMConfig` (e.g. ``HRMConfig.paper()``).
        n_actions: size of the discrete action space.

    Keyword Args:
        carry: ``"carry"`` (Carry Z: start from the carried state, or from H_init/L_init where
            ``is_init`` is True) or ``"reset"`` (Reset Z: always start from H_init/L_init; the
            carried keys are still written so that the specs do not depend on the mode).
        carry_state: what is carried. ``"token"`` (default): the readout token's final vector of
            each level, broadcast to every position at the next step: ``2 * hidden`` floats per
            frame (512 B at hidden 64 in float32). ``"full"``: each level's whole
            ``[seq_len + 1, hidden]`` state: ``2 * (seq_len + 1) * hidden`` floats per frame
            (62,464 B at the paper preset, 122 x 64, in float32).
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

    Observations are integer tokens of shape ``[..., config.seq_len]`` with values in
    ``[0, config.vocab_size)``; any batch shape works (``[]``, ``[B]``, ``[B, T]``: every entry is
    one environment step with its own carried state).

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
        diagnostics: bool = False,
        in_keys=None,
        out_keys=None,
        diagnostics_key="diagnostics",
    ):
        super().__init__()
        if not isinstance(config, HRMConfig):
            raise ValueError(f"config must be an HRMConfig, got {type(config).__name__}")
        if carry not in CARRY_MODES:
            raise ValueError(f"unknown carry mode {carry!r}; choose one of {CARRY_MODES}")
        if carry_state not in CARRY_STATES:
            raise ValueError(f"unknown carry_state {carry_state!r}; choose one of {CARRY_STATES}")
        if not isinstance(n_actions, int) or n_actions < 1:
            raise ValueError(f"n_actions must be a positive integer, got {n_actions!r}")
        in_keys = unravel_key_list(in_keys or ["observation", "z_H", "z_L", "is_init"])
        out_keys = unravel_key_list(out_keys or ["action_value", ("next", "z_H"), ("next", "z_L")])
        if len(in_keys) != 4:
            raise ValueError(f"in_keys must be [observation, z_H, z_L, is_init], got {in_keys}")
        if len(out_keys) != 3:
            raise ValueError(
                f"out_keys must be [action_value, ('next', z_H), ('next', z_L)], got {out_keys}"
            )
        self.config = config
        self.n_actions = n_actions
        self.carry = carry
        self.carry_state = carry_state
        self.in_keys = in_keys
        self._base_out_keys = out_keys
        self.diagnostics_key = _as_tuple(diagnostics_key)
        self.hrm = HRM(config, n_actions)
        self.diagnostics = diagnostics

    @property
    def diagnostics(self) -> bool:
        return self._diagnostics

    @diagnostics.setter
    def diagnostics(self, value: bool) -> None:
        self._diagnostics = bool(value)
        extra = [(*self.diagnostics_key, name) for name in DIAGNOSTICS_KEYS]
        self.out_keys = list(self._base_out_keys) + (extra if self._diagnostics else [])

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

    # -- input checks: clear errors instead of deep stack traces ----------------------------
    def _get(self, tensordict: TensorDictBase, key, hint: str) -> torch.Tensor:
        value = tensordict.get(key, None)
        if value is None:
            raise ValueError(f"HRMQValueNet: the tensordict has no {key!r} entry; {hint}")
        return value

    def _tokens(self, tensordict: TensorDictBase) -> torch.Tensor:
        obs = self._get(tensordict, self.in_keys[0], "it holds the observation tokens")
        check_tokens(obs, self.in_keys[0], self.config.seq_len, self.config.vocab_size,
                     type(self).__name__)
        return obs.reshape(-1, self.config.seq_len).long()

    def _carried(self, tensordict, key, batch_shape, rows) -> torch.Tensor:
        z = self._get(
            tensordict,
            key,
            "append module.make_tensordict_primer() to the env (TensorDictPrimer) so that the "
            "carried state travels",
        )
        if tuple(z.shape) != (*batch_shape, *self.state_shape):
            raise ValueError(
                f"HRMQValueNet: carried state {key!r} must have shape "
                f"{(*batch_shape, *self.state_shape)} (batch + carry_state={self.carry_state!r}), "
                f"got {tuple(z.shape)}"
            )
        return z.reshape(rows, *self.state_shape).detach()

    # -- forward ----------------------------------------------------------------------------
    def supervision_segments(self, tensordict: TensorDictBase):
        """HRM deep supervision: yields the Q-values ``[*batch, n_actions]`` after each of the
        ``config.segments`` segments, each segment starting from the previous one's detached
        state with gradient through its last L- and H-update only. Take an optimizer step between
        two ``next()`` calls. Writes nothing to ``tensordict``.
        """
        tokens = self._tokens(tensordict)
        batch_shape = tuple(tensordict.get(self.in_keys[0]).shape[:-1])
        z_H, z_L = self._initial_states(tensordict, batch_shape, tokens.shape[0])
        for _ in range(self.config.segments):
            q, z_H, z_L = self.hrm(tokens, z_H.detach(), z_L.detach(), segments=1)
            yield q.reshape(*batch_shape, self.n_actions)

    def _initial_states(self, tensordict, batch_shape, rows):
        """(z_H, z_L) to start from, full [rows, tokens, hidden] each, and the raw carried-in
        pair when carrying (for diagnostics)."""
        init_H, init_L = self.hrm.initial_state(rows)
        if self.carry == "reset":
            return init_H, init_L
        is_init = self._get(
            tensordict, self.in_keys[3], "add torchrl.envs.InitTracker() to the env"
        )
        if is_init.shape not in (batch_shape, (*batch_shape, 1)):
            raise ValueError(
                f"HRMQValueNet: {self.in_keys[3]!r} must have shape {(*batch_shape, 1)}, "
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

    @dispatch(auto_batch_size=False)
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        tokens = self._tokens(tensordict)
        batch_shape = tuple(tensordict.get(self.in_keys[0]).shape[:-1])
        rows = tokens.shape[0]
        z_H, z_L = self._initial_states(tensordict, batch_shape, rows)
        result = self.hrm(tokens, z_H, z_L, trace=self._diagnostics)
        q, final_H, final_L = result[:3]

        tensordict.set(self._base_out_keys[0], q.reshape(*batch_shape, self.n_actions))
        tensordict.set(self._base_out_keys[1], self._carried_out(final_H, batch_shape))
        tensordict.set(self._base_out_keys[2], self._carried_out(final_L, batch_shape))
        if self._diagnostics:
            self._write_diagnostics(tensordict, batch_shape, z_H, result[3])
        return tensordict

    @torch.no_grad()
    def _write_diagnostics(self, tensordict, batch_shape, start_H, states) -> None:
        final_H, final_L = states[-1]
        values = {
            "mse_H": torch.stack([_mse(zh, final_H) for zh, _ in states], -1),
            "mse_L": torch.stack([_mse(zl, final_L) for _, zl in states], -1),
            "q_segments": torch.stack([self.hrm.q_values(zh) for zh, _ in states], -2),
            "q_carried": self.hrm.q_values(start_H.float()),
        }
        for name, value in values.items():
            tensordict.set((*self.diagnostics_key, name),
                           value.reshape(*batch_shape, *value.shape[1:]))
