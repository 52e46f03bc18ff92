"""agents.run.loading: what a bad model file raises is one user error; a bug in our own code stays a traceback."""

from __future__ import annotations

import zipfile

import pytest

from agents.errors import UrgateError
from agents.run import factory, loading
from agents.run.checkpoints import save_model
from agents.run.config import load_config

TINY = ["n_envs=2", "ppo.n_steps=16", "ppo.batch_size=32", "env_kwargs.length=3", "ppo.normalize=false"]


def saved_model(path, hidden: int):
    cfg = load_config(None, "urgate/TMaze-v0", [*TINY, f"policy_kwargs.lstm_hidden_size={hidden}"])
    env = factory.make_training_env(cfg)
    model = factory.build_model(cfg, env)
    save_model(model, path)
    return env, type(model.policy)


def test_a_bug_in_the_policy_constructor_is_a_traceback(tmp_path, monkeypatch):
    env, policy_class = saved_model(tmp_path / "m.zip", hidden=8)
    assert isinstance(loading.load_model(tmp_path / "m.zip", env=env), loading.FastRecurrentPPO)

    def refactored(self, *args, **kwargs):
        raise AttributeError("'MlpGatedPolicy' object has no attribute 'renamed_in_a_refactor'")

    monkeypatch.setattr(policy_class, "__init__", refactored)
    with pytest.raises(AttributeError, match="renamed_in_a_refactor"):
        loading.load_model(tmp_path / "m.zip", env=env)


def test_out_of_memory_while_loading_is_not_called_a_bad_file(tmp_path, monkeypatch):
    env, _ = saved_model(tmp_path / "m.zip", hidden=8)

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(loading.FastRecurrentPPO, "load", no_memory)
    with pytest.raises(MemoryError):
        loading.load_model(tmp_path / "m.zip", env=env)


def test_weights_that_do_not_fit_the_model_are_a_bad_file(tmp_path):
    """A zip whose policy.pth holds another model's weights (hidden size 16 in a model of 8): one line."""
    env, _ = saved_model(tmp_path / "small.zip", hidden=8)
    saved_model(tmp_path / "big.zip", hidden=16)
    with zipfile.ZipFile(tmp_path / "small.zip") as small, zipfile.ZipFile(tmp_path / "big.zip") as big:
        members = {name: small.read(name) for name in small.namelist()}
        members["policy.pth"] = big.read("policy.pth")
    with zipfile.ZipFile(tmp_path / "mixed.zip", "w") as mixed:
        for name, data in members.items():
            mixed.writestr(name, data)
    with pytest.raises(
        UrgateError, match=r"cannot load model .*mixed\.zip.: RuntimeError: Error\(s\) in loading state_dict"
    ):
        loading.load_model(tmp_path / "mixed.zip", env=env)


def test_a_model_cut_just_after_one_of_its_inner_zips_is_called_truncated(tmp_path):
    """A model zip holds torch's own zips (policy.pth, ...): cut right after one of their end records, the file
    still reads as a zip (the inner one), which is a truncated model, not "a zip but not a saved model"."""
    saved_model(tmp_path / "m.zip", hidden=8)
    data = (tmp_path / "m.zip").read_bytes()
    end = data.find(b"PK\x05\x06")  # the first end-of-archive record: an inner zip's, well before the file's end
    assert 0 < end < len(data) - 22
    cut = tmp_path / "cut.zip"
    cut.write_bytes(data[: end + 22])
    assert zipfile.is_zipfile(cut)
    with pytest.raises(UrgateError, match="is not a model zip \\(not a zip archive, or truncated\\)"):
        loading.check_model_file(cut)
    loading.check_model_file(tmp_path / "m.zip")  # the whole file passes
