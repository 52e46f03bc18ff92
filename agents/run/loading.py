"""Reading saved models: a model zip checked before SB3 unpickles it, its run info, its observation and action
spaces against an env, and VecNormalize statistics; every user-facing failure is one ``UrgateError`` line.

Loading a model unpickles code stored in the zip (SB3's format): load only files you trust.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from ..errors import UrgateError, one_line
from ..ppo.fast_ppo import FastRecurrentPPO

# What reading a damaged, foreign or incompatible file raises (SB3's zip and JSON, pickle, torch.load, the checks of
# spaces and parameter names); everything else (an AttributeError or TypeError in our code, MemoryError) is a bug or
# a lack of resources and stays a traceback. torch reports a bad file as RuntimeError, like much else: see
# _is_file_error.
BAD_FILE = (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError, ImportError)

# torch's RuntimeError texts for a file it cannot read, or weights that do not fit the model built from it
_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)  # top level from torch 2.5
_TORCH_FILE_ERRORS = ("PytorchStreamReader", "Error(s) in loading state_dict", "invalid load key", "size mismatch")


def _is_file_error(exc: RuntimeError) -> bool:
    """Whether torch's RuntimeError says the file is bad (not: out of memory, a kernel that failed)."""
    return not isinstance(exc, _OUT_OF_MEMORY) and any(t in str(exc) for t in _TORCH_FILE_ERRORS)


# Saved on the model (SB3 pickles every attribute), so a zip on its own knows which env and core it was made for.
RUN_INFO_ATTR = "urgate_run"


def load_vecnormalize(path: Path, venv: VecEnv, *, training: bool) -> VecNormalize:
    """Saved VecNormalize statistics around ``venv``; for evaluation (``training=False``) rewards stay raw."""
    try:
        norm = VecNormalize.load(str(path), venv)
    except BAD_FILE as exc:
        raise UrgateError(f"cannot read normalisation statistics {str(path)!r}: {one_line(exc)}") from None
    norm.training = training
    if not training:
        norm.norm_reward = False
    return norm


def check_model_file(path: Path) -> None:
    """Fail with one line unless ``path`` looks like an SB3 model zip (exists, complete, has data + weights)."""
    if not path.exists():
        raise UrgateError(f"{str(path)!r} does not exist: give a run directory or a model .zip")
    if not path.is_file():
        raise UrgateError(f"{str(path)!r} is not a file (give a run directory or a model .zip)")
    if not zipfile.is_zipfile(path):
        raise UrgateError(f"{str(path)!r} is not a model zip (not a zip archive, or truncated)")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            first = min((info.header_offset for info in zf.infolist()), default=0)
            bad = zf.testzip() if first == 0 else None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise UrgateError(f"{str(path)!r} is a damaged zip: {one_line(exc)}") from None
    if first > 0:  # cut short just after one of the zips a model holds (torch saves its tensors as zips)
        raise UrgateError(f"{str(path)!r} is not a model zip (not a zip archive, or truncated)")
    if "data" not in names or "policy.pth" not in names:
        raise UrgateError(f"{str(path)!r} is a zip but not a saved model (no 'data' and 'policy.pth' inside)")
    if bad is not None:
        raise UrgateError(f"{str(path)!r} is damaged: member {bad!r} fails its checksum")


def load_model(path: Path, *, device: str = "cpu", env: VecEnv | None = None, expect_core: str | None = None):
    """Load a saved model zip, with every user-facing failure turned into ``UrgateError``.

    Loading unpickles code stored in the zip (SB3's format): load only files you trust.

    :param path: a model ``.zip``
    :param device: torch device to load the weights on
    :param env: the environment it will act or train in; its observation and action spaces must match the
        model's (the number of envs may differ). Loading leaves it as it is: SB3's ``load(env=...)`` reseeds it with
        the training seed (an evaluation would replay the training envs' episodes) and resets it; attach it with
        ``model.set_env`` to train in it
    :param expect_core: the core the model must have (e.g. the run's config); None accepts any
    """
    path = Path(path)
    data = _zip_data(path)
    core = (data.get("policy_kwargs") or {}).get("core")
    if expect_core is not None and core != expect_core:
        raise UrgateError(f"model {str(path)!r} has core {core!r}, but the run's config says core {expect_core!r}")
    if env is not None:
        check_spaces(data["observation_space"], data["action_space"], env, repr(str(path)))
    try:
        return FastRecurrentPPO.load(str(path), env=None, device=device)
    except (*BAD_FILE, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and not _is_file_error(exc):
            raise  # out of memory, a broken kernel: not the file's fault
        raise UrgateError(f"cannot load model {str(path)!r}: {one_line(exc)}") from None


def check_spaces(observation_space: spaces.Space, action_space: spaces.Space, env: VecEnv, what: str) -> None:
    """Fail with one line if ``env``'s observation or action space differs from a model's."""
    for kind, theirs in (("observation space", observation_space), ("action space", action_space)):
        ours = env.observation_space if kind == "observation space" else env.action_space
        if not _same_space(theirs, ours):
            raise UrgateError(
                f"{what} was trained with {kind} {describe_space(theirs)}, but {env_name(env)} has {describe_space(ours)}"
            )


def describe_space(space: spaces.Space) -> str:
    """A one-line description of a space (gymnasium's repr prints whole bound arrays)."""
    if isinstance(space, spaces.Dict):
        return "Dict(" + ", ".join(f"{k}: {describe_space(v)}" for k, v in space.spaces.items()) + ")"
    if isinstance(space, spaces.Box):
        return f"Box(shape={space.shape}, dtype={space.dtype})"
    return " ".join(str(space).split())


def env_name(env: VecEnv) -> str:
    """The env id an env was built for, for messages."""
    try:
        spec = env.get_attr("spec")[0]
    except (AttributeError, IndexError):
        spec = None
    return f"the environment {spec.id}" if spec is not None else "the environment"


def read_run_info(path: Path) -> dict[str, Any]:
    """The run info recorded in a model zip (env id, env kwargs, core), without building the model."""
    data = _zip_data(Path(path))
    return dict(data.get(RUN_INFO_ATTR) or {})


def _zip_data(path: Path) -> dict[str, Any]:
    check_model_file(path)
    try:
        data, _, _ = load_from_zip_file(str(path), device="cpu", load_data=True)
    except (*BAD_FILE, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and not _is_file_error(exc):
            raise
        raise UrgateError(f"cannot load model {str(path)!r}: {one_line(exc)}") from None
    if not isinstance(data, dict) or "observation_space" not in data or "policy_class" not in data:
        raise UrgateError(f"{str(path)!r} is a zip but not a saved RecurrentPPO model")
    return data


def _same_space(a: spaces.Space, b: spaces.Space) -> bool:
    # SB3 transposes channel-last images when it wraps the env (VecTransposeImage), so compare either layout.
    if a == b:
        return True
    if isinstance(a, spaces.Dict) and isinstance(b, spaces.Dict):
        return a.spaces.keys() == b.spaces.keys() and all(_same_space(a[k], b[k]) for k in a.spaces)
    if isinstance(a, spaces.Box) and isinstance(b, spaces.Box) and a.dtype == b.dtype and len(a.shape) == 3:
        return a.shape == (b.shape[2], b.shape[0], b.shape[1]) or b.shape == (a.shape[2], a.shape[0], a.shape[1])
    return False
