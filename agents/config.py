"""Run configuration as data: YAML files in ``configs/`` and ``key=value`` overrides, read into typed dataclasses.

Every key is checked against the dataclasses below: an unknown key or a value of the wrong type raises
``UrgateError`` naming the key and the valid ones. A YAML file is merged over the dataclass defaults;
``embedded_default()`` is the default job that ``configs/default.yaml`` states, so the package trains without
any file.

``policy_kwargs`` and ``env_kwargs`` are free-form dicts: the policy constructor and the environment family
check their keys when the run is built (``agents.factory``).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UrgateError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = "default"
LR_SCHEDULES = ("constant", "linear")
VEC_ENVS = ("dummy", "subproc")


@dataclass
class PPOConfig:
    """RecurrentPPO hyperparameters, with sb3-contrib's names and meanings, plus observation/reward normalisation.

    :param n_steps: steps per environment per rollout; also the longest sequence a minibatch holds, so it bounds
        how far back backpropagation through time reaches
    :param batch_size: minibatch size in steps
    :param n_epochs: passes over each rollout
    :param sequence_length: steps per training sequence (a divisor of ``n_steps``; null: the whole rollout of each
        env, which lets backpropagation through time reach ``n_steps`` back); ``FastRecurrentPPO`` only
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

    n_steps: int = 128
    batch_size: int = 256
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
        for key in ("n_steps", "batch_size", "n_epochs"):
            _require(getattr(self, key) >= 1, f"{prefix}{key}", "an integer >= 1")
        for key in ("learning_rate", "clip_range", "max_grad_norm"):
            _require(getattr(self, key) > 0, f"{prefix}{key}", "a number > 0")
        for key in ("gamma", "gae_lambda"):
            _require(0 <= getattr(self, key) <= 1, f"{prefix}{key}", "a number in [0, 1]")
        for key in ("ent_coef", "vf_coef"):
            _require(getattr(self, key) >= 0, f"{prefix}{key}", "a number >= 0")
        _require(
            self.sequence_length is None or (self.sequence_length >= 1 and self.n_steps % self.sequence_length == 0),
            f"{prefix}sequence_length",
            f"null or a divisor of ppo.n_steps={self.n_steps}",
        )
        for key in ("clip_range_vf", "target_kl"):
            v = getattr(self, key)
            _require(v is None or v > 0, f"{prefix}{key}", "a number > 0 or null")
        _require(self.lr_schedule in LR_SCHEDULES, f"{prefix}lr_schedule", f"one of {', '.join(LR_SCHEDULES)}")


@dataclass
class EvalConfig:
    """Periodic evaluation during training and the final evaluation written to ``summary.json``.

    :param freq: evaluate every this many environment steps (0: only the final evaluation)
    :param n_episodes: episodes per evaluation
    :param deterministic: greedy actions (True) or sampled ones
    :param n_envs: environments stepped side by side during evaluation
    """

    freq: int = 10_000
    n_episodes: int = 50
    deterministic: bool = True
    n_envs: int = 8

    def _validate(self, prefix: str) -> None:
        _require(self.freq >= 0, f"{prefix}freq", "an integer >= 0 (0 disables periodic evaluation)")
        _require(self.n_episodes >= 1, f"{prefix}n_episodes", "an integer >= 1")
        _require(self.n_envs >= 1, f"{prefix}n_envs", "an integer >= 1")


@dataclass
class RunConfig:
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
    :param eval: evaluation settings
    :param checkpoint_freq: write ``checkpoints/latest.zip`` every this many steps (0: only at the end or on
        interruption)
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
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint_freq: int = 50_000
    gate_diagnostics: int = 10

    def _validate(self, prefix: str) -> None:
        from policies import CORE_NAMES

        _require(bool(self.env_id), f"{prefix}env_id", "a non-empty environment id")
        _require(self.core in CORE_NAMES, f"{prefix}core", f"one of {', '.join(CORE_NAMES)}")
        for key in ("total_timesteps", "n_envs", "threads"):
            _require(getattr(self, key) >= 1, f"{prefix}{key}", "an integer >= 1")
        for key in ("checkpoint_freq", "gate_diagnostics"):
            _require(getattr(self, key) >= 0, f"{prefix}{key}", "an integer >= 0 (0 disables it)")
        _require(self.vec_env in VEC_ENVS, f"{prefix}vec_env", f"one of {', '.join(VEC_ENVS)}")
        _require(_is_device(self.device), f"{prefix}device", "a torch device such as cpu, cuda, cuda:0 or auto")
        _require("core" not in self.policy_kwargs, f"{prefix}policy_kwargs.core", "set through the key 'core'")

    # -- conversions -------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> RunConfig:
        """Build and validate a config from a (possibly partial) dict; missing keys take the defaults.

        :param data: nested dict, e.g. from a YAML file
        :param source: where the dict came from, for error messages
        """
        return _build(cls, data, "", source)

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        """Read a config YAML (e.g. a run directory's ``config.yaml``), strictly."""
        return cls.from_dict(_read_yaml(Path(path)), source=str(path))


# -- loading ---------------------------------------------------------------------------------------------------


