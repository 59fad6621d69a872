"""The Hierarchical Reasoning Model (Wang et al. 2025) as a Q-network, in plain PyTorch.

Read top to bottom: initialisation and norm, RoPE, attention, SwiGLU, the post-norm block, a
reasoning module (a stack of blocks with input injection), the encoder (one position per
observation token, or per patch of grid cells), then the recurrent core: the readout token and
positions, one segment of H/L recurrence with the one-step gradient, ``segments`` segments, and
the features read at the readout token. Latent states here are full: ``[batch, tokens, hidden]``
per level. ``hrm_torchrl.module`` puts them in TensorDict modules with the carried state.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hrm_torchrl.config import HRMConfig

# std of a standard normal truncated to [-2, 2]: dividing by it keeps the intended std.
_TRUNC2_STD = 0.8796256610342398


def trunc_normal_(tensor: torch.Tensor, std: float) -> torch.Tensor:
    """Normal init truncated at 2 std, rescaled so that the result really has std ``std``."""
    scale = std / _TRUNC2_STD
    return nn.init.trunc_normal_(tensor, std=scale, a=-2 * scale, b=2 * scale)


def lecun_linear(in_features: int, out_features: int) -> nn.Linear:
    """A bias-free linear layer with truncated LeCun-normal weights (std 1/sqrt(fan_in))."""
    layer = nn.Linear(in_features, out_features, bias=False)
    with torch.no_grad():
        trunc_normal_(layer.weight, std=1.0 / math.sqrt(in_features))
    return layer


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    # RMSNorm without a learnable weight, as in HRM.
    return F.rms_norm(x, (x.shape[-1],), eps=1e-5)


def rope_tables(tokens: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(tokens, dtype=torch.float32), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)  # [tokens, head_dim]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    """Non-causal multi-head self-attention, no biases, optional RoPE on queries and keys."""

    def __init__(self, config: HRMConfig):
        super().__init__()
        self.heads, self.head_dim = config.heads, config.head_dim
        self.qkv = lecun_linear(config.hidden, 3 * config.hidden)
        self.out = lecun_linear(config.hidden, config.hidden)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None):
        batch, tokens, hidden = x.shape
        q, k, v = (
            self.qkv(x).view(batch, tokens, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        )
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(batch, tokens, hidden))


class SwiGLU(nn.Module):
    def __init__(self, config: HRMConfig):
        super().__init__()
        self.gate_up = lecun_linear(config.hidden, 2 * config.mlp_hidden)
        self.down = lecun_linear(config.mlp_hidden, config.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    """Post-norm transformer block: x <- norm(x + attn(x)); x <- norm(x + mlp(x))."""

    def __init__(self, config: HRMConfig):
        super().__init__()
        self.attn = Attention(config)
        self.mlp = SwiGLU(config)

    def forward(self, x: torch.Tensor, rope) -> torch.Tensor:
        x = rms_norm(x + self.attn(x, rope))
        return rms_norm(x + self.mlp(x))


class ReasoningModule(nn.Module):
    """A stack of blocks updating one level's state, with its input injected by addition."""

    def __init__(self, config: HRMConfig, layers: int):
        super().__init__()
        self.blocks = nn.ModuleList(Block(config) for _ in range(layers))

    def forward(self, state: torch.Tensor, injection: torch.Tensor, rope) -> torch.Tensor:
        state = state + injection
        for block in self.blocks:
            state = block(state, rope)
        return state


