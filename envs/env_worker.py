"""The child side of ``envs.subproc.LeanSubprocVecEnv``: one env per process, driven over a socket, in a process that
imports gymnasium, numpy, cloudpickle and the env's own modules, never torch or stable-baselines3.

The command protocol and its semantics are those of SB3's ``SubprocVecEnv`` worker (``step`` resets a finished env
and returns its last observation as ``info["terminal_observation"]``, ``info["TimeLimit.truncated"]`` is set, ...);
only ``is_wrapped`` differs: it takes a class's (module, qualname) instead of the class, so that asking whether an
env is wrapped in SB3's ``Monitor`` does not import SB3 here.

Started by the parent as ``python -c "import envs.env_worker as w; w.main(FD)"``; the first message sets
``sys.path`` (as multiprocessing's spawn does), the second is the cloudpickled env factory.
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection
from typing import Any

import gymnasium as gym


def _is_wrapped(env: gym.Env, class_key: tuple[str, str]) -> bool:
    """Whether a wrapper in ``env``'s chain is an instance of the class named by (module, qualname)."""
    while True:
        if any((klass.__module__, klass.__qualname__) == class_key for klass in type(env).__mro__):
            return True
        if not isinstance(env, gym.Wrapper):
            return False
        env = env.env


def serve(remote: Connection, env: gym.Env) -> None:
    """Answer the parent's commands until it sends ``close`` or goes away."""
    reset_info: dict[str, Any] = {}
    while True:
        try:
            cmd, data = remote.recv()
        except (EOFError, KeyboardInterrupt):
            break
        if cmd == "step":
            observation, reward, terminated, truncated, info = env.step(data)
            done = terminated or truncated
            info["TimeLimit.truncated"] = truncated and not terminated
            if done:
                info["terminal_observation"] = observation
                observation, reset_info = env.reset()
            remote.send((observation, reward, done, info, reset_info))
        elif cmd == "reset":
            maybe_options = {"options": data[1]} if data[1] else {}
            remote.send(env.reset(seed=data[0], **maybe_options))
        elif cmd == "render":
            remote.send(env.render())
        elif cmd == "close":
            env.close()
            remote.close()
            break
        elif cmd == "get_spaces":
            remote.send((env.observation_space, env.action_space))
        elif cmd == "env_method":
            remote.send(env.get_wrapper_attr(data[0])(*data[1], **data[2]))
        elif cmd == "get_attr":
            remote.send(env.get_wrapper_attr(data))
        elif cmd == "has_attr":
            try:
                env.get_wrapper_attr(data)
                remote.send(True)
            except AttributeError:
                remote.send(False)
        elif cmd == "set_attr":
            remote.send(setattr(env, data[0], data[1]))
        elif cmd == "is_wrapped":
            remote.send(_is_wrapped(env, tuple(data)))
        else:
            raise NotImplementedError(f"`{cmd}` is not implemented in the worker")


def main(fd: int) -> None:
    """Entry point of a worker process: ``fd`` is its end of the socket pair."""
    import cloudpickle

    remote = Connection(fd)
    sys.path[:] = remote.recv()
    env = cloudpickle.loads(remote.recv())()
    serve(remote, env)
