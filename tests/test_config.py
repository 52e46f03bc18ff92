"""agents.run.config: YAML + overrides into typed, validated RunConfig objects."""

from __future__ import annotations

import logging

import pytest
import yaml

import envs
from agents.errors import UrgateError
from agents.run.config import (
    CONFIG_DIR,
    EvalConfig,
    PPOConfig,
    RunConfig,
    available_configs,
    embedded_default,
    load_config,
)
from agents.run.strict import parse_override


def test_default_yaml_states_the_embedded_default():
    assert load_config() == embedded_default()
    assert load_config("tmaze") == embedded_default()


@pytest.mark.parametrize("overrides", [[], ["core=lstm", "seed=3"], ["env_kwargs.length=100"]])
def test_naming_the_default_env_gives_the_same_run(overrides):
    """One env, one config: spelling out the default env changes nothing, and leaving out the core keeps the
    package's default core (the long-length recipe is a config of its own, asked for by name)."""
    implicit = load_config(None, None, overrides)
    assert implicit == load_config(None, RunConfig.env_id, overrides)
    assert implicit.env_id == RunConfig.env_id
    assert load_config(None, RunConfig.env_id).core == RunConfig.core == "ur"
    long = load_config("tmaze_long", RunConfig.env_id, overrides)
    assert long.n_envs > implicit.n_envs and long.ppo.normalize and not implicit.ppo.normalize


def test_embedded_default_is_used_without_a_configs_directory(tmp_path, monkeypatch):
    import agents.run.config

    monkeypatch.setattr(agents.run.config, "CONFIG_DIR", tmp_path / "missing")
    assert load_config() == embedded_default()
    assert load_config(None, None, ["seed=3"]).seed == 3


def test_every_config_file_loads_and_every_family_has_one():
    names = available_configs()
    assert {"tmaze", "tmaze_long"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert isinstance(cfg, RunConfig)
    for family in envs.FAMILIES.values():
        assert family.config in names, f"family {family.name} names config {family.config!r}, not in configs/"


def test_env_picks_its_family_config_and_overrides_the_file_env():
    family = envs.family_of("MiniGrid-MemoryS9-v0")
    from_file = yaml.safe_load((CONFIG_DIR / f"{family.config}.yaml").read_text())
    cfg = load_config(None, "MiniGrid-MemoryS9-v0", [])
    assert cfg.env_id == "MiniGrid-MemoryS9-v0"
    assert cfg.ppo.n_steps == from_file["ppo"]["n_steps"]


def test_overrides_reach_nested_keys_with_yaml_values():
    cfg = load_config(
        "tmaze",
        None,
        [
            "ppo.n_steps=64",
            "ppo.learning_rate=1e-3",
            "ppo.target_kl=0.02",
            "ppo.lr_schedule=linear",
            "policy_kwargs.lstm_hidden_size=32",
            "policy_kwargs.core_kwargs.t_max=300",
            "policy_kwargs.net_arch={pi: [64], vf: [64]}",
            "env_kwargs.length=7",
            "eval.deterministic=false",
            "core=lstm",
            "total_timesteps=1e4",
        ],
    )
    assert cfg.ppo.n_steps == 64 and cfg.ppo.learning_rate == 1e-3 and cfg.ppo.target_kl == 0.02
    assert cfg.ppo.lr_schedule == "linear"
    assert cfg.policy_kwargs["lstm_hidden_size"] == 32
    assert cfg.policy_kwargs["core_kwargs"] == {"t_max": 300}
    assert cfg.policy_kwargs["net_arch"] == {"pi": [64], "vf": [64]}
    assert cfg.env_kwargs["length"] == 7
    assert cfg.eval.deterministic is False
    assert cfg.core == "lstm" and cfg.total_timesteps == 10_000
    # untouched values keep the file's
    assert cfg.ppo.batch_size == load_config("tmaze").ppo.batch_size


def test_later_override_wins_and_null_clears():
    cfg = load_config("tmaze", None, ["ppo.n_steps=64", "ppo.n_steps=32", "ppo.target_kl=0.1", "ppo.target_kl=null"])
    assert cfg.ppo.n_steps == 32 and cfg.ppo.target_kl is None


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("ppo.n_step=64", ["'ppo.n_step'", "did you mean 'n_steps'", "n_epochs"]),
        ("n_env=4", ["'n_env'", "n_envs", "total_timesteps"]),
        ("eval.every=3", ["'eval.every'", "freq", "n_episodes"]),
        ("ppo.n_steps=abc", ["'ppo.n_steps'", "integer", "'abc'"]),
        ("ppo.n_steps=true", ["'ppo.n_steps'", "integer"]),
        ("ppo.learning_rate=fast", ["'ppo.learning_rate'", "number"]),
        ("eval.deterministic=3", ["'eval.deterministic'", "boolean"]),
        ("policy_kwargs=5", ["'policy_kwargs'", "mapping"]),
        ("seed.x=1", ["'seed'", "no sub-key 'x'"]),
        ("ppo.n_steps=0", ["'ppo.n_steps'", ">= 1"]),
        ("ppo.gamma=1.5", ["'ppo.gamma'", "[0, 1]"]),
        ("ppo.lr_schedule=cosine", ["'ppo.lr_schedule'", "constant, linear"]),
        ("core=gruu", ["'core'", "lstm, chrono, u, r, ur"]),
        ("device=tpu9", ["'device'", "cpu"]),
        ("policy_kwargs.core=lstm", ["policy_kwargs.core", "'core'"]),
        ("ppo", ["key=value"]),
        ("=3", ["key=value"]),
    ],
)
def test_bad_overrides_name_the_key_and_what_is_valid(override, fragments):
    with pytest.raises(UrgateError) as info:
        load_config("tmaze", None, [override])
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("env_id: urgate/TMaze-v0\nppo:\n  n_stepz: 64\n")
    with pytest.raises(UrgateError, match=r"'ppo.n_stepz'.*mine.yaml.*valid keys in 'ppo'"):
        load_config(str(path))


