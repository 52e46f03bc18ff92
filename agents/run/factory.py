"""The one place where names become objects: env family strings -> policy and extractor classes, config -> envs
and model.

Agents never special-case an environment id: the env family says which policy class and features extractor suit
its observations (by name), and this module resolves those names in ``policies``. Loading saved models is
``agents.run.loading``.
"""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path
from typing import Any

import torch as th
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize

import envs
import policies
from envs.curriculum import MemoryCurriculum
from envs.previous_action import PreviousActionVecEnv
from policies.extractors import EXTRACTORS

from ..errors import ConfigValueError, UrgateError, one_line
from ..ppo import horizon
from ..ppo.fast_ppo import FastRecurrentPPO
from .config import RunConfig
from .loading import RUN_INFO_ATTR, load_vecnormalize
from .strict import did_you_mean, type_name


def check_device(device: str) -> None:
    """Fail with one line when ``device`` names hardware this machine lacks: SB3 would silently run on the CPU
    while the run's config records the device asked for.

    :param device: a torch device string (``cpu``, ``cuda``, ``cuda:1``, ``mps``, ``auto``)
    """
    if device == "auto":
        return
    try:
        dev = th.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigValueError("device", device, "a torch device such as cpu, cuda, cuda:0 or auto") from None
    if dev.type == "cuda":
        count = th.cuda.device_count() if th.cuda.is_available() else 0
        if count == 0:
            raise ConfigValueError(
                "device", device, f"cpu or auto on this machine (torch {th.__version__} sees no CUDA device)"
            )
        if dev.index is not None and dev.index >= count:
            raise ConfigValueError("device", device, f"cpu, auto or one of cuda:0 to cuda:{count - 1}")
    elif dev.type == "mps" and not th.backends.mps.is_available():
        raise ConfigValueError("device", device, "cpu or auto on this machine (torch sees no MPS device)")


def set_threads(threads: int) -> None:
    """torch intra-op threads for this process (small recurrent models run fastest on one, see NOTES)."""
    th.set_num_threads(threads)


# -- environments ----------------------------------------------------------------------------------------------


def make_vec_env(
    env_id: str,
    env_kwargs: dict[str, Any],
    n_envs: int,
    seed: int | None,
    *,
    subprocess: bool = False,
    previous_action: bool = False,
) -> VecEnv:
    """``envs.make_vec_env`` (SB3's Monitor per env, or a VecMonitor around subprocess envs, so episode returns reach
    the logger) with a kwargs dict; the one place a run's envs are built (training, evaluation, ``eval``, ``probe``).

    :param previous_action: append the one-hot of each env's previous action to its observation
        (``envs.previous_action.PreviousActionVecEnv``, inside any VecNormalize)
    """
    venv = envs.make_vec_env(env_id, n_envs=n_envs, seed=seed, subprocess=subprocess, **env_kwargs)
    return _with_previous_action(venv) if previous_action else venv


def make_render_env(
    env_id: str, env_kwargs: dict[str, Any], seed: int | None, *, previous_action: bool = False
) -> VecEnv:
    """One env in ``rgb_array`` render mode, as a VecEnv, for videos."""
    venv = DummyVecEnv([lambda: envs.make_env(env_id, seed=seed, render_mode="rgb_array", **env_kwargs)])
    return _with_previous_action(venv) if previous_action else venv


def _with_previous_action(venv: VecEnv) -> VecEnv:
    try:
        return PreviousActionVecEnv(venv)
    except envs.EnvConfigError:
        venv.close()
        raise


def make_training_env(cfg: RunConfig, normalize_stats: Path | None = None) -> VecEnv:
    """The training VecEnv of a run: ``cfg.n_envs`` copies, seeded, under the memory curriculum and VecNormalize
    when asked.

    :param cfg: run configuration
    :param normalize_stats: a saved VecNormalize pickle to continue from (resume)
    """
    venv = make_vec_env(
        cfg.env_id,
        cfg.env_kwargs,
        cfg.n_envs,
        cfg.seed,
        subprocess=cfg.vec_env == "subproc",
        previous_action=cfg.previous_action,
    )
    if cfg.curriculum.start is not None:
        c = cfg.curriculum
        try:
            venv = MemoryCurriculum(venv, c.start, c.step, c.success, c.window)
        except envs.EnvConfigError:
            venv.close()
            raise
    if not cfg.ppo.normalize:
        return venv
    if normalize_stats is not None:
        return load_vecnormalize(normalize_stats, venv, training=True)
    try:
        return VecNormalize(venv, gamma=cfg.ppo.gamma, **cfg.ppo.normalize_kwargs)
    except TypeError as exc:
        raise UrgateError(f"config key 'ppo.normalize_kwargs': {exc}") from None


