"""HRM's deep supervision as a TorchRL loss: ``DQNLoss`` trained once per segment.

HRM (Wang et al. 2025) trains a minibatch over its segments: each segment starts from the
previous one's detached state, and an optimizer step follows every segment. HRM-Agent does the
same with a Q-learning target, computed once per minibatch by the target network.
``DeepSupervisionDQNLoss`` is that update as a ``DQNLoss``: the target comes from the loss's own
value estimator (TD(0), n-step via ``steps_to_next_obs``, Double DQN, or any estimator given to
``make_value_estimator``), then ``segment_losses(batch)`` yields one loss per segment, each to be
stepped on before the next is computed. ``loss(batch)`` averages the segments' losses for loops
that take one optimizer step per minibatch.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.envs.utils import step_mdp
from torchrl.objectives import DQNLoss
from torchrl.objectives.utils import distance_loss


class DeepSupervisionDQNLoss(DQNLoss):
    """``DQNLoss`` over the segments of a network with ``supervision_segments`` (an
    ``HRMQValueNet``), the target computed once per minibatch.

    Args and keyword args: those of :class:`torchrl.objectives.DQNLoss`; ``value_network`` is a
    ``QValueActor`` around a network with a ``supervision_segments(tensordict)`` generator.

    The target reads the replayed next state as stored, its carried state included (what the
    acting network carried into it). ``DQNLoss.forward`` instead runs the online network first
    and bootstraps from the ``("next", z)`` that forward just wrote into its copy of the batch.

    Examples:
        >>> from torchrl.modules import QValueActor
        >>> from hrm_torchrl import HRMConfig, HRMQValueNet, make_env
        >>> from hrm_torchrl.deep_supervision import DeepSupervisionDQNLoss
        >>> net = HRMQValueNet(HRMConfig.cpu(segments=3))
        >>> env = make_env("FourRoomsDoors", num_envs=4, seed=0, primer=net.make_tensordict_primer())
        >>> actor = QValueActor(net, spec=env.action_spec_unbatched)
        >>> loss = DeepSupervisionDQNLoss(actor, loss_function="l2", delay_value=True, double_dqn=True)
        >>> loss.make_value_estimator(gamma=0.95)
        >>> batch = env.rollout(3, actor, break_when_any_done=False).reshape(-1)
        >>> optim = torch.optim.Adam(loss.parameters())
        >>> for segment in loss.segment_losses(batch):  # one optimizer step per segment
        ...     optim.zero_grad(); segment["loss"].backward(); optim.step()
        >>> len(loss.last_segment_losses)
        3
    """

    def __init__(self, value_network, *args, **kwargs):
        super().__init__(value_network, *args, **kwargs)
        nets = [m for m in self.value_network.modules() if hasattr(m, "supervision_segments")]
        if not nets:
            raise ValueError("DeepSupervisionDQNLoss needs a value network that contains a module "
                             "with supervision_segments() (an HRMQValueNet)")
        self._segmented = nets[0]
        self.last_segment_losses: list[torch.Tensor] = []

    @torch.no_grad()
    def value_target(self, tensordict: TensorDictBase) -> torch.Tensor:
        """The loss's value estimator's target, ``[*B]``: the target network on the stored next
        state, with Double DQN the online network choosing its action."""
        tensordict = tensordict.clone(False)
        next_value = None
        if self.double_dqn:
            next_td = step_mdp(tensordict, keep_other=False)
            next_td_target = next_td.clone(False)
            with self.value_network_params.data.to_module(self.value_network,
                                                          preserve_module_state=False):
                next_action = self.value_network(next_td).get(self.tensor_keys.action)
            with self.target_value_network_params.to_module(self.value_network,
                                                            preserve_module_state=False):
                next_q = self.value_network(next_td_target).get(self.tensor_keys.action_value)
            next_value = self._taken(next_q, next_action).unsqueeze(-1)
        return self.value_estimator.value_estimate(
            tensordict, target_params=self.target_value_network_params, next_value=next_value,
        ).squeeze(-1)

    def _taken(self, values: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``values`` [*B, n] at ``action`` (one-hot or index), [*B]."""
        if self.action_space == "categorical":
            index = action if action.ndim == values.ndim else action.unsqueeze(-1)
            return values.gather(-1, index.long()).squeeze(-1)
        return (values * action.to(values.dtype)).sum(-1)

    def segment_losses(self, tensordict: TensorDictBase):
        """Yields ``TensorDict(loss=...)`` once per segment, the target computed first. Take an
        optimizer step between two ``next()`` calls: each segment runs on the current weights
        from the previous segment's detached state. The losses' values are kept in
        ``last_segment_losses`` as they are yielded."""
        target = self.value_target(tensordict)
        action = tensordict.get(self.tensor_keys.action)
        self.last_segment_losses = []
        for q in self._segmented.supervision_segments(tensordict):
            loss = distance_loss(self._taken(q, action), target, self.loss_function)
            loss = self._reduce_loss(loss, tensordict=tensordict, weights=None)
            self.last_segment_losses.append(loss.detach())
            yield TensorDict(loss=loss)

    def forward(self, tensordict: TensorDictBase) -> TensorDict:
        """The segments' mean loss on the current weights: deep supervision for a loop that takes
        one optimizer step per minibatch."""
        losses = [out["loss"] for out in self.segment_losses(tensordict)]
        return TensorDict(loss=torch.stack(losses).mean())
