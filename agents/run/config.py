"""Run configuration as data: the schema (``PPOConfig``, ``EvalConfig``, ``RunConfig``) and where a run's config
comes from (YAML files in ``configs/``, then ``key=value`` overrides).

Every key is checked against the dataclasses below (``agents.run.strict`` holds the machinery): an unknown key or a
value of the wrong type raises ``UrgateError`` naming the key and the valid ones. A YAML file is merged over the
dataclass defaults. A run's config is the one named with ``--config``, else its env family's (``configs/tmaze.yaml``
for the default env): naming the default env or leaving it out gives the same run. ``embedded_default()`` is the
default job that ``configs/tmaze.yaml`` states, so the package trains without any file.

``policy_kwargs`` and ``env_kwargs`` are free-form dicts: the policy constructor and the environment family
check their keys when the run is built (``agents.run.factory``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import envs
from policies import CORE_NAMES

from ..errors import UrgateError
from .strict import Strict, did_you_mean, merge, name_hint, parse_override, read_yaml, require, set_dotted

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
LR_SCHEDULES = ("constant", "linear")
VEC_ENVS = ("dummy", "subproc")


@dataclass
class PPOConfig:
    """RecurrentPPO hyperparameters, with sb3-contrib's names and meanings, plus observation/reward normalisation.

    :param n_steps: steps per environment per rollout; also the longest sequence a minibatch holds, so it bounds
        how far back backpropagation through time reaches; ``auto``: the env's episode limit rounded up to a
        multiple of 64 (``agents.ppo.horizon``)
    :param batch_size: minibatch size in steps (RecurrentPPO's meaning: an epoch is ``ceil(n_steps * n_envs /
        batch_size)`` gradient steps); ``auto``: the rollout in 8 minibatches (at most one per env) of whole env
        rollouts
    :param n_epochs: passes over each rollout
    :param sequence_length: steps per training sequence (a divisor of ``n_steps``; null: the longest divisor that
        keeps RecurrentPPO's minibatch count, each env's whole rollout whenever ``n_envs`` sequences suffice, which
        lets backpropagation through time reach ``n_steps`` back); ``FastRecurrentPPO`` only
    :param learning_rate: Adam step size (the start value when ``lr_schedule`` is ``"linear"``)
    :param lr_schedule: ``"constant"`` or ``"linear"`` (decays to 0 at the end of ``total_timesteps``)
    :param gamma: discount factor
    :param gae_lambda: GAE trade-off between bias and variance
    :param clip_range: PPO clipping of the probability ratio
    :param clip_range_vf: clipping of the value change (None: off)
    :param normalize_advantage: normalise advantages per minibatch
    :param ent_coef: entropy bonus weight
    :param vf_coef: value loss weight
    :param max_grad_norm: gradient norm clip
    :param target_kl: stop an update's epochs early above this KL (None: off)
    :param normalize: wrap the training env in SB3's VecNormalize (statistics saved with every checkpoint)
    :param normalize_kwargs: keyword arguments for VecNormalize, e.g. ``{norm_obs: false}``
    """

    n_steps: int | str = 128
    batch_size: int | str = 256
    n_epochs: int = 4
    sequence_length: int | None = None
    learning_rate: float = 1e-3
    lr_schedule: str = "linear"
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    clip_range_vf: float | None = None
    normalize_advantage: bool = True
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = 0.02
    normalize: bool = False
    normalize_kwargs: dict[str, Any] = field(default_factory=dict)

    def _validate(self, prefix: str) -> None:
        for key in ("n_steps", "batch_size"):
            value = getattr(self, key)
            ok = value == "auto" or (isinstance(value, int) and value >= 1)
            require(ok, f"{prefix}{key}", "an integer >= 1 or auto", value)
        require(self.n_epochs >= 1, f"{prefix}n_epochs", "an integer >= 1", self.n_epochs)
        for key in ("learning_rate", "clip_range", "max_grad_norm"):
            require(getattr(self, key) > 0, f"{prefix}{key}", "a number > 0", getattr(self, key))
        for key in ("gamma", "gae_lambda"):
            require(0 <= getattr(self, key) <= 1, f"{prefix}{key}", "a number in [0, 1]", getattr(self, key))
        for key in ("ent_coef", "vf_coef"):
            require(getattr(self, key) >= 0, f"{prefix}{key}", "a number >= 0", getattr(self, key))
        require(
            self.sequence_length is None
            or (self.sequence_length >= 1 and (self.n_steps == "auto" or self.n_steps % self.sequence_length == 0)),
            f"{prefix}sequence_length",
            f"null or a divisor of ppo.n_steps={self.n_steps}",
            self.sequence_length,
        )
        for key in ("clip_range_vf", "target_kl"):
            v = getattr(self, key)
            require(v is None or v > 0, f"{prefix}{key}", "a number > 0 or null", v)
        require(
            self.lr_schedule in LR_SCHEDULES,
            f"{prefix}lr_schedule",
            f"one of {', '.join(LR_SCHEDULES)}",
            self.lr_schedule,
            name_hint(self.lr_schedule, LR_SCHEDULES),
        )


@dataclass
class EvalConfig:
    """Periodic evaluation during training and the final evaluation written to ``summary.json``.

    :param freq: evaluate every this many environment steps (0: only the final evaluation)
    :param n_episodes: episodes per evaluation
    :param deterministic: greedy actions (True) or sampled ones
    :param n_envs: environments stepped side by side during evaluation
    :param stop_success: end the run (as finished) once ``stop_evals`` periodic evaluations in a row reach this
        success rate (null: train for the whole budget); the run's steps are then those of the last evaluation
    :param stop_evals: consecutive evaluations at ``stop_success`` that end the run
    """

    freq: int = 10_000
    n_episodes: int = 50
    deterministic: bool = True
    n_envs: int = 8
    stop_success: float | None = None
    stop_evals: int = 2

    def _validate(self, prefix: str) -> None:
        require(self.freq >= 0, f"{prefix}freq", "an integer >= 0 (0 disables periodic evaluation)", self.freq)
        require(self.n_episodes >= 1, f"{prefix}n_episodes", "an integer >= 1", self.n_episodes)
        require(self.n_envs >= 1, f"{prefix}n_envs", "an integer >= 1", self.n_envs)
        require(
            self.stop_success is None or 0 < self.stop_success <= 1,
            f"{prefix}stop_success",
            "a success rate in (0, 1] or null",
            self.stop_success,
        )
        require(self.stop_evals >= 1, f"{prefix}stop_evals", "an integer >= 1", self.stop_evals)


@dataclass
class CurriculumConfig:
    """A memory curriculum for training (``envs.curriculum.MemoryCurriculum``): episodes start with a short memory
    and it grows as the agent succeeds, up to the task in ``env_kwargs``, which every evaluation measures. Envs whose
    memory can change between episodes only (the T-maze: ``length``; Passive and Active Visual Match:
    ``distractor_steps``).

    :param start: the first memory length (null: no curriculum, train on the task itself)
    :param step: length added at each promotion
    :param success: training success rate that promotes, over ``window`` episodes begun at the current length
    :param window: finished episodes that decide a promotion
    """

    start: int | None = None
    step: int = 10
    success: float = 0.8
    window: int = 256

    def _validate(self, prefix: str) -> None:
        require(self.start is None or self.start >= 0, f"{prefix}start", "an integer >= 0 or null (off)", self.start)
        require(self.step >= 1, f"{prefix}step", "an integer >= 1", self.step)
        require(0 < self.success <= 1, f"{prefix}success", "a success rate in (0, 1]", self.success)
        require(self.window >= 1, f"{prefix}window", "an integer >= 1", self.window)


@dataclass
class RunConfig(Strict):
    """Everything one training run needs; ``config.yaml`` in a run directory is this, resolved.

    :param env_id: environment id (``python run_rl.py list`` shows them)
    :param core: memory core name (``policies.CORE_NAMES``)
    :param seed: seed for the environments, the policy initialisation and PPO's sampling
    :param total_timesteps: environment steps to train for
    :param n_envs: training environments stepped side by side
    :param device: torch device (``cpu``, ``cuda``, ``cuda:1``, ``auto``)
    :param threads: torch intra-op threads (small recurrent models run fastest on one)
    :param vec_env: ``dummy`` (in-process, fastest for cheap envs) or ``subproc`` (one process per env)
    :param ppo: RecurrentPPO hyperparameters
    :param policy_kwargs: keyword arguments for the gated policy (``lstm_hidden_size``, ``core_kwargs``, ...);
        ``core`` is set from the field above
    :param env_kwargs: keyword arguments for ``envs.make_env`` (e.g. ``length`` for the T-maze)
    :param previous_action: feed the policy the one-hot of its previous action beside the observation (zeros at
        each episode's first step), in training, evaluation, ``eval`` and ``probe`` alike; flat vector
        observations and Discrete actions only
    :param curriculum: train on a shorter memory first (``CurriculumConfig``; off by default)
    :param eval: evaluation settings
    :param checkpoint_freq: write ``checkpoints/latest.zip`` every this many steps (0: only at the end or on
        interruption)
    :param keep_checkpoints: also keep the last this many periodic checkpoints as ``checkpoints/step_<N>.zip``
        (0: only ``latest.zip``, which each checkpoint replaces)
    :param gate_diagnostics: log forget-gate histograms every this many updates (0: off)
    """

    env_id: str = "urgate/TMaze-v0"
    core: str = "ur"
    seed: int = 0
    total_timesteps: int = 300_000
    n_envs: int = 8
    device: str = "cpu"
    threads: int = 1
    vec_env: str = "dummy"
    ppo: PPOConfig = field(default_factory=PPOConfig)
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    previous_action: bool = False
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint_freq: int = 50_000
    keep_checkpoints: int = 0
    gate_diagnostics: int = 10

    def _validate(self, prefix: str) -> None:
        require(bool(self.env_id), f"{prefix}env_id", "a non-empty environment id", self.env_id)
        require(
            self.core in CORE_NAMES,
            f"{prefix}core",
            f"one of {', '.join(CORE_NAMES)}",
            self.core,
            name_hint(self.core, CORE_NAMES),
        )
        for key in ("total_timesteps", "n_envs", "threads"):
            require(getattr(self, key) >= 1, f"{prefix}{key}", "an integer >= 1", getattr(self, key))
        require(self.seed >= 0, f"{prefix}seed", "an integer >= 0", self.seed)
        for key in ("checkpoint_freq", "gate_diagnostics", "keep_checkpoints"):
            require(getattr(self, key) >= 0, f"{prefix}{key}", "an integer >= 0 (0 disables it)", getattr(self, key))
        require(
            self.vec_env in VEC_ENVS,
            f"{prefix}vec_env",
            f"one of {', '.join(VEC_ENVS)}",
            self.vec_env,
            name_hint(self.vec_env, VEC_ENVS),
        )
        require(
            _is_device(self.device), f"{prefix}device", "a torch device such as cpu, cuda, cuda:0 or auto", self.device
        )
        require(
            "core" not in self.policy_kwargs,
            f"{prefix}policy_kwargs.core",
            "set through the key 'core'",
            self.policy_kwargs.get("core"),
        )


# -- loading ---------------------------------------------------------------------------------------------------


def embedded_default() -> RunConfig:
    """The default job that ``configs/tmaze.yaml`` states, for an install without the ``configs/`` directory.

    The dataclass defaults hold the PPO settings; the env- and policy-specific dicts stay empty there so that a
    family's config never inherits another family's keywords.
    """
    return RunConfig(policy_kwargs={"lstm_hidden_size": 256}, env_kwargs={"length": 20})


def available_configs() -> list[str]:
    """Names of the YAML files in ``configs/``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) if CONFIG_DIR.is_dir() else []


