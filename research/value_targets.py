"""Value targets for DQNLoss other than TD(0), from the research log (research/README.md): the A*
oracle's exact Q* (``OracleValueEstimator``) and advantage learning (``AdvantageLearningEstimator``).
Each is a TorchRL value estimator: ``loss.make_value_estimator(estimator)``, or
``hrm_torchrl.dqn.make_learner(..., value_estimator=lambda actor: estimator)``.

Advantage learning (Bellemare et al. 2016, "Increasing the action gap"): a TD target that
widens the gap between the best action's value and the others'.

The plain TD target r + gamma max Q(s') has Q* as its fixed point; advantage learning subtracts
``alpha`` times the target network's own gap at the replayed state:

    y = r + gamma max_a' Q_target(s', a') - alpha * (max_b Q_target(s, b) - Q_target(s, a))

Its fixed point keeps the best action's value, V*(s), and stretches every other action's gap to
V* by 1 / (1 - alpha) (10x for the usual alpha 0.9), so the greedy action is the same and the
order of the actions survives larger errors.
"""

from __future__ import annotations

import numpy as np
import torch
from tensordict.nn import TensorDictModuleBase
from torchrl.objectives.utils import hold_out_net
from torchrl.objectives.value import TD0Estimator, ValueEstimatorBase

from hrm_torchrl.oracle import optimal_values


