#!/usr/bin/env python
"""urgate command line: train, evaluate, list and resume recurrent PPO agents with a selectable memory core.

    python run_rl.py --core ur                       train on the default task (train is the default command)
    python run_rl.py train --env MiniGrid-MemoryS7-v0 --core lstm --set ppo.n_steps=64
    python run_rl.py eval runs/RUN_DIR --episodes 100 --video episodes.gif
    python run_rl.py list
    python run_rl.py resume runs/RUN_DIR
    python run_rl.py probe runs/RUN_DIR              how long the agent's state holds the cue (memory tasks)

This module only parses arguments and reports; the work is done in ``agents``. A user error (a bad name, key,
value or file) prints one line on stderr and exits with code 2. Adding a subcommand is one function taking
the parsed arguments plus one ``Command`` entry in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import re
import shlex
import sys
import textwrap
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents.study.experiments import Experiment

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_COMMAND = "train"


def steps(text: str) -> int:
    """A step count as typed: ``300000``, ``300_000`` or ``3e5`` (a whole number however written)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of steps (e.g. 300000, 300_000 or 3e5)")
    return int(value)


def _add_overrides(p: argparse.ArgumentParser, help: str) -> None:
    """The repeatable ``--set KEY=VALUE`` config override, collected into ``args.overrides``."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def _user_errors() -> tuple[type[Exception], ...]:
    import envs
    import policies
    from agents.errors import UrgateError

    return (UrgateError, policies.PolicyConfigError, envs.EnvConfigError)


def _print_eval(result: dict, prefix: str = "") -> None:
    lo, hi = result["ci95"]
    sr = result.get("success_rate")
    success = f"success {sr:.3f}, " if sr is not None else ""
    print(
        f"{prefix}{success}return {result['mean_return']:.3f} (95% CI {lo:.3f} to {hi:.3f}, std "
        f"{result['std_return']:.3f}) over {result['episodes']} episodes"
    )


def _report_run(summary: dict) -> int:
    from agents.run import rundir

    run_dir = summary["run_dir"]
    status = summary["status"]
    head = f"{summary['core']} on {summary['env_id']}: {summary['timesteps']} steps, {summary['wall_time_s']:.0f} s"
    session = summary.get("session_timesteps", summary["timesteps"])
    if session != summary["timesteps"]:  # resumed: the speed is this session's, so say which steps it covers
        head += f" in all; this session {session} steps"
    if summary.get("fps"):
        head += f", {summary['fps']:.0f} steps/s"
    if status == "finished":
        print(head)
        final = summary["final_eval"]
        ceiling = summary.get("memoryless_ceiling")
        _print_eval(final, prefix="final evaluation: ")
        if ceiling is not None and final.get("success_rate") is not None:
            print(f"memoryless ceiling (best success rate without memory): {ceiling:.2f}")
        print(f"run directory: {run_dir}")
        return EXIT_OK
    if status == "interrupted":
        print(f"{head} (interrupted)", file=sys.stderr)
        print(f"checkpoint saved; continue with: python run_rl.py resume {run_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"training diverged: {summary.get('message')}.", file=sys.stderr)
    ckpt = rundir.checkpoint_path(run_dir)
    if ckpt.exists():
        steps = rundir.checkpoint_timesteps(run_dir)
        print(f"the last good checkpoint (step {steps}) is kept in {ckpt}", file=sys.stderr)
    print("try a lower ppo.learning_rate or ppo.max_grad_norm (--set key=value)", file=sys.stderr)
    return EXIT_FAILED


# -- train -----------------------------------------------------------------------------------------------------


def _train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--core",
        help="memory core: lstm, chrono, u, r, ur, gru, ugru, urgru, o, or, om, um (see `list`; default: the config's, ur)",
    )
    p.add_argument("--env", help="environment id (see `list`; default: the config's env)")
    p.add_argument(
        "--config",
        help="config name in configs/ or a YAML path (default: the env family's config, or 'default' without --env)",
    )
    p.add_argument("--timesteps", type=steps, help="environment steps to train for (300000, 300_000 or 3e5)")
    p.add_argument("--seed", type=int, help="seed for envs, initialisation and sampling")
    p.add_argument("--n-envs", type=int, help="training environments stepped side by side")
    p.add_argument("--device", help="torch device: cpu, cuda, cuda:0, auto (default cpu)")
    p.add_argument("--threads", type=int, help="torch threads (default 1: fastest for small recurrent models)")
    p.add_argument("--run-dir", type=Path, help="output directory (default runs/<env>-<core>-s<seed>-<time>)")
    p.add_argument(
        "--keep-checkpoints",
        type=int,
        metavar="N",
        help="also keep the last N periodic checkpoints as checkpoints/step_<steps>.zip (default 0: only "
        "checkpoints/latest.zip, replaced at every checkpoint)",
    )
    _add_overrides(
        p,
        "override a config field, repeatable; dotted keys reach nested ones: ppo.n_steps=64, "
        "policy_kwargs.lstm_hidden_size=64, policy_kwargs.core_kwargs.t_max=300, env_kwargs.length=50",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--no-progress", action="store_true", help="no live progress bar")


# config key -> the train option that sets it (and its attribute in the parsed arguments)
TRAIN_FLAGS = {
    "core": "--core",
    "total_timesteps": "--timesteps",
    "seed": "--seed",
    "n_envs": "--n-envs",
    "device": "--device",
    "threads": "--threads",
    "keep_checkpoints": "--keep-checkpoints",
}


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _cli_overrides(args: argparse.Namespace) -> list[str]:
    named = {key: getattr(args, _dest(flag)) for key, flag in TRAIN_FLAGS.items()}
    # json quotes a string as YAML reads it back: --core "" stays the empty string, not null
    return [f"{k}={json.dumps(v) if isinstance(v, str) else v}" for k, v in named.items() if v is not None] + list(
        args.overrides
    )


def _in_flag_terms(exc: Exception, args: argparse.Namespace, flags: dict[str, str]) -> Exception:
    """A config value error restated with the option the user typed: ``--timesteps -5: must be an integer >= 1``
    rather than ``config key 'total_timesteps' ...``; any other error as it is."""
    from agents.errors import ConfigValueError, UrgateError

    flag = flags.get(getattr(exc, "key", None))
    if not isinstance(exc, ConfigValueError) or flag is None or getattr(args, _dest(flag), None) is None:
        return exc
    hint = f" ({exc.hint})" if exc.hint else ""
    return UrgateError(f"{flag} {shlex.quote(str(exc.value))}: must be {exc.what}{hint}")


def default_run_dir(env_id: str, core: str, seed: int) -> Path:
    """``runs/<env>-<core>-s<seed>-<YYYYmmdd-HHMMSS>``, with the env id's slashes turned into dashes."""
    return Path("runs") / f"{env_id.replace('/', '-')}-{core}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"


