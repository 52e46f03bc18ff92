"""The grid of an experiment: cores x seeds x grid values x environments, and the config of each cell.

Grid keys are environment keywords (``length``, ``distractor_steps``) or, when they name a config field, config
overrides (``ppo.n_steps``, ``policy_kwargs.lstm_hidden_size``): one experiment can sweep the BPTT length too.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

import envs

from ...errors import UrgateError
from ...run.config import RunConfig, load_config

EXPERIMENT_FILE = "experiment.yaml"
# Experiment field -> the compare option that sets it, for messages
OPTIONS = {
    "env_ids": "--env",
    "cores": "--cores",
    "seeds": "--seeds",
    "grid": "--grid",
    "config": "--config",
    "timesteps": "--timesteps",
    "overrides": "--set",
}


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid.

    :param name: the run directory's name under ``runs/``
    :param env_id: environment id
    :param core: memory core name
    :param seed: seed of the run
    :param params: the grid values of this cell, by grid key (env keywords and config overrides)
    """

    name: str
    env_id: str
    core: str
    seed: int
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Experiment:
    """A grid of training runs and how each run's config is made.

    :param env_ids: environment ids
    :param cores: memory core names
    :param seeds: seeds
    :param grid: grid key -> values; every combination is run (env keywords, or config keys such as ``ppo.n_steps``)
    :param config: config name or YAML path for every run (None: each env family's own config)
    :param timesteps: training steps per run (None: the config's ``total_timesteps``)
    :param overrides: ``key=value`` config overrides applied to every run
    """

    env_ids: list[str]
    cores: list[str]
    seeds: list[int]
    grid: dict[str, list[Any]] = field(default_factory=dict)
    config: str | None = None
    timesteps: int | None = None
    overrides: list[str] = field(default_factory=list)

    def runs(self) -> list[RunSpec]:
        """Every cell of the grid, in a stable order (env, grid values, core, seed)."""
        keys = list(self.grid)
        out = []
        for env_id in self.env_ids:
            for values in itertools.product(*(self.grid[k] for k in keys)):
                params = dict(zip(keys, values, strict=True))
                for core in self.cores:
                    for seed in self.seeds:
                        out.append(RunSpec(run_name(env_id, params, core, seed), env_id, core, seed, params))
        return out

    def run_config(self, spec: RunSpec) -> RunConfig:
        """The validated config of one cell: the config file, then ``overrides``, then the cell's own values."""
        cell = [f"core={spec.core}", f"seed={spec.seed}"]
        if self.timesteps is not None:
            cell.append(f"total_timesteps={self.timesteps}")
        for key, value in spec.params.items():
            path = key if is_config_key(key) else f"env_kwargs.{key}"
            cell.append(f"{path}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}")
        return load_config(self.config, spec.env_id, [*self.overrides, *cell])

    def extends(self, old: Experiment) -> bool:
        """Whether this experiment only adds cores, seeds, envs or grid values to ``old`` (its runs then include
        old's)."""
        same = (old.config, old.timesteps, old.overrides, list(old.grid)) == (
            self.config,
            self.timesteps,
            self.overrides,
            list(self.grid),
        )
        pairs = [(old.cores, self.cores), (old.seeds, self.seeds), (old.env_ids, self.env_ids)]
        pairs += [(old.grid[k], self.grid[k]) for k in old.grid if k in self.grid]
        return same and all({compact(v) for v in a} <= {compact(v) for v in b} for a, b in pairs)

    def differences(self, old: Experiment) -> list[str]:
        """What differs from ``old``, one phrase per field, in the command line's terms (``--timesteps 2048 there,
        4096 now``)."""

        def show(value: Any) -> str:
            if isinstance(value, dict):
                return " ".join(f"{k}={','.join(map(str, v))}" for k, v in value.items()) or "(none)"
            if isinstance(value, list):
                return ",".join(map(str, value)) or "(none)"
            return "(the config's)" if value is None else str(value)

        return [
            f"{OPTIONS[f.name]} {show(getattr(old, f.name))} there, {show(getattr(self, f.name))} now"
            for f in dataclasses.fields(self)
            if getattr(old, f.name) != getattr(self, f.name)
        ]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["runs"] = [dataclasses.asdict(r) for r in self.runs()]  # for readers (plots); recomputed on load
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = EXPERIMENT_FILE) -> Experiment:
        names = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k != "runs"}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UrgateError(f"{source}: unknown key(s) {unknown}; valid: {sorted(names)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise UrgateError(f"{source}: {exc}") from None


def is_config_key(key: str) -> bool:
    """Whether a grid key names a config field (``ppo.n_steps``) rather than an environment keyword (``length``)."""
    return key.split(".")[0] in {f.name for f in dataclasses.fields(RunConfig)}


def run_name(env_id: str, params: dict[str, Any], core: str, seed: int) -> str:
    """Directory name of a cell, e.g. ``urgate_TMaze-v0__length=100__ur__s0``."""
    parts = [env_id.replace("/", "_")]
    parts += [f"{k}={compact(v)}" for k, v in params.items()]
    parts += [core, f"s{seed}"]
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", "__".join(parts))


def compact(v: Any) -> str:
    """A grid value as one short token (lists and dicts as compact JSON), for names and comparisons."""
    return json.dumps(v, separators=(",", ":")) if isinstance(v, list | dict) else str(v)


def validate(exp: Experiment) -> dict[str, RunConfig]:
    """Resolve every run's config and build each distinct environment once, so bad input fails before any run.

    :return: run name -> config
    :raises UrgateError: for a bad config key, core, env id or env keyword (env errors are re-raised as
        ``UrgateError`` naming the grid)
    """
    configs: dict[str, RunConfig] = {}
    checked: set[str] = set()
    for spec in exp.runs():
        try:
            cfg = exp.run_config(spec)
            key = json.dumps([cfg.env_id, cfg.env_kwargs], sort_keys=True, default=str)
            if key not in checked:
                envs.make_env(cfg.env_id, **cfg.env_kwargs).close()
                checked.add(key)
        except envs.EnvConfigError as exc:
            raise UrgateError(f"{exc} (grid cell {spec.name})") from None
        configs[spec.name] = cfg
    return configs