def taken_action_value(values: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """``values`` [*B, n] at the taken ``action`` (one-hot [*B, n] or an index [*B] / [*B, 1]),
    [*B, 1]; a gather, so that NaN in the other actions' values stays out."""
    one_hot = action.shape[-1] == values.shape[-1] and action.ndim == values.ndim
    index = action.long().argmax(-1) if one_hot else action.reshape(values.shape[:-1]).long()
    return values.gather(-1, index.unsqueeze(-1))


class AdvantageLearningEstimator(TD0Estimator):
    """TorchRL's TD(0) target minus ``alpha`` times the action gap of the replayed (s, a).

    ``DQNLoss.make_value_estimator(AdvantageLearningEstimator(...))`` swaps it in for the loss's
    own TD(0) estimator. The TD part is ``TD0Estimator``'s, so n-step data (``steps_to_next_obs``)
    and Double DQN (DQNLoss passes its ``next_value``) work as they do there. The gap is computed
    with the target parameters that DQNLoss passes (the online ones when it has no target network),
    on the replayed state as stored, carried recurrent state included; it carries no gradient.

    Args:
        gamma: the discount.
        value_network: the Q-value actor that DQNLoss trains (a ``QValueActor``: it writes
            ``action_value`` for every action and ``chosen_action_value``).
        alpha: the share of the gap subtracted, in [0, 1); 0 is TD(0).

    Keyword Args:
        action_key, action_value_key, value_key: the taken action (one-hot [*B, n] or an index),
            the network's Q-values of every action ([*B, n]) and of its greedy one (the TD part's
            next-state value; DQNLoss's ``chosen_action_value``).
        **kwargs: passed to ``TD0Estimator``.

    Examples:
        >>> import torch
        >>> from torchrl.modules import QValueActor
        >>> from torchrl.objectives import DQNLoss
        >>> from hrm_torchrl import make_env
        >>> from research.value_targets import AdvantageLearningEstimator
        >>> from hrm_torchrl.baselines import MLPQValueNet
        >>> env = make_env("DynamicMaze", num_envs=8, seed=0)
        >>> actor = QValueActor(MLPQValueNet(4), spec=env.action_spec_unbatched)
        >>> loss = DQNLoss(actor, loss_function="l2", delay_value=True)
        >>> loss = loss.make_value_estimator(
        ...     AdvantageLearningEstimator(gamma=0.95, value_network=actor, alpha=0.9))
        >>> data = env.rollout(5, actor, break_when_any_done=False)  # [8 mazes, 5 steps]
        >>> loss(data.reshape(-1))["loss"].backward()
    """

    def __init__(self, *, gamma: float, value_network: TensorDictModuleBase, alpha: float = 0.9,
                 action_key="action", action_value_key="action_value",
                 value_key="chosen_action_value", **kwargs):
        if not 0 <= alpha < 1:
            raise ValueError(f"alpha must lie in [0, 1), got {alpha}")
        if value_network is None:
            raise ValueError("AdvantageLearningEstimator needs the value_network (the Q-value "
                             "actor) to compute the action gap of the replayed states")
        super().__init__(gamma=gamma, value_network=value_network, **kwargs)
        self.set_keys(value=value_key)
        self.alpha = alpha
        self.action_key, self.action_value_key = action_key, action_value_key

    def action_gap(self, tensordict, target_params=None) -> torch.Tensor:
        """max_b Q(s, b) - Q(s, a) of each row under ``target_params``, [*B, 1], no gradient."""
        state = tensordict.select(*self.value_network.in_keys, strict=False).copy()
        with torch.no_grad(), (
            hold_out_net(self.value_network) if target_params is None
            else target_params.to_module(self.value_network, preserve_module_state=False)
        ):
            q = self.value_network(state).get(self.action_value_key)
        taken = taken_action_value(q, tensordict.get(self.action_key))
        return q.max(-1, keepdim=True).values - taken

    def value_estimate(self, tensordict, target_params=None, next_value=None, **kwargs):
        """The TD(0) target minus ``alpha`` times the action gap, [*B, 1]."""
        target = super().value_estimate(tensordict, target_params=target_params,
                                        next_value=next_value, **kwargs)
        if self.alpha == 0:
            return target
        gap = self.action_gap(tensordict, target_params)
        return target - self.alpha * gap.to(target.dtype).view_as(target)


class OracleValueEstimator(ValueEstimatorBase):
    """The oracle's Q*(s, a) as the target of a TorchRL value loss, in place of a bootstrapped
    one: ``DQNLoss.make_value_estimator(OracleValueEstimator(gamma))`` trains the Q-network toward
    ``optimal_values`` of each replayed observation at its taken action (under the doors it shows),
    with no target network and no reward read. It says what an RL pipeline loses to its
    bootstrapped targets: the same data, collector, replay and optimizer, an exact target.

    Rows without a path (closed doors block every one) have no exact value; their target is the
    network's own prediction (the ``action_value`` that ``DQNLoss`` computes before it asks for the
    target), so that they add no loss. Labelling is A* in Python, ~0.3 ms per row.

    Args:
        gamma: the discount of the values, in (0, 1].

    Keyword Args:
        observation_key, action_key, action_value_key: the token observation ([*B, 121]), the
            taken action (one-hot [*B, 4] or an index) and the network's Q-values ([*B, 4]).

    Examples:
        >>> import torch
        >>> from torchrl.modules import QValueActor
        >>> from torchrl.objectives import DQNLoss
        >>> from hrm_torchrl import make_env
        >>> from hrm_torchrl.baselines import MLPQValueNet
        >>> from research.value_targets import OracleValueEstimator
        >>> env = make_env("DynamicMaze", num_envs=8, seed=0)
        >>> actor = QValueActor(MLPQValueNet(4), spec=env.action_spec_unbatched)
        >>> loss = DQNLoss(actor, loss_function="l2", delay_value=False)  # no target network
        >>> loss = loss.make_value_estimator(OracleValueEstimator(gamma=0.95))
        >>> data = env.rollout(5, actor, break_when_any_done=False)  # [8 mazes, 5 steps]
        >>> loss(data.reshape(-1))["loss"].backward()
    """

    def __init__(self, gamma: float, *, observation_key="observation", action_key="action",
                 action_value_key="action_value"):
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must lie in (0, 1], got {gamma}")
        super().__init__(value_network=None)
        self.gamma = gamma
        self.observation_key, self.action_key = observation_key, action_key
        self.action_value_key = action_value_key

    def value_estimate(self, tensordict, target_params=None, next_value=None, **kwargs):
        """Q*(observation, action), [*B, 1]; the prediction itself where no path exists."""
        prediction = tensordict.get(self.action_value_key, None)
        if prediction is None:
            raise KeyError(f"OracleValueEstimator needs the network's {self.action_value_key!r} "
                           "for the rows without a path; run the network on the tensordict first "
                           "(DQNLoss.forward does)")
        observation = tensordict.get(self.observation_key)
        values = torch.from_numpy(np.stack([
            optimal_values(row, self.gamma)[0]
            for row in observation.reshape(-1, observation.shape[-1]).cpu().numpy()]))
        values = values.reshape(prediction.shape).to(prediction.device)
        values = torch.where(values.isnan(), prediction.detach().to(values.dtype), values)
        return taken_action_value(values, tensordict.get(self.action_key)).to(prediction.dtype)

    def forward(self, tensordict, *, params=None, target_params=None):
        """Writes ``value_estimate`` to the ``value_target`` key, as TorchRL's estimators do."""
        tensordict.set(self.tensor_keys.value_target, self.value_estimate(tensordict))
        return tensordict