def cmd_train(args: argparse.Namespace) -> int:
    import envs
    from agents.run.config import load_config
    from agents.run.train import train

    try:
        cfg = load_config(args.config, args.env, _cli_overrides(args))
        run_dir = args.run_dir or default_run_dir(cfg.env_id, cfg.core, cfg.seed)
        return _report_run(train(cfg, run_dir, overwrite=args.overwrite, progress_bar=not args.no_progress))
    except envs.EnvConfigError as exc:
        if args.env is not None and str(exc).startswith("unknown environment id"):
            raise envs.EnvConfigError(f"--env {args.env}: {exc}") from None
        raise
    except _user_errors() as exc:
        raise _in_flag_terms(exc, args, TRAIN_FLAGS) from None


# -- eval ------------------------------------------------------------------------------------------------------


def _eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "path",
        type=Path,
        help="run directory (its final model, else its latest checkpoint, else its best model) or a model .zip",
    )
    p.add_argument("--episodes", type=int, default=50, help="episodes to play (default 50)")
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the greedy one")
    p.add_argument(
        "--video", type=Path, help="record the first episodes to a .gif or .mp4 (then all episodes play in one env)"
    )
    p.add_argument(
        "--video-episodes",
        type=int,
        default=VIDEO_EPISODES,
        metavar="N",
        help=f"episodes the video shows, the first N (default {VIDEO_EPISODES}; at most 2000 frames)",
    )
    p.add_argument("--env", help="environment id (default: the one the model was trained on)")
    p.add_argument("--seed", type=int, default=12345, help="seed of the evaluation envs (default 12345)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--out", type=Path, help="write the statistics as JSON here (default: eval.json in a run directory)")


