"""Baseline Q-networks for the same pipeline as the HRM: an MLP, and a DRQN on TorchRL's LSTMModule.

Both read the same token observation and write ``"action_value"``, so that QValueActor,
EGreedyModule, DQNLoss, the collectors and the evaluation treat them exactly as the HRM. The DRQN
carries (h, c) the way HRMQValueNet carries (z_H, z_L): recurrent state in the tensordict, a
primer for the env, ``is_init`` to restart, and the same Carry/Reset choice.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase, unravel_key_list
from tensordict.nn import TensorDictModuleBase, dispatch
from torch import nn
from torchrl.modules import LSTMModule, set_recurrent_mode

from hrm_torchrl.config import check_positive_int
from hrm_torchrl.module import CARRY_MODES, check_tokens


class TokenEmbedding(nn.Module):
    """``[..., seq_len]`` integer tokens -> ``[..., seq_len * dim]``: each token embedded, then
    flattened (the position is the place in the flat vector)."""

    def __init__(self, vocab_size: int = 128, dim: int = 8):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embed(tokens.long()).flatten(-2)


class BaselineQValueNet(TensorDictModuleBase):
    """What the pipeline asks of every Q-network (``HRMQValueNet`` has the same methods):
    its primer, its optimizer groups, what to compile."""

    def make_tensordict_primer(self):
        """The env primer of the recurrent state; None when there is none (the MLP)."""
        return None

    def param_groups(self, lr: float, embedding_lr: float | None = None,
                     embedding_weight_decay: float = 0.0) -> list[dict]:
        """One optimizer group: every parameter at ``lr``, no weight decay (the embedding
        arguments are for the HRM's readout token; a baseline has none)."""
        return [{"params": list(self.parameters()), "lr": lr, "weight_decay": 0.0}]

    def compile_modules(self, mode: str | None = None) -> None:
        """``torch.compile`` the tensor modules in place, in ``mode`` (torch.compile's);
        parameters and state_dict keys stay the same."""
        for module in self._compiled_modules():
            module.compile(mode=mode)


class MLPQValueNet(BaselineQValueNet):
    """Q-values from an MLP on embedded tokens: ``seq_len * embed_dim -> hidden -> ... -> n_actions``
    with ReLUs. No recurrent state.

    Args:
        n_actions: size of the discrete action space.

    Keyword Args:
        seq_len: tokens per observation (121 for the 11x11 mazes).
        vocab_size: token vocabulary (the 128 ASCII codes).
        embed_dim: width of each token's embedding.
        hidden: width of the hidden layers.
        layers: number of hidden layers.
        in_keys: ``[observation]``; defaults to ``["observation"]``.
        out_keys: ``[action_value]``; defaults to ``["action_value"]``.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from hrm_torchrl.baselines import MLPQValueNet
        >>> net = MLPQValueNet(4)
        >>> td = TensorDict({"observation": torch.randint(0, 128, (5, 121), dtype=torch.uint8)}, [5])
        >>> net(td)["action_value"].shape
        torch.Size([5, 4])
    """

    def __init__(self, n_actions: int = 4, *, seq_len: int = 121, vocab_size: int = 128,
                 embed_dim: int = 8, hidden: int = 256, layers: int = 2, in_keys=None,
                 out_keys=None):
        super().__init__()
        for name, value in (("n_actions", n_actions), ("seq_len", seq_len), ("vocab_size", vocab_size),
                            ("embed_dim", embed_dim), ("hidden", hidden), ("layers", layers)):
            check_positive_int(name, value)
        self.in_keys = unravel_key_list(in_keys or ["observation"])
        self.out_keys = unravel_key_list(out_keys or ["action_value"])
        if len(self.in_keys) != 1 or len(self.out_keys) != 1:
            raise ValueError(f"MLPQValueNet takes one in_key and one out_key, got {self.in_keys} "
                             f"and {self.out_keys}")
        self.seq_len, self.vocab_size = seq_len, vocab_size
        widths = [seq_len * embed_dim] + [hidden] * layers
        body = [TokenEmbedding(vocab_size, embed_dim)]
        for a, b in zip(widths[:-1], widths[1:]):
            body += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*body, nn.Linear(widths[-1], n_actions))

    def _compiled_modules(self):
        return [self.net]

    @dispatch(auto_batch_size=False)
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        obs = tensordict.get(self.in_keys[0], None)
        if obs is None:
            raise ValueError(f"MLPQValueNet: the tensordict has no {self.in_keys[0]!r} entry")
        check_tokens(obs, self.in_keys[0], self.seq_len, self.vocab_size, type(self).__name__)
        tensordict.set(self.out_keys[0], self.net(obs))
        return tensordict


