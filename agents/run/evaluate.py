"""Evaluation rollouts of a recurrent agent: returns, success rate and a confidence interval, optionally a video.

The recurrent state is carried from step to step and reset where an episode starts (``episode_start`` tells the
policy to zero it), exactly as during training. With several envs, each runs a fixed share of the episodes, so
short episodes are not over-represented (SB3's ``evaluate_policy`` does the same).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import VecEnv

from .. import paths
from ..errors import ConfigValueError, UrgateError
from ..stats import bootstrap_ci, mean
from . import factory, loading, rundir
from .config import RunConfig

VIDEO_SUFFIXES = (".gif", ".mp4")
VIDEO_EPISODES = 3  # episodes a video records by default: enough to see the task, not a 100-episode evaluation
MAX_VIDEO_FRAMES = 2_000  # and never more frames than this (a few long episodes)


@dataclass
class EpisodeStats:
    """Per-episode results of an evaluation."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    successes: list[float] = field(default_factory=list)  # only episodes whose env reported is_success

    def summary(self) -> dict[str, Any]:
        """``mean_return``, ``std_return``, ``ci95`` (bootstrap percentile interval of the mean), ``success_rate``
        (None where the env defines no success), ``mean_length`` and ``episodes``."""
        r = np.asarray(self.returns, dtype=np.float64)
        est = bootstrap_ci(r, mean, reps=2000, seed=0)
        return {
            "mean_return": float(r.mean()),
            "std_return": float(r.std()),
            "ci95": [est.lo, est.hi],
            "success_rate": float(np.mean(self.successes)) if self.successes else None,
            "mean_length": float(np.mean(self.lengths)),
            "episodes": len(self.returns),
        }