class HRMEncoder(nn.Module):
    """Observation tokens -> the HRM's input features: ``[batch, seq_len]`` integer tokens to
    ``[batch, positions, hidden]`` of unit scale, one position per token (``patch=1``) or per
    ``patch x patch`` cells of the grid, whose cell embeddings are concatenated and projected, as
    a ViT does with pixels."""

    def __init__(self, config: HRMConfig):
        super().__init__()
        self.config = config
        self.embed_scale = math.sqrt(config.hidden)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden)
        with torch.no_grad():
            trunc_normal_(self.embed_tokens.weight, std=1.0 / self.embed_scale)
        if config.patch > 1:
            self.patch_proj = lecun_linear(config.patch**2 * config.hidden, config.hidden)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(tokens)
        if self.config.patch > 1:
            x = self._patches(x)
        return self.embed_scale * x

    def _patches(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, rows * cols, hidden] cell embeddings -> [batch, patches, hidden]: the grid is
        padded with zeros to whole patches, and each patch's cells are concatenated and
        projected."""
        p, (rows, cols), (patch_rows, patch_cols) = (
            self.config.patch, self.config.grid_shape, self.config.position_grid)
        h = x.shape[-1]
        x = F.pad(x.view(-1, rows, cols, h), (0, 0, 0, patch_cols * p - cols, 0, patch_rows * p - rows))
        x = x.view(-1, patch_rows, p, patch_cols, p, h).permute(0, 1, 3, 2, 4, 5)
        return self.patch_proj(x.reshape(-1, patch_rows * patch_cols, p * p * h))


class HRMCore(nn.Module):
    """The HRM's recurrence on full latent states ``[batch, config.tokens, hidden]``.

    ``forward(x, z_H, z_L)`` takes input features ``x`` ``[batch, config.tokens - 1, hidden]``
    (an ``HRMEncoder``'s, or any encoder's of unit scale), puts the learned readout token before
    them and adds the position encodings, runs ``segments`` segments from (z_H, z_L) and returns
    ``(features, z_H, z_L)``: ``features`` is z_H at the readout token, ``[batch, hidden]``.
    With ``config.gradient="one_step"`` only the last L- and H-update of the last segment carry
    gradient: earlier segments start from detached states and add nothing to the backward pass,
    so they run without autograd at all. With ``"full"`` the gradient runs back through every
    update of every segment to the (detached) starting state.

    Examples:
        >>> import torch
        >>> from hrm_torchrl import HRMConfig
        >>> from hrm_torchrl.hrm import HRMCore, HRMEncoder
        >>> config = HRMConfig.cpu()
        >>> encoder, core = HRMEncoder(config), HRMCore(config)
        >>> x = encoder(torch.randint(0, 128, (3, 121)))  # 2x2 patches: 36 positions
        >>> z_H, z_L = core.initial_state(3)
        >>> features, z_H, z_L = core(x, z_H, z_L)
        >>> features.shape, z_H.shape  # and the readout token, hidden 64
        (torch.Size([3, 64]), torch.Size([3, 37, 64]))
    """

    # Rows per chunk when running without autograd (see forward).
    inference_chunk = 64
    # Under CUDA graphs (torch.compile's "reduce-overhead"), a compiled level's next call
    # overwrites the output of its last one, which the next cycle still reads: clone it.
    clone_level_outputs = False

    def __init__(self, config: HRMConfig):
        super().__init__()
        self.config = config
        h = config.hidden
        self.embed_scale = math.sqrt(h)
        # The readout token, prepended at position 0: the paper's "embedding" parameter group.
        self.readout = nn.Parameter(trunc_normal_(torch.empty(h), std=1.0 / self.embed_scale))
        if config.positions == "rope":
            cos, sin = rope_tables(config.tokens, config.head_dim, config.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        elif config.positions == "learned":
            self.position = self._position_table(config.tokens)
        else:  # "2d": a row table, a column table, and one vector for the readout token
            rows, cols = config.position_grid
            self.row_position = self._position_table(rows)
            self.col_position = self._position_table(cols)
            self.readout_position = self._position_table(1)
        self.H_level = ReasoningModule(config, config.H_layers)
        self.L_level = ReasoningModule(config, config.L_layers)
        # Fixed initial states (not learned), as in HRM.
        self.register_buffer("H_init", trunc_normal_(torch.empty(h), std=1.0))
        self.register_buffer("L_init", trunc_normal_(torch.empty(h), std=1.0))

    def _position_table(self, rows: int) -> nn.Parameter:
        return nn.Parameter(trunc_normal_(torch.empty(rows, self.config.hidden), 1 / self.embed_scale))

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The readout token: the paper trains it with lr 1e-2 and weight decay 0.1."""
        return [self.readout]

    def block_parameter_count(self) -> int:
        return sum(p.numel() for level in (self.H_level, self.L_level) for p in level.parameters())

    def _rope(self):
        return None if self.config.positions != "rope" else (self.rope_cos, self.rope_sin)

    def inject(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, tokens - 1, hidden] features -> [batch, tokens, hidden] input injection: the
        readout token first, the position encodings added (RoPE acts in attention instead)."""
        readout = (self.embed_scale * self.readout).expand(x.shape[0], 1, -1).to(x.dtype)
        x = torch.cat((readout, x), dim=1)
        if self.config.positions == "learned":
            x = (x + self.embed_scale * self.position) / math.sqrt(2)
        elif self.config.positions == "2d":
            grid = (self.row_position[:, None] + self.col_position[None, :]).flatten(0, 1)
            x = (x + self.embed_scale * torch.cat((self.readout_position, grid))) / math.sqrt(2)
        return x

    def initial_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """H_init and L_init broadcast to every position: [batch, tokens, hidden] each."""
        shape = (batch, self.config.tokens, self.config.hidden)
        return self.H_init.expand(shape), self.L_init.expand(shape)

    def segment(self, z_H: torch.Tensor, z_L: torch.Tensor, x: torch.Tensor):
        """H_cycles x L_cycles L-updates and H_cycles H-updates; with ``gradient="one_step"``
        only the last of each keeps gradient (HRM's one-step gradient), with ``"full"`` all."""
        cfg, rope = self.config, self._rope()
        L, H = self.L_level, self.H_level
        if self.clone_level_outputs:
            L, H = (lambda *a: self.L_level(*a).clone()), (lambda *a: self.H_level(*a).clone())
        with torch.set_grad_enabled(torch.is_grad_enabled() and cfg.gradient == "full"):
            for h in range(cfg.H_cycles):
                for l in range(cfg.L_cycles):
                    if h < cfg.H_cycles - 1 or l < cfg.L_cycles - 1:
                        z_L = L(z_L, z_H + x, rope)
                if h < cfg.H_cycles - 1:
                    z_H = H(z_H, z_L, rope)
        z_L = L(z_L, z_H + x, rope)
        z_H = H(z_H, z_L, rope)
        return z_H, z_L

    def forward(self, x, z_H, z_L, segments: int | None = None, trace: bool = False):
        """Runs ``segments`` (default ``config.segments``) segments from (z_H, z_L).

        Returns ``(features, z_H, z_L)``, or ``(features, z_H, z_L, states)`` with
        ``trace=True``, where ``states`` lists the (z_H, z_L) after each segment.

        Without autograd a CPU batch runs in chunks of ``inference_chunk`` rows: the activations
        of a chunk stay in cache, which measured 1.7x faster than one 256-row batch on a 2-core
        CPU (benchmarks/README.md). On a GPU, chunks would only multiply kernel launches.
        """
        rows = x.shape[0]
        if torch.is_grad_enabled() or not x.is_cpu or rows <= self.inference_chunk:
            return self._forward(x, z_H, z_L, segments, trace)
        step = self.inference_chunk
        parts = [self._forward(x[i : i + step], z_H[i : i + step], z_L[i : i + step], segments, trace)
                 for i in range(0, rows, step)]
        out = tuple(torch.cat([part[j] for part in parts]) for j in range(3))
        if not trace:
            return out
        states = [
            tuple(torch.cat([part[3][s][j] for part in parts]) for j in range(2))
            for s in range(len(parts[0][3]))
        ]
        return (*out, states)

    def _forward(self, x, z_H, z_L, segments, trace):
        segments = self.config.segments if segments is None else segments
        states = []
        with torch.autocast(
            x.device.type, dtype=torch.bfloat16, enabled=self.config.dtype == "bfloat16"
        ):
            x = self.inject(x)
            full = self.config.gradient == "full"  # through every segment, from the detached start
            for i in range(segments):
                if i == 0 or not full:
                    z_H, z_L = z_H.detach(), z_L.detach()
                with torch.set_grad_enabled(torch.is_grad_enabled() and (full or i == segments - 1)):
                    z_H, z_L = self.segment(z_H, z_L, x)
                if trace:
                    states.append((z_H.detach().float(), z_L.detach().float()))
        out = (z_H[:, 0].float(), z_H.float(), z_L.float())
        return (*out, states) if trace else out
