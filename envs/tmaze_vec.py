"""``TMazeVecEnv``: every copy of the passive T-maze stepped at once as numpy arrays, an SB3 VecEnv.

Kept apart from ``envs.tmaze`` because it needs SB3 (and so torch), which env worker processes never import; it
steps through ``envs.tmaze``'s one definition of the dynamics.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from gymnasium.utils import seeding
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from .array_vec import ArrayVecEnv
from .errors import EnvConfigError
from .tmaze import TMazeEnv, _advance, _observations, cue_info, episode_limit


class TMazeVecEnv(ArrayVecEnv):
    """``n_envs`` passive T-mazes stepped together as numpy arrays: an SB3 VecEnv with DummyVecEnv's semantics.

    Auto-reset as DummyVecEnv: a finished copy's ``info`` holds ``terminal_observation``, ``is_success`` and
    ``TimeLimit.truncated`` (every step's info has the latter) and the returned observation is the next episode's
    first. Copy ``i`` draws its goals from its own generator, seeded by ``seed()`` + ``i`` at the next ``reset()``
    as gymnasium seeds ``TMazeEnv``, so the episodes are the ones DummyVecEnv over ``TMazeEnv``s plays. Episode
    statistics (``info["episode"]``) come from wrapping it in SB3's ``VecMonitor``, as ``envs.make_vec_env`` does.

    :param n_envs: number of copies
    :param maze_kwargs: ``TMazeEnv``'s keywords (``length``, ``time_factor``, ``idle_penalty``)
    """

    single_env = "TMazeEnv"

    def __init__(self, n_envs: int, **maze_kwargs: Any) -> None:
        self.maze = TMazeEnv(**maze_kwargs)  # checks the keywords and holds the constants
        super().__init__(n_envs, self.maze.observation_space, self.maze.action_space)
        self.idle_penalty = self.maze.idle_penalty
        # Each copy's corridor and time limit, set when its episode begins (``set_memory_length``: shorter ones for
        # a training curriculum; the maze's own otherwise).
        self._next_length = self.maze.length
        self.length = np.full(n_envs, self.maze.length, dtype=np.int64)
        self.max_steps = np.full(n_envs, self.maze.max_steps, dtype=np.int64)
        self.goal_up = np.ones(n_envs, dtype=bool)
        self.position = np.zeros(n_envs, dtype=np.int64)
        self.steps = np.zeros(n_envs, dtype=np.int64)
        self._rngs: list[np.random.Generator | None] = [None] * n_envs
        self._actions = np.zeros(n_envs, dtype=np.int64)

    def _new_goals(self, idx) -> np.ndarray:
        """Draw the goal of a new episode for each copy in ``idx``, as ``TMazeEnv.reset`` does."""
        for i in idx:
            if self._rngs[i] is None:
                self._rngs[i], _ = seeding.np_random()
            self.goal_up[i] = bool(self._rngs[i].integers(2))
        self.position[idx] = 0
        self.steps[idx] = 0
        self.length[idx] = self._next_length
        self.max_steps[idx] = episode_limit(self._next_length, self.maze.time_factor)
        return np.where(self.goal_up[idx], 1.0, -1.0)

    def reset(self) -> np.ndarray:
        for i, seed in enumerate(self._seeds):
            if seed is not None:
                self._rngs[i], _ = seeding.np_random(seed)
        every = np.arange(self.num_envs)
        obs = _observations(self._new_goals(every), self.position, self.length)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [cue_info(g) for g in self.goal_up.tolist()]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs)

    def step_wait(self) -> VecEnvStepReturn:
        self.position, self.steps, reward, terminated, truncated, success = _advance(
            self.length, self.max_steps, self.idle_penalty, self.position, self.steps, self.goal_up, self._actions
        )
        obs = _observations(np.zeros(self.num_envs), self.position, self.length)
        dones = terminated | truncated
        infos = [{"TimeLimit.truncated": t} for t in truncated.tolist()]
        finished = np.flatnonzero(dones)
        if finished.size:
            for i in finished.tolist():
                infos[i]["is_success"] = bool(success[i])
                infos[i]["terminal_observation"] = obs[i].copy()
            obs[finished, 0] = self._new_goals(finished)
            obs[finished, 1] = 0.0
            for i in finished.tolist():
                self.reset_infos[i] = cue_info(bool(self.goal_up[i]))
        return obs, reward, dones, infos

    @property
    def memory_length(self) -> int:
        """The corridor of the episodes that begin from now on (``set_memory_length``)."""
        return self._next_length

    @property
    def memory_limit(self) -> int:
        """The corridor the env was built with: the longest ``set_memory_length`` accepts."""
        return self.maze.length

    def set_memory_length(self, steps: int) -> None:
        """Give the episodes that begin from now on a corridor of ``steps`` (2 to ``memory_limit``) and the time
        limit that goes with it, for a training curriculum (``envs.curriculum``); episodes in progress keep theirs."""
        limit = self.memory_limit
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 2 <= steps <= limit:
            raise EnvConfigError(f"T-maze memory length must be an integer 2..{limit} (its length), got {steps!r}")
        self._next_length = int(steps)

    def get_state(self) -> dict[str, Any]:
        """Everything that decides what the copies do next (``envs.vec_state``'s protocol): each copy's generator,
        the seeds pending for the next reset, and the episodes in progress (corridors included)."""
        return {
            "rngs": copy.deepcopy(self._rngs),
            "seeds": list(self._seeds),
            "goal_up": self.goal_up.copy(),
            "position": self.position.copy(),
            "steps": self.steps.copy(),
            "length": self.length.copy(),
            "max_steps": self.max_steps.copy(),
            "next_length": self._next_length,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a ``get_state`` snapshot of a TMazeVecEnv with the same keywords and number of copies."""
        if len(state["rngs"]) != self.num_envs:
            raise ValueError(f"a snapshot of {len(state['rngs'])} copies cannot be restored into {self.num_envs}")
        self._rngs = copy.deepcopy(state["rngs"])
        self._seeds = list(state["seeds"])
        self.goal_up, self.position, self.steps = (state[k].copy() for k in ("goal_up", "position", "steps"))
        if "length" in state:  # (a snapshot of an older version has the maze's own corridor everywhere)
            self.length, self.max_steps = state["length"].copy(), state["max_steps"].copy()
            self._next_length = int(state["next_length"])

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Per-copy state (``position``, ``steps``, ``goal_up``) per copy; anything else from ``TMazeEnv``."""
        idx = self._get_indices(indices)
        if attr_name in ("position", "steps", "goal_up"):
            return [getattr(self, attr_name)[i].item() for i in idx]
        # (``length`` and ``max_steps`` answer the maze's own, the longest: ``ppo.n_steps: auto`` sizes rollouts by it)
        return [getattr(self.maze, attr_name) for _ in idx]


def make_tmaze_vec(env_id: str, n_envs: int, **env_kwargs) -> TMazeVecEnv:
    """Vectorised family builder for ``urgate/TMaze-v0`` (keywords as ``envs.tmaze.make_tmaze``)."""
    return TMazeVecEnv(n_envs, **env_kwargs)
