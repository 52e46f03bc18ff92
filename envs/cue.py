"""The cue of a memory task, said per step, so that a probe can ask how long an agent's state holds it.

A task of this package that asks the agent to remember one thing puts ``info[CUE_INFO] = k`` (an ``int`` class:
what must be remembered) into the info of every step whose returned observation shows it, reset's info included
(an SB3 VecEnv keeps that in ``reset_infos[i]``, also after an automatic reset). Steps without the key do not show
the cue, so "steps since the cue" is the number of steps since the last info that had it. The classes per task
are in each task's docstring. Nothing here knows a policy: ``agents`` reads the key.
"""

CUE_INFO = "memory_cue"
