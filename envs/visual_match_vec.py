"""``VisualMatchVecEnv``: every copy of Passive or Active Visual Match stepped at once as numpy arrays, an SB3 VecEnv.

Kept apart from ``envs.visual_match`` because it needs SB3 (and so torch), which env worker processes never import;
it steps through ``envs.visual_match.Copies``, the one definition of the task's rules, which ``VisualMatchEnv``
uses with one copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.utils import seeding
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from .array_vec import ArrayVecEnv
from .cue import CUE_INFO
from .errors import EnvConfigError
from .visual_match import ACTIVE_ID, Copies, VisualMatchEnv

# Per-copy state that get_attr answers per copy (anything else comes from the task's VisualMatchEnv).
_PER_COPY = ("phase", "phase_t", "cue_colour", "dir")


class VisualMatchVecEnv(ArrayVecEnv):
    """``n_envs`` copies of Visual Match stepped together as numpy arrays: an SB3 VecEnv with DummyVecEnv's semantics.

    Auto-reset as DummyVecEnv: a finished copy's ``info`` holds ``terminal_observation``, ``is_success`` and
    ``choice`` (as ``VisualMatchEnv``'s last step), every step's info has ``TimeLimit.truncated`` (always False:
    episodes end by the choice or its timeout), and the returned observation is the next episode's first, whose
    reset info is in ``reset_infos[i]``. ``info["memory_cue"]`` (``envs.cue``) is set as ``VisualMatchEnv`` sets
    it. Copy ``i``
    draws its episodes from its own generator, seeded by ``seed()`` + ``i`` at the next ``reset()`` as gymnasium
    seeds ``VisualMatchEnv``, so the episodes are the ones DummyVecEnv over ``VisualMatchEnv``s plays. Episode
    statistics (``info["episode"]``) come from wrapping it in SB3's ``VecMonitor``, as ``envs.make_vec_env`` does.
    It does not render: ``VisualMatchEnv(render_mode="rgb_array")`` does.

    :param n_envs: number of copies
    :param task_kwargs: ``VisualMatchEnv``'s keywords (``active``, ``distractor_steps``, ...)
    """

    single_env = "VisualMatchEnv"

    def __init__(self, n_envs: int, **task_kwargs: Any) -> None:
        self.task = VisualMatchEnv(**task_kwargs)  # checks the keywords and holds the settings
        self._cue, self._distractor = self.task.phase_steps[:2]  # the task's, whatever a curriculum sets
        super().__init__(n_envs, self.task.observation_space, self.task.action_space)
        self.copies = Copies(self.task, n_envs)
        self._actions = np.zeros(n_envs, dtype=np.int64)

    def reset(self) -> dict[str, np.ndarray]:
        for i, seed in enumerate(self._seeds):
            if seed is not None or self.copies.rngs[i] is None:
                self.copies.rngs[i], _ = seeding.np_random(seed)
            self.copies.new_episode(i)
        self._reset_seeds()
        self._reset_options()
        image = self.copies.view()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(self.copies.cue_shown(image)).tolist():
            self.reset_infos[i][CUE_INFO] = int(self.copies.cue_colour[i])
        return {"image": image, "direction": self.copies.dir.copy()}

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs)

    def step_wait(self) -> VecEnvStepReturn:
        reward, terminated, success, choice = self.copies.step(self._actions)
        finished = np.flatnonzero(terminated)
        if finished.size:  # the first observations of the next episodes, the last of the finished ones
            last_dir = self.copies.dir[finished]
            image, last_views = self.copies.restart(finished)
        else:
            image = self.copies.view()
        obs = {"image": image, "direction": self.copies.dir.copy()}
        infos = [{"TimeLimit.truncated": False} for _ in range(self.num_envs)]
        for j, i in enumerate(finished.tolist()):
            infos[i]["is_success"] = bool(success[i])
            infos[i]["choice"] = int(choice[i]) if choice[i] >= 0 else None
            infos[i]["terminal_observation"] = {"image": last_views[j], "direction": int(last_dir[j])}
            self.reset_infos[i] = {}
        # The cue's class where the returned view shows it: in the step's info, or the reset's for a new episode.
        for i in np.flatnonzero(self.copies.cue_shown(image)).tolist():
            (self.reset_infos[i] if terminated[i] else infos[i])[CUE_INFO] = int(self.copies.cue_colour[i])
        return obs, reward, terminated.copy(), infos

    @property
    def memory_length(self) -> int:
        """Steps before the choice room in the episodes that begin from now on: their cue phase plus their
        distractor phase (``set_memory_length``)."""
        cue, distractor, _ = self.task.phase_steps
        return cue + distractor

    @property
    def memory_limit(self) -> int:
        """The task's cue plus distractor phases (as the env was built): the longest ``set_memory_length`` accepts."""
        return self._cue + self._distractor

    def set_memory_length(self, steps: int) -> None:
        """Make the episodes that begin from now on reach the choice room after ``steps`` steps (1 to
        ``memory_limit``), for a training curriculum (``envs.curriculum``): the cue phase takes them first, up to the
        task's ``cue_steps``, the distractor phase the rest. Below ``cue_steps`` the cue phase is shortened and there
        is no distractor (in Active Visual Match, the cue is found sooner or not at all); from ``cue_steps`` on the
        delay grows. A phase's length is read when the phase begins, so episodes never outlast the declared
        ``max_steps``."""
        limit = self.memory_limit
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= limit:
            raise EnvConfigError(
                f"Visual Match memory length must be an integer 1..{limit} (cue_steps + distractor_steps: the steps "
                f"before the choice room), got {steps!r}"
            )
        cue = min(int(steps), self._cue)
        self.task.phase_steps = (cue, int(steps) - cue, self.task.phase_steps[2])

    def get_state(self) -> dict[str, Any]:
        """A picklable snapshot of what decides what the copies do next (generators, pending seeds, episodes, the
        phase lengths a curriculum set)."""
        return {
            "copies": self.copies.get_state(),
            "seeds": list(self._seeds),
            "steps_before_choice": self.memory_length,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a ``get_state`` snapshot taken from a VisualMatchVecEnv with the same id, keywords and
        ``n_envs``; the next step continues as the original's would."""
        self.copies.set_state(state["copies"])
        self._seeds = list(state["seeds"])
        if "steps_before_choice" in state:
            self.set_memory_length(state["steps_before_choice"])
        else:  # a snapshot of an earlier version, whose memory length was the distractor phase alone
            self.set_memory_length(self._cue + state.get("memory_length", self._distractor))

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Per-copy state (``phase``, ``phase_t``, ``cue_colour``, ``dir``) per copy; anything else from the
        task's ``VisualMatchEnv`` (its settings, ``max_steps``)."""
        idx = self._get_indices(indices)
        if attr_name in _PER_COPY:
            return [getattr(self.copies, attr_name)[i].item() for i in idx]
        return [getattr(self.task, attr_name) for _ in idx]


def make_visual_match_vec(env_id: str, n_envs: int, **env_kwargs) -> VisualMatchVecEnv:
    """Vectorised family builder for ``urgate/PassiveVisualMatch-v0`` and ``urgate/ActiveVisualMatch-v0`` (keywords
    as ``envs.visual_match.make_visual_match``)."""
    return VisualMatchVecEnv(n_envs, active=env_id == ACTIVE_ID, **env_kwargs)