def embedded_default() -> RunConfig:
    """The default job that ``configs/default.yaml`` states, for an install without the ``configs/`` directory.

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
            f"unknown config {name_or_path!r}{_hint(name_or_path, available_configs())}; valid: "
            f"{', '.join(available_configs()) or '(no configs/ directory)'}, or a path to a YAML file"
        )
    return candidate


def load_config(name_or_path: str | None = None, env_id: str | None = None, overrides: list[str] | None = None):
    """Resolve a run configuration: a YAML file, then the env id, then ``key=value`` overrides, validated.

    :param name_or_path: a config name in ``configs/`` or a YAML path; None picks the env family's config
        (``envs.family_of(env_id).config``), or ``default`` when no env is given either
    :param env_id: environment id; overrides the file's ``env_id``
    :param overrides: ``key=value`` strings with dotted keys (``ppo.n_steps=64``,
        ``policy_kwargs.core_kwargs.t_max=300``); values are parsed as YAML scalars or flow collections
    :return: the validated ``RunConfig``
    """
    if name_or_path is None:
        if env_id is None:
            name_or_path = DEFAULT_CONFIG
        else:
            import envs

            name_or_path = envs.family_of(env_id).config
    if name_or_path == DEFAULT_CONFIG and not (CONFIG_DIR / f"{DEFAULT_CONFIG}.yaml").is_file():
        data: dict[str, Any] = embedded_default().to_dict()  # installed without configs/
        source = "embedded default"
    else:
        path = config_path(name_or_path)
        data, source = _read_yaml(path), str(path)
    data = _merge(RunConfig().to_dict(), data, RunConfig, "", source)
    if env_id is not None:
        data["env_id"] = env_id
    for item in overrides or []:
        key, value = parse_override(item)
        _set_dotted(data, key, value)
    cfg = RunConfig.from_dict(data, source="--set" if overrides else source)
    import envs

    envs.family_of(cfg.env_id)  # an unknown id fails here, before anything is built or written
    return cfg


def parse_override(item: str) -> tuple[str, Any]:
    """Split ``key=value``; the value is parsed as YAML (``64`` -> int, ``[64, 64]`` -> list, ``null`` -> None)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UrgateError(f"an override must look like key=value (e.g. ppo.n_steps=64), got {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise UrgateError(f"cannot parse the value of override {item!r}: {exc.__class__.__name__}") from None
    return key, value


# -- internals -------------------------------------------------------------------------------------------------


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UrgateError(f"cannot read config {str(path)!r}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise UrgateError(f"config {str(path)!r} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UrgateError(f"config {str(path)!r} must be a mapping of keys to values, got {type(data).__name__}")
    return data


def _hint(name: str, valid) -> str:
    close = difflib.get_close_matches(str(name), list(valid), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _require(ok: bool, key: str, what: str) -> None:
    if not ok:
        raise UrgateError(f"config key '{key}' must be {what}")


def _is_device(name: str) -> bool:
    if name == "auto":
        return True
    import torch

    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        return False
    return True


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unknown_key(cls, key: str, prefix: str, source: str) -> UrgateError:
    valid = [f.name for f in dataclasses.fields(cls)]
    where = f" in '{prefix[:-1]}'" if prefix else ""
    return UrgateError(
        f"unknown config key '{prefix}{key}'{_hint(key, valid)} ({source}); valid keys{where}: {', '.join(valid)}"
    )


def _merge(base: dict[str, Any], new: dict[str, Any], cls, prefix: str, source: str) -> dict[str, Any]:
    """``base`` updated by ``new`` key by key inside dataclass sections; a free-form dict value replaces."""
    hints = _hints(cls)
    out = dict(base)
    for key, value in new.items():
        if key not in hints:
            raise _unknown_key(cls, key, prefix, source)
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            out[key] = _merge(base.get(key, {}), value, hints[key], f"{prefix}{key}.", source)
        else:
            out[key] = value
    return out


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    cls, node, prefix = RunConfig, data, ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if cls is not None:
            hints = _hints(cls)
            if part not in hints:
                raise _unknown_key(cls, part, prefix, "--set")
            sub = hints[part]
            cls = sub if dataclasses.is_dataclass(sub) else None
            if not last and cls is None and typing.get_origin(sub) is not dict:
                raise UrgateError(
                    f"config key '{prefix}{part}' is {_type_name(sub)}, it has no sub-key '{parts[i + 1]}'"
                )
        if last:
            if cls is not None and isinstance(value, dict):  # a whole section: merge, keep the other keys
                value = _merge(node.get(part) or {}, value, cls, prefix + part + ".", "--set")
            node[part] = value
        else:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        prefix += part + "."


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if origin is dict or hint is dict:
        return "mapping"
    names = {int: "an integer", float: "a number", bool: "a boolean (true/false)", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except UrgateError:
                pass
    elif dataclasses.is_dataclass(hint):
        if isinstance(value, dict):
            return _build(hint, value, key + ".", source)
    elif origin is dict or hint is dict:
        if isinstance(value, dict):
            return value
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e5" as a string
            try:
                as_float = float(value)
            except ValueError:
                as_float = None
            if as_float is not None and as_float.is_integer():
                return int(as_float)
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str and isinstance(value, str):
        return value
    raise UrgateError(
        f"config key '{key}' must be {_type_name(hint)}, got {value!r} ({type(value).__name__}, from {source})"
    )


def _build(cls, data: dict[str, Any], prefix: str, source: str):
    if not isinstance(data, dict):
        raise UrgateError(f"config section '{prefix[:-1] or 'top level'}' must be a mapping ({source})")
    hints = _hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in hints:
            raise _unknown_key(cls, key, prefix, source)
        kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}", source)
    obj = cls(**kwargs)
    obj._validate(prefix)
    return obj
