"""HRMConfig: the hyperparameters of the HRM Q-network, with the paper's and a CPU preset."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

POSITION_ENCODINGS = ("rope", "learned", "2d")
DTYPES = ("float32", "bfloat16")
GRADIENTS = ("one_step", "full")


def check_positive_int(name: str, value) -> None:
    """Raises a ValueError naming ``name`` unless ``value`` is an int >= 1 (bools refused)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def from_known_fields(cls, values: dict):
    """``cls(**values)`` for a dataclass, a ValueError naming any field it does not have."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}; known: {sorted(known)}")
    return cls(**values)


@dataclass
class HRMConfig:
    """Shape of an HRM: two recurrent transformer modules, slow H and fast L.

    One environment step runs ``segments`` segments; a segment runs ``H_cycles * L_cycles``
    L-updates and ``H_cycles`` H-updates, and only the last L- and last H-update carry gradient
    (HRM's one-step gradient), unless ``gradient="full"``.

    Args:
        hidden: width of every token's latent.
        heads: attention heads; must divide ``hidden``.
        expansion: SwiGLU width factor; the intermediate size is ``expansion * hidden * 2 / 3``
            rounded up to a multiple of ``mlp_multiple_of`` (256 in HRM).
        H_layers, L_layers: transformer blocks in the H and L module.
        H_cycles, L_cycles: recurrence counts inside one segment.
        segments: segments per environment step (HRM's ACT steps, fixed here as in the paper).
        seq_len: observation tokens per frame (121 for the 11x11 mazes); the readout token is extra.
        vocab_size: token vocabulary (the 128 ASCII codes by default).
        patch: side of the square of grid cells that one position embeds. 1 (the paper's): one
            position per observation token. p > 1: the grid (padded to a multiple of p) is cut
            into p x p patches, each cell embedded, and a patch's p * p embeddings mapped
            linearly to one position, as a ViT does with pixels; needs ``grid_shape``.
        positions: ``"rope"`` (the paper's), ``"learned"`` (1D table) or ``"2d"`` (learned row +
            column tables over the grid of positions; needs ``grid_shape`` with
            ``rows * cols == seq_len``).
        grid_shape: ``(rows, cols)`` of a grid observation, for ``positions="2d"`` or ``patch > 1``,
            and so that the network reads observations as ``[..., rows, cols]`` grids too.
        rope_theta: RoPE base.
        dtype: ``"float32"`` or ``"bfloat16"`` (autocast; CUDA, or CPUs with AVX512-BF16).
        gradient: ``"one_step"`` (HRM's: the last L- and H-update of the last segment only) or
            ``"full"`` (backpropagation through every update of every segment of one forward,
            back to the carried-in state, which stays detached: the exact gradient, at
            ``segments * block_passes_per_segment`` blocks' activations kept).
    """

    hidden: int = 64
    heads: int = 2
    expansion: float = 4.0
    mlp_multiple_of: int = 256
    H_layers: int = 4
    L_layers: int = 4
    H_cycles: int = 2
    L_cycles: int = 2
    segments: int = 8
    seq_len: int = 121
    vocab_size: int = 128
    patch: int = 1
    positions: str = "rope"
    grid_shape: tuple[int, int] | None = None
    rope_theta: float = 10000.0
    dtype: str = "float32"
    gradient: str = "one_step"

    def __post_init__(self):
        if self.grid_shape is not None:
            self.grid_shape = tuple(int(v) for v in self.grid_shape)
        self.validate()

    @classmethod
    def paper(cls, **overrides) -> HRMConfig:
        """Appendix A of HRM-Agent (Dang & Rawlinson 2025): hidden 64, 2 heads, 4+4 layers,
        2x2 cycles, 8 segments, RoPE, one position per cell of the 11x11 grid. Its 8 blocks hold
        524,288 parameters."""
        return cls(**{"grid_shape": (11, 11), **overrides})

    @classmethod
    def cpu(cls, **overrides) -> HRMConfig:
        """A small preset meant to train on a 2-core CPU: 2x2 patches of the 11x11 grid (37
        positions instead of 122), hidden 64, SwiGLU expansion 2, 1+1 layers, 1x1 cycles, 2
        segments (so that carrying z means something), learned row + column positions, and the
        exact gradient through both segments (``gradient="full"``: 4 block passes keep it cheap)."""
        base = dict(
            hidden=64,
            heads=2,
            expansion=2.0,
            mlp_multiple_of=32,
            H_layers=1,
            L_layers=1,
            H_cycles=1,
            L_cycles=1,
            segments=2,
            patch=2,
            positions="2d",
            grid_shape=(11, 11),
            gradient="full",  # the one-step gradient stops DynamicMaze well short (research log)
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def preset(cls, name: str, **overrides) -> HRMConfig:
        """The preset called ``name`` (``"paper"`` or ``"cpu"``)."""
        presets = {"paper": cls.paper, "cpu": cls.cpu}
        if name not in presets:
            raise ValueError(f"unknown HRM preset {name!r}; choose one of {sorted(presets)}")
        return presets[name](**overrides)

    @classmethod
    def parse_overrides(cls, items: list[str]) -> dict:
        """``["patch=1", "positions=rope", "grid_shape=11,11"]`` -> keyword overrides, each value
        converted to its field's type; an unknown field or a value of the wrong type is a
        ValueError naming it."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        overrides = {}
        for item in items:
            name, sep, text = item.partition("=")
            if not sep:
                raise ValueError(f"HRMConfig override {item!r} is not of the form field=value")
            if name not in fields:
                raise ValueError(f"unknown HRMConfig field {name!r}; known: {sorted(fields)}")
            default = fields[name].default
            try:
                if name == "grid_shape":
                    value = tuple(int(v) for v in text.split(","))
                else:  # int, float or str, each of which parses its own text
                    value = type(default)(text)
            except ValueError:
                kind = "rows,cols" if name == "grid_shape" else type(default).__name__
                raise ValueError(f"HRMConfig.{name} takes {kind}, got {text!r}") from None
            overrides[name] = value
        return overrides

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def mlp_hidden(self) -> int:
        width = round(self.expansion * self.hidden * 2 / 3)
        return -(-width // self.mlp_multiple_of) * self.mlp_multiple_of

    @property
    def position_grid(self) -> tuple[int, int] | None:
        """(rows, cols) of the grid of positions (of patches when ``patch > 1``), or None."""
        if self.grid_shape is None:
            return None
        rows, cols = self.grid_shape
        return -(-rows // self.patch), -(-cols // self.patch)

    @property
    def tokens(self) -> int:
        """Positions the transformer sees: the readout token plus one per observation token (or
        per patch)."""
        if self.patch == 1:
            return self.seq_len + 1
        rows, cols = self.position_grid
        return rows * cols + 1

    @property
    def block_passes_per_segment(self) -> int:
        return self.H_cycles * (self.L_cycles * self.L_layers + self.H_layers)

    def flops_per_frame(self) -> float:
        """Multiply-adds x 2 of one environment step's forward (all segments), the attention
        products included; norms, RoPE and activations left out."""
        t, h, m = self.tokens, self.hidden, self.mlp_hidden
        per_block = t * (4 * h * h + 3 * h * m) + 2 * t * t * h
        return 2.0 * per_block * self.block_passes_per_segment * self.segments

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> HRMConfig:
        return from_known_fields(cls, values)

    def validate(self) -> None:
        positive = (
            "hidden", "heads", "mlp_multiple_of", "H_layers", "L_layers", "H_cycles",
            "L_cycles", "segments", "seq_len", "vocab_size", "patch",
        )
        for name in positive:
            check_positive_int(f"HRMConfig.{name}", getattr(self, name))
        if not (self.expansion > 0 and math.isfinite(self.expansion)):
            raise ValueError(f"HRMConfig.expansion must be positive, got {self.expansion!r}")
        if self.hidden % self.heads:
            raise ValueError(
                f"HRMConfig.hidden ({self.hidden}) must be divisible by heads ({self.heads})"
            )
        if self.positions not in POSITION_ENCODINGS:
            raise ValueError(
                f"unknown HRMConfig.positions {self.positions!r}; choose one of {POSITION_ENCODINGS}"
            )
        if self.positions == "rope" and self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head dimension, got {self.head_dim}")
        if self.positions == "2d" or self.patch > 1:
            if self.grid_shape is None or len(self.grid_shape) != 2:
                raise ValueError("HRMConfig.positions='2d' and patch > 1 need grid_shape=(rows, cols)")
            rows, cols = self.grid_shape
            if rows * cols != self.seq_len:
                raise ValueError(
                    f"HRMConfig.grid_shape {self.grid_shape} holds {rows * cols} cells "
                    f"but seq_len is {self.seq_len}"
                )
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown HRMConfig.dtype {self.dtype!r}; choose one of {DTYPES}")
        if self.gradient not in GRADIENTS:
            raise ValueError(f"unknown HRMConfig.gradient {self.gradient!r}; choose one of {GRADIENTS}")