EVAL_FLAGS = {"n_episodes": "--episodes", "seed": "--seed", "device": "--device", "video_episodes": "--video-episodes"}
VIDEO_EPISODES = 3  # agents.run.evaluate.VIDEO_EPISODES, without importing torch to print --help


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from agents import paths
    from agents.run import rundir
    from agents.run.evaluate import evaluate

    torch.set_num_threads(1)
    out = args.out or (args.path / rundir.EVAL_RESULT if args.path.is_dir() else None)
    try:
        if out is not None:
            paths.check_file(out, "--out" if args.out is not None else "statistics file")
        result = evaluate(
            args.path,
            env_id=args.env,
            n_episodes=args.episodes,
            deterministic=not args.stochastic,
            seed=args.seed,
            video_path=args.video,
            video_episodes=args.video_episodes,
            device=args.device,
        )
    except _user_errors() as exc:
        raise _in_flag_terms(exc, args, EVAL_FLAGS) from None
    _print_eval(result, prefix=f"{result['env_id']} ({'greedy' if not args.stochastic else 'sampled'}): ")
    if args.path.is_dir() and Path(result["model"]).name != rundir.FINAL_MODEL:
        print(f"evaluated {result['model']} (the run has no {rundir.FINAL_MODEL} yet)")
    if out is not None:
        paths.write_text(
            out, json.dumps(result, indent=2) + "\n", "--out" if args.out is not None else "statistics file"
        )
        print(f"statistics written to {out}")
    if args.video is not None:
        shown, frames = result["video_episodes"], result["video_frames"]
        print(f"video of the first {shown} of {result['episodes']} episodes ({frames} frames) written to {args.video}")
    return EXIT_OK


# -- probe -----------------------------------------------------------------------------------------------------


def _probe_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", type=Path, help="run directory (its final model, else its latest checkpoint) or model .zip")
    p.add_argument("--episodes", type=int, default=200, help="held-out episodes, half to fit, half to score (200)")
    p.add_argument("--max-steps", type=int, default=1000, help="longest delay after the cue to decode at (1000)")
    p.add_argument("--points", type=int, default=40, help="about this many delays, spaced geometrically (40)")
    p.add_argument(
        "--noise", type=float, default=0.1, help="read-out noise, a share of the state's spread (default 0.1)"
    )
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the greedy one")
    p.add_argument("--env", help="environment id (default: the one the model was trained on)")
    p.add_argument("--seed", type=int, default=54321, help="seed of the probe's envs (default 54321)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--out", type=Path, help="directory for probe.csv, probe.json, probe.png (default RUN_DIR/probe)")


PROBE_FLAGS = {
    "n_episodes": "--episodes",
    "max_steps": "--max-steps",
    "points": "--points",
    "noise": "--noise",
    "seed": "--seed",
    "device": "--device",
}


