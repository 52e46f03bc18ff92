"""A subprocess VecEnv whose children import neither torch nor stable-baselines3.

SB3's ``SubprocVecEnv`` runs its worker function from SB3 in each child, and multiprocessing's spawn and forkserver
methods import the parent's main script there too (``run_rl.py``: agents, policies, torch): each child then holds
~210 MB of libraries it never uses. ``LeanSubprocVecEnv`` starts each child as a fresh interpreter running
``envs.env_worker`` (gymnasium, numpy, cloudpickle and the env's own modules), and is otherwise SB3's
``SubprocVecEnv``: it inherits every method but the start and the end of the processes, so stepping, auto-reset,
``terminal_observation``, ``TimeLimit.truncated``, seeds, options, render, ``env_method``, ``get_attr`` and
``set_attr`` behave exactly as SB3's.

The price is a second copy of SB3's child-side protocol (``envs.env_worker``) and of the attributes
``SubprocVecEnv.__init__`` sets (``remotes``, ``processes``, ``waiting``, ``closed``), as SB3 offers no public way to
start its children differently: hence the version bounds on stable-baselines3 in ``pyproject.toml``, and
``tests/test_subproc.py``, which checks its trajectories and VecEnv methods against SB3's DummyVecEnv.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection

import cloudpickle
import gymnasium as gym
from stable_baselines3.common.vec_env import SubprocVecEnv, VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices


class LeanSubprocVecEnv(SubprocVecEnv):
    """SB3's ``SubprocVecEnv`` with children that run ``envs.env_worker`` in a fresh interpreter.

    Episode statistics come from SB3's ``VecMonitor`` around it (``envs.make_vec_env`` adds it), not from a
    ``Monitor`` in each child, which would import SB3 there. A child gets the parent's ``sys.path``, and exits when
    the parent closes it or goes away. POSIX only (the socket is passed as an inherited file descriptor).

    :param env_fns: env factories, one per child; cloudpickled, so closures and lambdas work, and every module they
        refer to is imported in the child
    """

    def __init__(self, env_fns: list[Callable[[], gym.Env]]) -> None:
        self.waiting = False
        self.closed = False
        self.remotes, self.processes = [], []
        worker_code = "import envs.env_worker as w, sys; w.main(int(sys.argv[1]))"
        # The parent's import path from the first import on, so that the child finds the same ``envs`` package.
        environ = dict(os.environ, PYTHONPATH=os.pathsep.join(path for path in sys.path if path))
        for env_fn in env_fns:
            ours, theirs = socket.socketpair()
            command = [sys.executable, "-c", worker_code, str(theirs.fileno())]
            process = subprocess.Popen(command, pass_fds=[theirs.fileno()], env=environ)
            theirs.close()
            remote = Connection(ours.detach())
            remote.send(list(sys.path))
            remote.send(cloudpickle.dumps(env_fn))
            self.remotes.append(remote)
            self.processes.append(process)
        self.remotes[0].send(("get_spaces", None))
        observation_space, action_space = self.remotes[0].recv()
        VecEnv.__init__(self, len(env_fns), observation_space, action_space)

    def close(self) -> None:
        if self.closed:
            return
        if self.waiting:
            for remote in self.remotes:
                remote.recv()
        for remote in self.remotes:
            remote.send(("close", None))
        for process in self.processes:
            process.wait()
        for remote in self.remotes:
            remote.close()
        self.closed = True

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """Whether the children's envs are wrapped in ``wrapper_class`` (asked by name: the class is not sent)."""
        remotes = self._get_target_remotes(indices)
        for remote in remotes:
            remote.send(("is_wrapped", (wrapper_class.__module__, wrapper_class.__qualname__)))
        return [remote.recv() for remote in remotes]
