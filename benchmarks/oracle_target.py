"""examples/dqn_hrm.py with the A* oracle's exact Q*(s, a) in place of its bootstrapped TD target,
everything else the same: what the bootstrap costs the RL, or gives it.

    python benchmarks/oracle_target.py --run-dir RUN [EXAMPLE_FLAGS]   # e.g. --env DynamicMaze

The run is the example's own (its collector and epsilon schedule, hindsight copies, replay,
minibatches, optimizer, SoftUpdate, evaluations, checkpoints and metrics.csv under --run-dir); only
its ``DQNLoss`` gets ``hrm_torchrl.oracle.OracleValueEstimator`` as value estimator, so each replayed
(observation, action) is trained toward the oracle's Q* under the doors it shows, at the preset's
gamma, instead of toward r + gamma * max Q_target(s'). The target network is then moved but never
read; rewards, n-step windows and done flags go unread too. Relabeled frames get the value for the
goal drawn in them. Labelling is A* in Python (~0.3 ms per replayed row: ~40 ms per minibatch of
128 on the cpu preset), which the run's frames per second pay. ``summary.json`` gets
``"target": "oracle"``. The HRM's deep supervision (the paper preset) asks the estimator for targets
before the network has run, which it cannot answer; it is refused, as is ``--advantage-learning``,
whose TD target the oracle's replaces.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_speed import load_example  # noqa: E402

from hrm_torchrl.oracle import OracleValueEstimator  # noqa: E402


def oracle_target(make_learner):
    """The example's ``make_learner``, its ``DQNLoss`` given the oracle's value estimator."""

    def make(net, action_spec, cfg: dict):
        if cfg["deep_supervision"]:
            raise SystemExit("error: the oracle's target needs the Q-values DQNLoss computes first; "
                             "--deep-supervision asks for targets before them")
        if cfg["advantage_learning"] > 0:
            raise SystemExit("error: the oracle's target replaces the TD target that "
                             "--advantage-learning changes; give one or the other")
        actor, loss_module, target_updater, optimizer = make_learner(net, action_spec, cfg)
        loss_module.make_value_estimator(OracleValueEstimator(cfg["gamma"]))
        return actor, loss_module, target_updater, optimizer

    return make


def main(argv=None) -> int:
    example = load_example()
    args = example.parse_args(argv)
    if args.run_dir is None:  # the example's default would mix this run with its own runs
        raise SystemExit("error: give --run-dir for the oracle-target run")
    example.make_learner = oracle_target(example.make_learner)
    code = example.main(argv)
    summary = Path(args.run_dir) / "summary.json"
    summary.write_text(json.dumps(json.loads(summary.read_text()) | {"target": "oracle"}, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