# -- policy and model ------------------------------------------------------------------------------------------


def policy_class(name: str) -> type:
    """A policy class of ``policies`` by name (what an env family suggests)."""
    cls = getattr(policies, name, None)
    if not (isinstance(cls, type) and hasattr(cls, "predict")):
        raise UrgateError(f"unknown policy class {name!r} (not in the policies package)")
    return cls


def _activation(name: Any) -> type:
    if isinstance(name, type):
        return name
    table = {n.lower(): getattr(th.nn, n) for n in ("ReLU", "Tanh", "ELU", "GELU", "SiLU", "LeakyReLU", "Sigmoid")}
    if not isinstance(name, str) or name.lower() not in table:
        raise UrgateError(
            f"config key 'policy_kwargs.activation_fn' must name an activation, got {name!r}; valid: "
            f"{', '.join(sorted(table))}"
        )
    return table[name.lower()]


def _extractor(name: Any) -> type:
    if isinstance(name, type):
        return name
    if name not in EXTRACTORS:
        raise UrgateError(
            f"config key 'policy_kwargs.features_extractor_class' must name an extractor, got {name!r}; valid: "
            f"{', '.join(EXTRACTORS)}"
        )
    return EXTRACTORS[name]


def accepted_policy_kwargs(cls: type) -> list[str]:
    """Keyword arguments a policy class accepts (its own and every base class's, up the MRO)."""
    names: list[str] = []
    skip = {"self", "observation_space", "action_space", "lr_schedule", "use_sde"}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        for p in inspect.signature(klass.__init__).parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in skip or p.name in names:
                continue
            names.append(p.name)
    return names


POSITIVE_POLICY_KWARGS = ("lstm_hidden_size", "n_lstm_layers")  # sizes: torch fails deep inside on 0 or less


def policy_kwarg_types(cls: type) -> dict[str, Any]:
    """The annotated type of each keyword a policy class accepts (the first class up the MRO that annotates it)."""
    hints: dict[str, Any] = {}
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            for name, hint in typing.get_type_hints(klass.__init__).items():
                hints.setdefault(name, hint)
    return hints


def check_policy_kwargs(cls: type, policy_kwargs: dict[str, Any]) -> None:
    """Fail with one line when a ``policy_kwargs`` value has the wrong type or is out of range, as ``ppo.*``
    values are checked, instead of a torch error from deep inside the constructor.

    Classes (``activation_fn``, ``features_extractor_class``, ``optimizer_class``) may be given by name; those
    names are resolved and checked where they are turned into classes.

    :param cls: the policy class
    :param policy_kwargs: the config's ``policy_kwargs``
    """
    hints = policy_kwarg_types(cls)
    for key, value in policy_kwargs.items():
        hint = hints.get(key)
        if hint is None or _is_class_hint(hint):
            continue
        what = type_name(hint)
        if key == "net_arch":
            what = "a list of layer sizes >= 1 ([64, 64]), a mapping of pi and vf to such lists, or null"
        if key in POSITIVE_POLICY_KWARGS:
            what += " >= 1"
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        else:
            ok = _has_type(value, hint) and (key != "net_arch" or _positive_sizes(value))
        if not ok:
            raise ConfigValueError(f"policy_kwargs.{key}", value, what)


def _is_class_hint(hint: Any) -> bool:
    return typing.get_origin(hint) is type