def cmd_probe(args: argparse.Namespace) -> int:
    import torch

    from agents.errors import UrgateError
    from agents.run.probe import probe_memory, write_probe

    torch.set_num_threads(1)
    out = args.out
    if not args.path.exists():
        raise UrgateError(f"{str(args.path)!r} does not exist: give a run directory or a model .zip")
    if out is None:
        if not args.path.is_dir():
            raise UrgateError(f"--out is needed for a model zip ({str(args.path)!r}): a directory for the probe files")
        out = args.path / "probe"
    if out.exists() and not out.is_dir():
        raise UrgateError(f"--out {str(out)!r} is a file; give a directory for probe.csv, probe.json and probe.png")
    try:
        result = probe_memory(
            args.path,
            args.episodes,
            max_steps=args.max_steps,
            points=args.points,
            deterministic=not args.stochastic,
            seed=args.seed,
            env_id=args.env,
            device=args.device,
            noise=args.noise,
        )
    except _user_errors() as exc:
        raise _in_flag_terms(exc, args, PROBE_FLAGS) from None
    success = f", success {result.success_rate:.2f}" if result.success_rate is not None else ""
    print(f"{result.env_id}: {result.episodes} {'sampled' if args.stochastic else 'greedy'} episodes{success}")
    print("steps since cue | accuracy | chance | episodes fit / scored")
    for row in result.rows():
        print(
            f"{row['steps_since_cue']:>15} | {row['accuracy']:8.3f} | {row['chance']:6.3f} | "
            f"{row['fit_episodes']} / {row['test_episodes']}"
        )
    q = result.summary()["unit_timescale_quantiles"]
    print(f"unit timescales (steps): median {q['q50']:.1f}, 95th percentile {q['q95']:.1f}")
    for path in write_probe(result, out):
        print(path)
    return EXIT_OK


# -- list ------------------------------------------------------------------------------------------------------


def _list_arguments(p: argparse.ArgumentParser) -> None:
    pass


def cmd_list(args: argparse.Namespace) -> int:
    import envs
    import policies
    from agents.run.config import CONFIG_DIR, available_configs

    print("cores (--core):")
    for name in policies.CORE_NAMES:
        spec = policies.CORES[name]
        options = f" [core_kwargs: {', '.join(spec.options)}]" if spec.options else ""
        print(f"  {name:<8} {spec.summary}{options}")
    print("\nenvironment families (--env):")
    for fam in envs.FAMILIES.values():
        ceiling = "n/a" if fam.memoryless_ceiling is None else f"{fam.memoryless_ceiling:.2f}"
        extra = f", needs: {fam.install_hint()}" if fam.extra else ""
        video = "records video (eval --video)" if fam.records_video else "no video (renders no frames)"
        print(f"  {fam.name}: {fam.summary}")
        print(f"    memoryless ceiling {ceiling}, config '{fam.config}', {video}{extra}")
        for env_id in fam.ids:
            print(f"    {env_id}")
    print(f"\nconfigs (--config, in {CONFIG_DIR}):")
    for name in available_configs():
        about = config_summary((CONFIG_DIR / f"{name}.yaml").read_text())
        lines = textwrap.wrap(about, width=100, initial_indent=f"  {name:<14} ", subsequent_indent=" " * 17)
        print("\n".join(lines or [f"  {name}"]))
    return EXIT_OK


def config_summary(text: str) -> str:
    """The first sentence of a config file's leading comment block, however many lines it spans."""
    comment = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("#").strip())
    joined = " ".join(comment)
    end = re.search(r"[.!?](\s|$)", joined)
    return joined[: end.start() + 1] if end else joined


# -- resume ----------------------------------------------------------------------------------------------------


def _resume_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="run directory with checkpoints/latest.zip")
    p.add_argument("--timesteps", type=steps, help="a new, larger total budget (default: the run's own)")
    p.add_argument("--no-progress", action="store_true", help="no live progress bar")


def cmd_resume(args: argparse.Namespace) -> int:
    from agents.run.train import resume

    return _report_run(resume(args.run_dir, progress_bar=not args.no_progress, total_timesteps=args.timesteps))


# -- compare and plot ------------------------------------------------------------------------------------------


