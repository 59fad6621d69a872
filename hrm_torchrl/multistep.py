"""n-step returns that stop at the goal: TorchRL's MultiStep postproc with its done keys gathered.

TorchRL 0.14.1's :class:`torchrl.data.postprocs.MultiStep` moves ``("next", ...)`` to the last frame
of each n-step window but leaves the done keys of the window's first frame in place. A window that
reaches a terminal frame then reads ``terminated=False`` and the value estimator bootstraps from
the terminal observation (checked on a hand-made trajectory in tests/test_hindsight.py).
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torchrl.data.postprocs import MultiStep as _TorchRLMultiStep


class MultiStep(_TorchRLMultiStep):
    """:class:`torchrl.data.postprocs.MultiStep` whose ``("next", done/terminated/truncated)`` come
    from the window's last frame, as its ``("next", observation)`` does.

    A window that ends at a terminal frame is terminated (no bootstrap); one cut by a truncation
    or by the end of the batch bootstraps from its last next observation with
    ``gamma ** steps_to_next_obs``, which is what TorchRL's ``TD0Estimator`` reads.

    Args:
        gamma: discount.
        n_steps: frames per window (1 leaves the rewards alone).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from hrm_torchrl.multistep import MultiStep
        >>> done = torch.tensor([False, False, True, False])[None, :, None]  # goal at t=2
        >>> td = TensorDict({"next": {"reward": done.float(), "done": done, "terminated": done,
        ...                           "observation": torch.arange(1, 5)[None]}}, [1, 4])
        >>> out = MultiStep(gamma=0.9, n_steps=3)(td)
        >>> out["next", "terminated"].squeeze(-1).tolist()  # t=0 and t=1 reach the goal
        [[True, True, True, False]]
    """

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        out = super().forward(tensordict)
        time_dim = tensordict.ndim - 1
        steps = out.get("steps_to_next_obs").reshape(tensordict.shape)
        last = torch.arange(tensordict.shape[-1]) + steps - 1  # each window's last frame
        for key in self.done_keys:
            value = tensordict.get(("next", key), None)
            if value is not None:
                index = last.reshape(*last.shape, *[1] * (value.ndim - last.ndim))
                out.set(("next", key), value.gather(time_dim, index.expand_as(value)))
        return out