class LSTMQValueNet(BaselineQValueNet):
    """A DRQN (Hausknecht & Stone 2015): embedded tokens -> linear + ReLU -> TorchRL's
    :class:`~torchrl.modules.LSTMModule` -> linear Q head, carrying (h, c) in the tensordict.

    One environment step is one LSTM step from the carried (h, c) (zeros where ``is_init``), as
    the HRM runs its segments from the carried z; gradients do not cross environment steps, and a
    replayed frame restarts from its stored state. The LSTM always runs one step per frame, also
    inside TorchRL losses (which switch LSTMModules to sequence mode).

    Args:
        n_actions: size of the discrete action space.

    Keyword Args:
        carry: ``"carry"`` (start from the carried (h, c), zeros where ``is_init``) or ``"reset"``
            (start from zeros at every step; the state is still written, so that the specs do not
            depend on the mode).
        seq_len, vocab_size, embed_dim: as in :class:`MLPQValueNet`.
        hidden: width of the linear layer and of the LSTM.
        in_keys: ``[observation, h, c, is_init]``; defaults to
            ``["observation", "recurrent_state_h", "recurrent_state_c", "is_init"]``.
        out_keys: ``[action_value, ("next", h), ("next", c)]``.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from hrm_torchrl.baselines import LSTMQValueNet
        >>> net = LSTMQValueNet(4, hidden=32)
        >>> td = TensorDict({
        ...     "observation": torch.randint(0, 128, (5, 121), dtype=torch.uint8),
        ...     "recurrent_state_h": torch.zeros(5, 1, 32),
        ...     "recurrent_state_c": torch.zeros(5, 1, 32),
        ...     "is_init": torch.ones(5, 1, dtype=torch.bool)}, [5])
        >>> td = net(td)
        >>> td["action_value"].shape, td["next", "recurrent_state_h"].shape
        (torch.Size([5, 4]), torch.Size([5, 1, 32]))
        >>> primer = net.make_tensordict_primer()  # env.append_transform(primer) in a pipeline
    """

    def __init__(self, n_actions: int = 4, *, carry: str = "carry", seq_len: int = 121,
                 vocab_size: int = 128, embed_dim: int = 8, hidden: int = 256, in_keys=None,
                 out_keys=None):
        super().__init__()
        for name, value in (("n_actions", n_actions), ("seq_len", seq_len), ("vocab_size", vocab_size),
                            ("embed_dim", embed_dim), ("hidden", hidden)):
            check_positive_int(name, value)
        if carry not in CARRY_MODES:
            raise ValueError(f"unknown carry mode {carry!r}; choose one of {CARRY_MODES}")
        in_keys = unravel_key_list(
            in_keys or ["observation", "recurrent_state_h", "recurrent_state_c", "is_init"])
        out_keys = unravel_key_list(
            out_keys or ["action_value", ("next", "recurrent_state_h"), ("next", "recurrent_state_c")])
        if len(in_keys) != 4 or len(out_keys) != 3:
            raise ValueError(f"in_keys must be [observation, h, c, is_init] and out_keys "
                             f"[action_value, ('next', h), ('next', c)], got {in_keys} and {out_keys}")
        self.in_keys, self.out_keys = in_keys, out_keys
        self.carry = carry
        self.seq_len, self.vocab_size = seq_len, vocab_size
        self.encoder = nn.Sequential(TokenEmbedding(vocab_size, embed_dim),
                                     nn.Linear(seq_len * embed_dim, hidden), nn.ReLU())
        # The LSTMModule reads "is_init" itself; it runs on a shallow copy of the tensordict, so
        # that Reset can set is_init there without touching the caller's entry.
        self.lstm = LSTMModule(input_size=hidden, hidden_size=hidden,
                               in_keys=["features", in_keys[1], in_keys[2], "is_init"],
                               out_keys=["lstm_out", *out_keys[1:]])
        self.head = nn.Linear(hidden, n_actions)

    def _compiled_modules(self):
        return [self.encoder, self.head]

    def make_tensordict_primer(self):
        """The :class:`~torchrl.envs.TensorDictPrimer` that registers (h, c) in the env's specs
        (the LSTMModule's own)."""
        return self.lstm.make_tensordict_primer()

    @dispatch(auto_batch_size=False)
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        obs_key, h_key, c_key, init_key = self.in_keys
        obs = tensordict.get(obs_key, None)
        if obs is None:
            raise ValueError(f"LSTMQValueNet: the tensordict has no {obs_key!r} entry")
        check_tokens(obs, obs_key, self.seq_len, self.vocab_size, type(self).__name__)
        inner = tensordict.empty()
        for key in (h_key, c_key):
            state = tensordict.get(key, None)
            if state is None:
                raise ValueError(
                    f"LSTMQValueNet: the tensordict has no {key!r} entry; append "
                    "module.make_tensordict_primer() to the env (TensorDictPrimer) so that the "
                    "carried state travels")
            inner.set(key, state)
        is_init = tensordict.get(init_key, None)
        if self.carry == "reset":
            is_init = torch.ones(*obs.shape[:-1], 1, dtype=torch.bool, device=obs.device)
        elif is_init is None:
            raise ValueError(f"LSTMQValueNet: the tensordict has no {init_key!r} entry; add "
                             "torchrl.envs.InitTracker() to the env")
        inner.set("is_init", is_init)
        inner.set("features", self.encoder(obs))
        # TorchRL losses run their networks under set_recurrent_mode(True), where the LSTMModule
        # would read a minibatch of unrelated replayed frames as one time sequence.
        with set_recurrent_mode(False):
            inner = self.lstm(inner)
        tensordict.set(self.out_keys[0], self.head(inner.get("lstm_out")))
        for key in self.out_keys[1:]:
            tensordict.set(key, inner.get(key))
        return tensordict