def run_episodes(
    model,
    venv: VecEnv,
    n_episodes: int,
    *,
    deterministic: bool = True,
    frames: list[np.ndarray] | None = None,
    video_episodes: int = VIDEO_EPISODES,
) -> EpisodeStats:
    """Play ``n_episodes`` episodes of ``model`` in ``venv`` (which auto-resets, as every SB3 VecEnv).

    :param model: a recurrent SB3 model (anything with ``predict(obs, state, episode_start, deterministic)``)
    :param venv: evaluation envs; rewards are read as the env returns them (unnormalised)
    :param n_episodes: episodes in total, split evenly over the envs
    :param deterministic: greedy actions
    :param frames: if given, ``venv.get_images()[0]`` (the first env's view) is appended at the start and after
        every step of the first env's first ``video_episodes`` episodes, at most ``MAX_VIDEO_FRAMES`` in all
    :param video_episodes: episodes of the first env that ``frames`` records
    """
    n = venv.num_envs
    targets = np.array([(n_episodes + i) // n for i in range(n)])
    counts = np.zeros(n, dtype=int)
    ep_return, ep_len = np.zeros(n), np.zeros(n, dtype=int)
    stats = EpisodeStats()
    obs = venv.reset()
    state, starts = None, np.ones(n, dtype=bool)
    filmed = 0  # episodes of the first env that ended
    if frames is not None:
        first = venv.get_images()[0]
        if first is None:
            raise UrgateError("this environment renders no frames, so no video can be recorded")
        frames.append(first)
    while (counts < targets).any():
        actions, state = model.predict(obs, state=state, episode_start=starts, deterministic=deterministic)
        obs, rewards, dones, infos = venv.step(actions)
        ep_return += rewards
        ep_len += 1
        filmed += int(dones[0])  # after the step that ends the last filmed episode, the next one's start is shown
        if frames is not None and filmed < min(video_episodes, targets[0]) and len(frames) < MAX_VIDEO_FRAMES:
            frames.append(venv.get_images()[0])
        for i in np.flatnonzero(dones):
            if counts[i] < targets[i]:
                stats.returns.append(float(ep_return[i]))
                stats.lengths.append(int(ep_len[i]))
                if infos[i].get("is_success") is not None:
                    stats.successes.append(float(infos[i]["is_success"]))
                counts[i] += 1
            ep_return[i], ep_len[i] = 0.0, 0
        starts = dones
    return stats


@dataclass
class Resolved:
    """A model path and what is known about its run."""

    model_path: Path
    run_info: dict[str, Any]
    normalize_stats: Path | None


def resolve(path: str | Path) -> Resolved:
    """A run directory (its final model, else its latest checkpoint, else its best model: a run stopped before its
    first checkpoint) or a model zip, with its run info.

    :param path: run directory or ``.zip``
    """
    path = Path(path)
    if path.is_dir():
        if not rundir.is_run_dir(path):
            raise UrgateError(
                f"{str(path)!r} is not a run directory (no {rundir.CONFIG}); give a run directory or a .zip"
            )
        cfg = RunConfig.from_yaml(rundir.config_path(path))
        candidates = (rundir.final_model_path(path), rundir.checkpoint_path(path), rundir.best_model_path(path))
        for candidate in candidates:
            if candidate.exists():
                return Resolved(candidate, factory.run_info(cfg), _existing(rundir.normalize_stats_path(candidate)))
        names = ", ".join(c.relative_to(path).as_posix() for c in candidates)
        raise UrgateError(f"run directory {str(path)!r} has no model yet (none of {names}): {rundir.next_steps(path)}")
    loading.check_model_file(path)
    return Resolved(path, {}, _existing(rundir.normalize_stats_path(path)))


def _existing(p: Path) -> Path | None:
    return p if p.is_file() else None


def evaluate(
    model_or_path: Any,
    env_id: str | None = None,
    n_episodes: int = 50,
    deterministic: bool = True,
    seed: int = 12345,
    video_path: str | Path | None = None,
    *,
    env_kwargs: dict[str, Any] | None = None,
    n_envs: int = 8,
    device: str = "cpu",
    normalize_stats: str | Path | None = None,
    video_episodes: int = VIDEO_EPISODES,
) -> dict[str, Any]:
    """Evaluate a model over ``n_episodes`` episodes.

    Loading a model zip unpickles code stored in it (SB3's format): load only files you trust.

    :param model_or_path: a loaded model, a model ``.zip`` or a run directory
    :param env_id: environment id; default: the one the model was trained on (recorded in the zip / run)
    :param n_episodes: episodes to play
    :param deterministic: greedy actions (default) or sampled ones
    :param seed: seed of the evaluation envs (env ``i`` gets ``seed + i``; their episodes are those of
        ``envs.make_vec_env(env_id, n_envs, seed)``, never the training envs'), and of sampled actions for a model
        loaded here; an integer >= 0 or None
    :param video_path: write the first ``video_episodes`` episodes to this ``.gif`` or ``.mp4``
    :param env_kwargs: env keywords; default: those the model was trained with (none for another env)
    :param n_envs: envs stepped side by side (1 when recording a video)
    :param device: torch device for a model loaded here
    :param normalize_stats: VecNormalize statistics for observations; default: those saved next to the zip
    :param video_episodes: episodes the video shows (the first ones; at most ``MAX_VIDEO_FRAMES`` frames)
    :return: ``mean_return``, ``std_return``, ``ci95``, ``success_rate``, ``mean_length``, ``episodes``, ``env_id``,
        ``deterministic``, and ``model`` (the zip evaluated) when given a path; with a video also ``video`` (its path),
        ``video_episodes`` and ``video_frames``
    """
    if isinstance(n_episodes, bool) or not isinstance(n_episodes, int) or n_episodes < 1:
        raise ConfigValueError("n_episodes", n_episodes, "an integer >= 1 (episodes to play)")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigValueError("seed", seed, "an integer >= 0 (the seed of the evaluation envs)")
    factory.check_device(device)
    if video_path is not None and Path(video_path).suffix.lower() not in VIDEO_SUFFIXES:
        raise UrgateError(f"video file {str(video_path)!r} must end in {' or '.join(VIDEO_SUFFIXES)}")
    if video_path is not None:
        paths.check_file(video_path, "video file")
        if isinstance(video_episodes, bool) or not isinstance(video_episodes, int) or video_episodes < 1:
            raise ConfigValueError("video_episodes", video_episodes, "an integer >= 1 (episodes the video shows)")
    if video_path is not None and Path(video_path).suffix.lower() == ".mp4":
        _require_ffmpeg()
    frames: list[np.ndarray] | None = [] if video_path is not None else None
    with opened(
        model_or_path,
        env_id,
        env_kwargs=env_kwargs,
        n_envs=n_envs,
        seed=seed,
        device=device,
        normalize_stats=normalize_stats,
        render=video_path is not None,
    ) as (model, venv, env_id, model_path):
        stats = run_episodes(
            model, venv, n_episodes, deterministic=deterministic, frames=frames, video_episodes=video_episodes
        )
    result = stats.summary()
    result["env_id"] = env_id
    result["deterministic"] = deterministic
    if model_path is not None:
        result["model"] = str(model_path)
    if video_path is not None:
        write_video(frames or [], Path(video_path))
        result.update(video=str(video_path), video_episodes=min(video_episodes, n_episodes), video_frames=len(frames))
    return result


@contextmanager
def opened(
    model_or_path: Any,
    env_id: str | None = None,
    *,
    env_kwargs: dict[str, Any] | None = None,
    n_envs: int = 8,
    seed: int | None = 12345,
    device: str = "cpu",
    normalize_stats: str | Path | None = None,
    render: bool = False,
) -> Iterator[tuple[Any, VecEnv, str, Path | None]]:
    """A model and the envs to play it in, as ``evaluate`` takes them: ``(model, venv, env_id, model_path)``
    (``model_path``: the zip loaded, None for a model given as an object), the envs closed on exit. The envs are those the model was trained on unless ``env_id`` names another; observations are
    normalised with the run's VecNormalize statistics (or ``normalize_stats``); ``render`` gives one env in
    ``rgb_array`` mode."""
    resolved = None
    if isinstance(model_or_path, str | Path):
        resolved = resolve(model_or_path)
        info = resolved.run_info or loading.read_run_info(resolved.model_path)
        stats_file = normalize_stats or resolved.normalize_stats
    else:
        model = model_or_path
        info = getattr(model, loading.RUN_INFO_ATTR, None) or {}
        stats_file = normalize_stats
    env_id = env_id or info.get("env_id")
    if env_id is None:
        raise UrgateError("this model does not record its environment: pass the environment id (--env)")
    if env_kwargs is None:  # the run's env keywords belong to the run's env only
        env_kwargs = info.get("env_kwargs", {}) if env_id == info.get("env_id") else {}
    kwargs = dict(env_kwargs)
    previous_action = bool(info.get("previous_action", False))  # the model's inputs, whichever env it plays
    venv = (
        factory.make_render_env(env_id, kwargs, seed, previous_action=previous_action)
        if render
        else factory.make_vec_env(env_id, kwargs, n_envs, seed, previous_action=previous_action)
    )
    try:
        if stats_file is not None:
            venv = loading.load_vecnormalize(Path(stats_file), venv, training=False)
        if resolved is not None:
            model = loading.load_model(resolved.model_path, device=device, env=venv)
            if seed is not None:  # loading seeded the global generators with the training seed; sampling uses them
                set_random_seed(seed)
        else:
            loading.check_spaces(model.observation_space, model.action_space, venv, "the model")
        yield model, venv, env_id, resolved.model_path if resolved is not None else None
    finally:
        venv.close()


def _require_ffmpeg() -> None:
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        raise UrgateError("writing .mp4 needs imageio-ffmpeg: pip install imageio-ffmpeg (or write a .gif)") from None


def write_video(frames: list[np.ndarray], path: Path, fps: int = 10) -> None:
    """Write RGB frames to a GIF (Pillow) or an MP4 (imageio-ffmpeg)."""
    if not frames:
        raise UrgateError("no frames were rendered, so no video was written")
    paths.make_parent(path, "video file")
    mp4 = path.suffix.lower() == ".mp4"
    video = pad_frames(frames, multiple=16 if mp4 else 1)  # H.264 wants sizes in 16-pixel blocks
    if mp4:
        iio.imwrite(path, video, fps=fps, codec="libx264")
    else:
        iio.imwrite(path, video, duration=1000 / fps, loop=0)


def pad_frames(frames: list[np.ndarray], multiple: int = 1) -> np.ndarray:
    """Frames of different sizes (a task whose rooms differ) centred on one black canvas, (N, H, W, 3) uint8.

    :param multiple: round the canvas size up to a multiple of this
    """
    h = max(f.shape[0] for f in frames)
    w = max(f.shape[1] for f in frames)
    h, w = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    out = np.zeros((len(frames), h, w, 3), dtype=np.uint8)
    for i, f in enumerate(frames):
        top, left = (h - f.shape[0]) // 2, (w - f.shape[1]) // 2
        out[i, top : top + f.shape[0], left : left + f.shape[1]] = f[..., :3]
    return out