def _compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cores", help="comma-separated cores, e.g. lstm,chrono,ur (omit to continue --exp-dir as it is)")
    p.add_argument(
        "--seeds",
        help="a bare number is a count (3: seeds 0,1,2); a list (0,5,9), a range (10-14), both (0-2,7), or one "
        "seed with a comma (7,); default 1 (seed 0)",
    )
    p.add_argument("--env", help="environment id(s), comma-separated (default: the config's env)")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="values to sweep, repeatable (every combination runs): an env keyword (length=10,30,100; "
        "distractor_steps=30,90) or a config key (ppo.n_steps=32,128)",
    )
    p.add_argument("--config", help="config name or YAML path for every run (default: each env family's)")
    p.add_argument("--timesteps", type=steps, help="environment steps per run (default: the config's)")
    _add_overrides(p, "config override for every run, repeatable (as for train)")
    p.add_argument("--exp-dir", type=Path, help="experiment directory (default experiments/<env>_<grid keys>)")
    p.add_argument("--backend", default="local", help="local (process pool, default) or ray")
    p.add_argument("--workers", type=int, help="runs in parallel (default: CPU cores / threads per run)")
    p.add_argument("--address", help="Ray cluster address (ray backend; default: start a local Ray runtime)")
    p.add_argument("--gpus-per-run", type=float, default=0.0, help="GPUs each Ray task declares (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no live progress display")


# The grid's strings (``--cores lstm,ur --seeds 3 --grid length=10,30``) become an ``agents.study.experiments.Experiment``.


def parse_list(text: str, what: str) -> list[str]:
    """``"a,b, c"`` -> ``["a", "b", "c"]``; an empty item is an error."""
    from agents.errors import UrgateError

    items = [t.strip() for t in str(text).split(",")]
    if not items or any(not t for t in items):
        raise UrgateError(f"{what} must be a comma-separated list without empty items, got {text!r}")
    return items


def parse_seeds(text: str | int) -> list[int]:
    """``"3"``: three seeds, 0, 1, 2 (a bare number is a count); ``"0,5,9"``: those seeds; ``"10-14"``: seeds 10 to
    14; ``"7,"``: seed 7 alone; lists and ranges mix (``"0-2,7"``)."""
    from agents.errors import UrgateError

    text = str(text).strip()
    usage = "a count (3: seeds 0, 1, 2), a list (0,5,9), a range (10-14) or one seed followed by a comma (7,)"
    if re.fullmatch(r"\d+", text):
        if int(text) < 1:
            raise UrgateError(f"--seeds {text}: must be {usage}")
        return list(range(int(text)))
    items = text.split(",")
    if len(items) == 2 and items[1].strip() == "":  # "7,": a list of one
        items = items[:1]
    seeds: list[int] = []
    for item in items:
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", item.strip())
        if m is None or (m[2] is not None and int(m[2]) < int(m[1])):
            raise UrgateError(f"--seeds {text}: must be {usage}")
        seeds += range(int(m[1]), int(m[2] or m[1]) + 1)
    if len(set(seeds)) != len(seeds):
        raise UrgateError(f"--seeds {text}: names a seed twice")
    return seeds


def parse_grid(items: Iterable[str]) -> dict[str, list[Any]]:
    """``["length=10,30,100"]`` -> ``{"length": [10, 30, 100]}``; values are YAML scalars."""
    from agents.errors import UrgateError
    from agents.run.config import parse_override
    from agents.study.experiments.grid import compact

    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", key) or not raw.strip():
            raise UrgateError(f"--grid must look like key=v1,v2,... (e.g. length=10,30,100), got {item!r}")
        if key in grid:
            raise UrgateError(f"--grid key {key!r} given twice; put all its values in one --grid {key}=v1,v2")
        values = []
        for token in parse_list(raw, f"--grid {key}"):
            _, value = parse_override(f"{key}={token}")
            values.append(value)
        if len({compact(v) for v in values}) != len(values):
            raise UrgateError(f"--grid {key} repeats a value: {raw!r}")
        grid[key] = values
    return grid


