"""The agent: PPO for recurrent policies, and the applications built on it, in three rooms.

- ``agents.ppo``: the algorithm (``FastRecurrentPPO``, its sequence rollout buffers, rollout sizes from the
  episode length);
- ``agents.run``: one training run as an application (config, the objects built from it, the run directory,
  training, callbacks, checkpoints, gate diagnostics, evaluation);
- ``agents.study``: the analysis of many runs (experiment grids and their backends, results tables, figures).

``errors`` (the user-facing error type) and ``stats`` (IQM, bootstrap confidence intervals) are shared by the
rooms. Each room imports only from the ones listed before it.
"""

from .ppo import FastRecurrentPPO

__all__ = ["FastRecurrentPPO"]