@pytest.mark.parametrize(
    ("text", "fragment"), [("- a\n- b\n", "mapping"), ("ppo: [1, 2\n", "not valid YAML"), ("ppo: 3\n", "'ppo'")]
)
def test_malformed_files(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UrgateError, match=fragment):
        load_config(str(path))


def test_unknown_config_name_and_missing_file():
    with pytest.raises(UrgateError, match=r"unknown config 'tmaz'.*did you mean 'tmaze'.*tmaze_long"):
        load_config("tmaz")
    with pytest.raises(UrgateError, match="not found"):
        load_config("does/not/exist.yaml")


def test_unknown_env_id_is_reported_by_envs():
    with pytest.raises(envs.EnvConfigError, match="unknown environment id"):
        load_config(None, "urgate/TMaze-v9", [])
    with pytest.raises(envs.EnvConfigError, match="unknown environment id"):
        load_config("tmaze", None, ["env_id=Nope-v0"])


def test_yaml_round_trip():
    cfg = load_config(None, "MiniGrid-MemoryS7-v0", ["policy_kwargs.core_kwargs.t_max=300", "ppo.clip_range_vf=0.2"])
    again = RunConfig.from_dict(yaml.safe_load(cfg.to_yaml()))
    assert again == cfg
    assert isinstance(again.ppo, PPOConfig) and isinstance(again.eval, EvalConfig)


def test_from_yaml_is_strict(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(RunConfig().to_yaml() + "surprise: 1\n")
    with pytest.raises(UrgateError, match="'surprise'"):
        RunConfig.from_yaml(path)


def test_parse_override_values():
    assert parse_override("a.b=64") == ("a.b", 64)
    assert parse_override("a=[1, 2]") == ("a", [1, 2])
    assert parse_override("a=") == ("a", None)
    assert parse_override("a=x=y") == ("a", "x=y")


def test_a_wheel_ships_every_config(tmp_path):
    """A wheel (not only an editable install) must carry configs/*.yaml next to agents/, where CONFIG_DIR looks."""
    import subprocess
    import sys
    import zipfile

    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 70:  # older ones need the separate `wheel` package
        pytest.skip(f"setuptools {setuptools.__version__} < 70.1 (pip install -e '.[dev]' brings a newer one)")
    repo = CONFIG_DIR.parent
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        str(repo),
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(tmp_path),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("urgate-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"configs/{name}.yaml" for name in available_configs()} <= names
    assert "agents/run/config.py" in names
    assert {f"policies/csrc/{p.name}" for p in (repo / "policies" / "csrc").iterdir()} <= names  # sources, headers


@pytest.mark.parametrize("name", ["tmaze", "tmaze_long", "minigrid", "visual_match"])
def test_a_shipped_config_does_not_warn_about_its_own_task(name, caplog):
    """No shipped config prints the "training sequences hold ... not learnable" warning on its own default task."""
    from agents.run import factory

    cfg = load_config(name)
    with caplog.at_level(logging.WARNING, logger="urgate"):
        env = factory.make_training_env(cfg)
        try:
            factory.build_model(cfg, env)
        finally:
            env.close()
    assert not [r.message for r in caplog.records if r.name == "urgate"]