def config_path(name_or_path: str) -> Path:
    """The file a ``--config`` value names: an existing path, or ``configs/<name>.yaml``."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise UrgateError(f"config file {str(p)!r} not found")
        return p
    candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise UrgateError(
            f"unknown config {name_or_path!r}{did_you_mean(name_or_path, available_configs())}; valid: "
            f"{', '.join(available_configs()) or '(no configs/ directory)'}, or a path to a YAML file"
        )
    return candidate


def load_config(name_or_path: str | None = None, env_id: str | None = None, overrides: list[str] | None = None):
    """Resolve a run configuration: a YAML file, then the env id, then ``key=value`` overrides, validated.

    :param name_or_path: a config name in ``configs/`` or a YAML path; None picks the env family's config
        (``envs.family_of(env_id).config``)
    :param env_id: environment id; overrides the file's ``env_id``; None: the file's, or without a file the
        default env (``RunConfig.env_id``), whose family config is then read as if the id had been given
    :param overrides: ``key=value`` strings with dotted keys (``ppo.n_steps=64``,
        ``policy_kwargs.core_kwargs.t_max=300``); values are parsed as YAML scalars or flow collections
    :return: the validated ``RunConfig``
    """
    if name_or_path is None:
        name_or_path = envs.family_of(env_id or RunConfig.env_id).config
    default_family = envs.family_of(RunConfig.env_id).config
    if name_or_path == default_family and not (CONFIG_DIR / f"{default_family}.yaml").is_file():
        data: dict[str, Any] = embedded_default().to_dict()  # installed without configs/
        source = "embedded default"
    else:
        path = config_path(name_or_path)
        data, source = read_yaml(path), str(path)
    data = merge(RunConfig().to_dict(), data, RunConfig, "", source)
    if env_id is not None:
        data["env_id"] = env_id
    for item in overrides or []:
        key, value = parse_override(item)
        set_dotted(RunConfig, data, key, value)
    cfg = RunConfig.from_dict(data, source="--set" if overrides else source)
    envs.family_of(cfg.env_id)  # an unknown id fails here, before anything is built or written
    return cfg


def _is_device(name: str) -> bool:
    if name == "auto":
        return True
    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        return False
    return True