def _has_type(value: Any, hint: Any) -> bool:
    """Whether ``value`` (parsed YAML) fits the annotation ``hint`` (unions, None, int, float, bool, str, list[X],
    dict[K, V], Any)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None) or hint is None:
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, a) for a in args)
    if origin is list or hint is list:
        return (
            isinstance(value, list) and all(_has_type(v, args[0]) for v in value) if args else isinstance(value, list)
        )
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            return False
        return not args or all(_has_type(k, args[0]) and _has_type(v, args[1]) for k, v in value.items())
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # an annotation this check does not know: the constructor decides


def _positive_sizes(net_arch: Any) -> bool:
    layers = net_arch.values() if isinstance(net_arch, dict) else [net_arch or []]
    return all(size >= 1 for sizes in layers for size in sizes)


def resolve_policy(cfg: RunConfig) -> tuple[type, dict[str, Any]]:
    """The policy class and constructor keywords for a run: the family's suggestions under the config's values.

    :return: ``(policy_class, policy_kwargs)`` with class names (extractor, activation) resolved to classes
    """
    family = envs.family_of(cfg.env_id)
    cls = policy_class(family.policy)
    kwargs: dict[str, Any] = {}
    if family.features_extractor is not None:
        kwargs["features_extractor_class"] = family.features_extractor
        kwargs["features_extractor_kwargs"] = dict(family.features_extractor_kwargs)
    for key, value in cfg.policy_kwargs.items():
        if key == "features_extractor_kwargs" and isinstance(value, dict):
            value = {**kwargs.get("features_extractor_kwargs", {}), **value}
        kwargs[key] = value
    valid = accepted_policy_kwargs(cls)
    for key in kwargs:
        if key not in valid:
            raise UrgateError(
                f"unknown config key 'policy_kwargs.{key}' for {cls.__name__}{did_you_mean(key, valid)}; valid: "
                f"{', '.join(valid)}"
            )
    check_policy_kwargs(cls, cfg.policy_kwargs)
    if "activation_fn" in kwargs:
        kwargs["activation_fn"] = _activation(kwargs["activation_fn"])
    if "features_extractor_class" in kwargs:
        kwargs["features_extractor_class"] = _extractor(kwargs["features_extractor_class"])
        # The package's extractors read raw observations (a symbolic grid holds small integer indices, which SB3's
        # division by 255 would crush); one that wants SB3's scaling says so with a class attribute.
        kwargs.setdefault("normalize_images", getattr(kwargs["features_extractor_class"], "normalize_images", False))
    kwargs["core"] = cfg.core
    return cls, kwargs


def learning_rate(cfg: RunConfig):
    """A float, or SB3's picklable ``LinearSchedule`` from the start value to 0 over the run."""
    if cfg.ppo.lr_schedule == "linear":
        return LinearSchedule(cfg.ppo.learning_rate, 0.0, 1.0)
    return cfg.ppo.learning_rate


def run_info(cfg: RunConfig) -> dict[str, Any]:
    """What a model zip records about its run (env, its wrapping and core), so ``eval model.zip`` needs no other
    file."""
    return {
        "env_id": cfg.env_id,
        "env_kwargs": dict(cfg.env_kwargs),
        "previous_action": cfg.previous_action,
        "core": cfg.core,
        "seed": cfg.seed,
    }


def build_model(cfg: RunConfig, env: VecEnv):
    """A fresh ``FastRecurrentPPO`` (same constructor and zip format as sb3-contrib's ``RecurrentPPO``) for ``cfg``
    on ``env`` (nothing is written to disk).

    :param cfg: run configuration
    :param env: the training VecEnv (``make_training_env``)
    """
    cls, kwargs = resolve_policy(cfg)
    p = cfg.ppo
    n_steps, batch_size = horizon.resolve(p.n_steps, p.batch_size, cfg.n_envs, env, cfg.env_id)
    extra = {} if p.sequence_length is None else {"sequence_length": p.sequence_length}
    try:
        model = FastRecurrentPPO(
            cls,
            env,
            learning_rate=learning_rate(cfg),
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=p.n_epochs,
            gamma=p.gamma,
            gae_lambda=p.gae_lambda,
            clip_range=p.clip_range,
            clip_range_vf=p.clip_range_vf,
            normalize_advantage=p.normalize_advantage,
            ent_coef=p.ent_coef,
            vf_coef=p.vf_coef,
            max_grad_norm=p.max_grad_norm,
            target_kl=p.target_kl,
            policy_kwargs=kwargs,
            seed=cfg.seed,
            device=cfg.device,
            verbose=0,
            **extra,
        )
    except (TypeError, AssertionError) as exc:
        # The stock constructor reports bad keyword combinations (e.g. shared_lstm with enable_critic_lstm)
        # through assertions and TypeErrors; they come from the user's policy_kwargs.
        raise UrgateError(
            f"cannot build {cls.__name__} with policy_kwargs {cfg.policy_kwargs}: {one_line(exc)}"
        ) from None
    setattr(model, RUN_INFO_ATTR, run_info(cfg))
    horizon.check_sequences(model.rollout_buffer.sequence_length, env, cfg.env_id)
    return model
