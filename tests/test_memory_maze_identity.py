"""The fixed Memory Maze task is upstream's task: same seeds and actions give bit-identical images, positions
(physics state and, for -ExtraObs, the observed positions) and rewards. The upstream reference runs in a separate
process, so that nothing of our fixes can reach it; our runs replay the reference's actions."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

if importlib.util.find_spec("memory_maze") is None:
    pytest.skip('memory-maze is not installed (pip install -e ".[memory-maze]")', allow_module_level=True)

from envs import memory_maze  # noqa: E402
from tests.memory_maze_runs import run, run_in_subprocess  # noqa: E402


def _assert_same(reference: dict, ours: dict, label: str) -> None:
    assert sorted(reference) == sorted(ours), label
    for key in reference:
        if key == "last":
            continue
        steps = np.nonzero((reference[key] != ours[key]).reshape(len(reference[key]), -1).any(axis=1))[0]
        assert steps.size == 0, f"{label}: {key} differs from upstream's first at step {steps[:1]}"
    np.testing.assert_array_equal(reference["last"], ours["last"])


def _compare(tmp_path, driven: list[dict], replayed: list[dict]) -> list[dict]:
    """Run ``driven`` specs (the driver picks the actions) and then ``replayed`` specs (each taking the actions of
    ``driven[spec.pop('actions_of')]``) upstream in a subprocess and ours in this process; compare them."""
    references = run_in_subprocess(tmp_path, driven)
    replays = [
        dict(spec, actions=references[index]["action"].tolist())
        for spec in replayed
        for index in [spec.pop("actions_of")]
    ]
    references += run_in_subprocess(tmp_path, replays) if replays else []
    for spec, reference in zip(driven + replays, references, strict=True):
        spec = dict(spec, fixed=True, actions=reference["action"].tolist())
        _assert_same(reference, run(**spec), label=str({k: v for k, v in spec.items() if k != "actions"}))
    return references


@pytest.fixture(autouse=True)
def _pinned():
    if not memory_maze.fixes_apply():
        pytest.fail(
            f"the fixes are proven for {memory_maze.FIXED_UPSTREAM} only; installed {memory_maze.installed_upstream()}"
        )


def test_fixes_are_pinned_to_the_upstream_versions_they_were_proven_on():
    # When this fails, the fixes are left out at run time (with a warning): re-run this file's slow tests on the new
    # versions, check envs.memory_maze's assumptions, and update FIXED_UPSTREAM and the pins in pyproject.toml.
    assert memory_maze.installed_upstream() == memory_maze.FIXED_UPSTREAM


def test_other_upstream_versions_run_unpatched_with_a_warning(monkeypatch):
    other = dict(memory_maze.FIXED_UPSTREAM, mujoco="3.18.0")
    monkeypatch.setattr(memory_maze, "installed_upstream", lambda: other)
    with pytest.warns(RuntimeWarning, match="runs unpatched.*3.18.0"):
        assert not memory_maze.fixes_apply()
    with pytest.warns(RuntimeWarning):
        env = memory_maze.MemoryMazeEnv(size=9)
    assert env._task_fn.keywords["fixed"] is False


def test_fixes_keyword_is_checked():
    with pytest.raises(memory_maze.EnvConfigError, match="fixes must be True or False, got 'no'"):
        memory_maze.MemoryMazeEnv(size=9, fixes="no")
    assert memory_maze.MemoryMazeEnv(size=9, fixes=False)._task_fn.keywords["fixed"] is False


def test_fixes_change_only_the_task_we_build():
    tasks = memory_maze._import_tasks()  # first: it sets MUJOCO_GL before dm_control is imported
    from dm_control.composer.observation.observable import MJCFCamera
    from dm_control.locomotion.arenas import labmaze_textures
    from dm_control.locomotion.props.target_sphere import TargetSphere

    before = (tasks.labmaze_textures, TargetSphere._update_activation, MJCFCamera._callable, dict(vars(tasks)))
    env = memory_maze.build_task(9, seed=3, image_only_obs=True)
    env.reset()
    after = (tasks.labmaze_textures, TargetSphere._update_activation, MJCFCamera._callable, dict(vars(tasks)))
    assert before == after and tasks.labmaze_textures is labmaze_textures
    assert env.physics.model.ntex == 16  # upstream's build holds 88: one WallTextures per wall character
    assert all(type(target) is not TargetSphere for target in env.task._targets)
    env.close()


def test_numpy_contact_test_equals_dm_controls_loop_at_every_substep():
    memory_maze._import_tasks()
    from dm_control.locomotion.props.target_sphere import TargetSphere

    from tests.memory_maze_runs import drive

    env = memory_maze.build_task(9, seed=1, global_observables=True)
    calls = []

    def both(target, physics):
        """Ours and upstream's loop from the same state; the target ends as ours leaves it."""
        was = target._activated
        target._activated = False
        type(target)._update_activation(target, physics)
        ours = target._activated
        target._activated = False
        TargetSphere._update_activation(target, physics)
        calls.append((ours, target._activated))
        target._activated = was or ours

    for target in env.task._targets:
        target._update_activation = lambda physics, target=target: both(target, physics)
    observation = env.reset().observation
    for _ in range(120):
        observation = env.step(drive(observation)).observation
    env.close()
    ours, upstream = np.array(calls).T
    assert len(calls) >= 120 * 50 * 3 and upstream.any()  # every substep of every target; some touches
    np.testing.assert_array_equal(ours, upstream)


def test_fixed_task_is_upstreams_task_bit_for_bit(tmp_path):
    # 160 driven steps reach targets; the reset after step 99 builds a new maze (an episode boundary).
    driven = [dict(size=9, seed=1, n_steps=160, fixed=False, resets=[99], extra_obs=True)]
    replayed = [
        dict(size=9, seed=1, n_steps=160, fixed=False, resets=[99], actions_of=0),  # the benchmark's image-only obs
        dict(size=9, seed=1, n_steps=40, fixed=False, top_camera=True, actions_of=0),
    ]
    references = _compare(tmp_path, driven, replayed)
    assert references[0]["reward"].sum() >= 2  # targets were touched: the contact test mattered


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 7])
def test_fixed_task_is_upstreams_task_over_a_full_episode_and_beyond(tmp_path, seed):
    # 1,100 steps of 9x9 cross the natural end of the 1,000-step episode; 15x15 and -Top with a reset in between.
    driven = [
        dict(size=9, seed=seed, n_steps=1100, fixed=False, extra_obs=True),
        dict(size=15, seed=seed, n_steps=500, fixed=False, resets=[299], extra_obs=True),
    ]
    replayed = [
        dict(size=9, seed=seed, n_steps=1100, fixed=False, actions_of=0),
        dict(size=9, seed=seed, n_steps=400, fixed=False, resets=[199], top_camera=True, actions_of=0),
        dict(size=15, seed=seed, n_steps=500, fixed=False, resets=[299], actions_of=1),
    ]
    references = _compare(tmp_path, driven, replayed)
    assert references[0]["last"][999] and references[0]["reward"].sum() >= 10
    assert references[1]["reward"].sum() >= 2
