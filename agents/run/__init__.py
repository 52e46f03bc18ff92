"""One training run as an application: ``config`` (with ``strict`` beneath it) is read, ``factory`` builds the
envs and the model, ``train`` runs it with ``callbacks`` writing ``checkpoints``, evaluations and gate diagnostics
(``gate_stats``) into the run directory (``rundir``); ``loading`` and ``evaluate`` read saved models back.

Nothing is imported here, so ``import agents.run.rundir`` stays light."""