def experiment_from_args(
    *,
    cores: str,
    seeds: str | int,
    env: str | None,
    grid: Iterable[str] = (),
    config: str | None = None,
    timesteps: int | None = None,
    overrides: Iterable[str] = (),
) -> Experiment:
    """Build an experiment from the command line's strings (``--cores lstm,ur --seeds 3 --grid length=10,30``)."""
    import policies
    from agents.errors import UrgateError
    from agents.run.config import load_config
    from agents.run.strict import did_you_mean
    from agents.study.experiments import Experiment

    core_list = parse_list(cores, "--cores")
    for c in core_list:
        if c not in policies.CORE_NAMES:
            raise UrgateError(
                f"unknown core {c!r} in --cores{did_you_mean(c, policies.CORE_NAMES)}; valid: "
                f"{', '.join(policies.CORE_NAMES)}"
            )
    if timesteps is not None and timesteps < 1:
        raise UrgateError(f"--timesteps must be >= 1, got {timesteps}")
    env_ids = parse_list(env, "--env") if env else [load_config(config, None, list(overrides)).env_id]
    return Experiment(
        env_ids=env_ids,
        cores=core_list,
        seeds=parse_seeds(seeds),
        grid=parse_grid(grid),
        config=config,
        timesteps=timesteps,
        overrides=list(overrides),
    )


def resolve_experiment(
    exp_dir: str | Path | None,
    *,
    cores: str | None,
    seeds: str | int | None,
    env: str | None,
    grid: Iterable[str] = (),
    config: str | None = None,
    timesteps: int | None = None,
    overrides: Iterable[str] = (),
) -> tuple[Experiment, Path]:
    """The experiment and directory a ``compare`` command means.

    With ``cores`` the grid comes from the arguments (directory default: :func:`default_exp_dir`); without, it is
    read from the existing ``exp_dir`` (continue an experiment as it was started, with no other grid options).
    """
    from agents.errors import UrgateError
    from agents.study.experiments import default_exp_dir, load_experiment

    if cores is None:
        grid_options = {
            "--seeds": seeds,
            "--env": env,
            "--grid": list(grid),
            "--config": config,
            "--timesteps": timesteps,
            "--set": list(overrides),
        }
        given = [k for k, v in grid_options.items() if v not in (None, [])]
        if exp_dir is None or given:
            raise UrgateError(
                "compare needs --cores (e.g. --cores lstm,ur --seeds 3 --env urgate/TMaze-v0 --grid length=10,100), "
                "or --exp-dir of an existing experiment alone to continue it"
                + (f" (got {', '.join(given)} without --cores)" if given else "")
            )
        return load_experiment(exp_dir), Path(exp_dir)
    exp = experiment_from_args(
        cores=cores,
        seeds=1 if seeds is None else seeds,
        env=env,
        grid=grid,
        config=config,
        timesteps=timesteps,
        overrides=overrides,
    )
    return exp, Path(exp_dir) if exp_dir is not None else default_exp_dir(exp)


def cmd_compare(args: argparse.Namespace) -> int:
    from agents.study.experiments.run import run_experiment
    from agents.study.experiments.store import log_path

    exp, exp_dir = resolve_experiment(
        args.exp_dir,
        cores=args.cores,
        seeds=args.seeds,
        env=args.env,
        grid=args.grid,
        config=args.config,
        timesteps=args.timesteps,
        overrides=args.overrides,
    )
    try:
        report = run_experiment(
            exp,
            exp_dir,
            backend=args.backend,
            workers=args.workers,
            address=args.address,
            gpus_per_run=args.gpus_per_run,
            progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        print(f"interrupted; continue with: python run_rl.py compare --exp-dir {exp_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(
        f"{report.total} runs: {len(report.finished)} finished now, {report.skipped} kept, "
        f"{len(report.interrupted)} interrupted, {len(report.failed)} failed; {report.wall_time_s / 60:.1f} min"
    )
    for name, error in report.failed.items():
        print(f"failed: {name}: {error} (log: {log_path(exp_dir, name)})", file=sys.stderr)
    print(f"figures and table: python run_rl.py plot {exp_dir}")
    if report.interrupted and not report.failed:
        print(f"continue with: python run_rl.py compare --exp-dir {exp_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_FAILED if report.failed else EXIT_OK


def _plot_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("exp_dir", type=Path, help="experiment directory written by compare")
    p.add_argument("--out", type=Path, help="output directory (default EXP_DIR/plots)")
    p.add_argument("--dpi", type=int, default=130, help="PNG resolution (default 130)")


def cmd_plot(args: argparse.Namespace) -> int:
    from agents.study.plots import plot_experiment

    try:
        written = plot_experiment(args.exp_dir, out_dir=args.out, dpi=args.dpi)
    except _user_errors() as exc:
        raise _in_flag_terms(exc, args, {"dpi": "--dpi"}) from None
    for path in written:
        print(path)
    return EXIT_OK


# -- registry --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """A subcommand: its help line, how it adds its arguments, and what it runs (returns the exit code)."""

    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {
    "train": Command("train an agent (the default command)", _train_arguments, cmd_train),
    "eval": Command("evaluate a run directory or model zip; optionally record a video", _eval_arguments, cmd_eval),
    "list": Command("list memory cores, environment families and ids, and configs", _list_arguments, cmd_list),
    "resume": Command("continue a run from its last checkpoint", _resume_arguments, cmd_resume),
    "compare": Command("run a grid of cores x seeds x settings (restartable)", _compare_arguments, cmd_compare),
    "plot": Command("figures (PNG, SVG) and results.md for an experiment directory", _plot_arguments, cmd_plot),
    "probe": Command(
        "decode the cue from a trained agent's state at each delay after it (memory tasks)", _probe_arguments, cmd_probe
    ),
}


class _CommandLineError(Exception):
    """A command line argparse cannot parse (an unknown option, a value of the wrong type)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with a mistyped command line reported as every other user error, one line (what was wrong, where
    the options are listed) and exit code 2, instead of a usage dump."""

    def error(self, message: str):
        raise _CommandLineError(f"{message} (options: python {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="run_rl.py",
        description="Recurrent PPO with a selectable memory core (LSTM, GRU and ordered-gate families: see list).\n"
        "Without a command, trains: python run_rl.py --core ur\n"
        "Model zips unpickle code when loaded: load only files you trust.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        command.arguments(p)
        p.set_defaults(run=command.run)
        if name == DEFAULT_COMMAND:  # `run_rl.py --help` shows the options that work without a command
            options = p.format_help().split("\noptions:\n", 1)[-1].splitlines()
            options = [line for line in options if "show this help message" not in line]
            parser.epilog = (
                f"options of {name}, the default command:\n" + "\n".join(options) + "\n\nEvery command has its "
                "own options: python run_rl.py COMMAND --help (e.g. python run_rl.py eval --help)"
            )
    return parser


READER_GONE = (errno.EPIPE, errno.EIO)  # a closed pipe, a terminal that hung up


class _PipeSafe:
    """A text stream whose writes survive a reader that went away: ``run_rl.py list | head -3`` closes the pipe
    early, Ctrl-C under ``2>&1 | tee log`` kills ``tee``, and a closed terminal (SIGHUP) fails every write with
    EIO. After the first EPIPE or EIO the file descriptor is pointed at /dev/null, so training carries on to its
    checkpoint and the interpreter's final flush stays quiet."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def _silence(self) -> None:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # no real descriptor (a test's capture): writes are dropped
            self._stream = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the process)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            if exc.errno not in READER_GONE:
                raise
            self._silence()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            if exc.errno not in READER_GONE:
                raise
            self._silence()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the command, return the exit code."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported (see --threads)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv.insert(0, DEFAULT_COMMAND)
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _PipeSafe(sys.stdout), _PipeSafe(sys.stderr)
    try:
        try:
            args = build_parser().parse_args(argv)
        except _CommandLineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        from agents.run.logs import log_to_stderr

        log_to_stderr()  # once validation passed: the library's progress lines, other libraries' warnings
        try:
            return args.run(args)
        except _user_errors() as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:  # outside training (which saves a checkpoint itself): nothing to save
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = streams


if __name__ == "__main__":
    sys.exit(main())
