"""The build system of the package's compiled extensions (the kernels are in ``policies.kernels`` and
``policies.ordered_kernels``).

``CompiledExtension`` builds a named set of sources from ``csrc/`` with torch's C++ extension loader and ninja on
first use and caches the library under ``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``) in a
folder named by the torch version and a hash of everything that went into the build, so two virtualenvs with
different torch builds, or two checkouts with different sources, never load each other's library. Processes that
start together build once: the builder holds an advisory file lock (``policies.locks``, ``fcntl.flock``) that the operating system
releases when the holder dies, so a killed build leaves nothing that blocks a later process (which rebuilds from
scratch), and a waiter gives up after ``BUILD_WAIT_S`` seconds and falls back instead of waiting forever (torch's
own lock file waits forever on a build that was killed).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from .locks import LockHeld, exclusive_lock

CSRC = Path(__file__).with_name("csrc")
# How long a process waits for another one's build before it falls back: a build takes 15-60 s, several minutes
# on a loaded machine; a longer wait means the builder is stuck (a dead builder releases the lock at once).
BUILD_WAIT_S = 300.0
# ATen's vector types (and the SLEEF exp/tanh that libtorch exports) at the width torch itself dispatches to on
# this CPU: AVX-512 (16 floats), AVX2 (8), else the generic, scalar build. The refine, GRU and bag kernels give
# the same bits in the AVX2 and AVX-512 flavours (each sum runs in the same order; three rollouts and updates of a
# MiniGrid model with ur and urgru ended with equal parameters), the ordered-gate kernel the same values to float
# rounding. AVX-512 took 0.60-0.63x AVX2's time for the refine kernel's forward and backward at training sizes
# (`benchmarks/kernel_ab.py --against HEAD --base-flavour avx2`) and no flavour was slower for any core.
FLAVOUR_FLAGS = {
    "avx512": [
        "-mavx512f",
        "-mavx512bw",
        "-mavx512vl",
        "-mavx512dq",
        "-mfma",
        "-mf16c",
        "-DCPU_CAPABILITY=AVX512",
        "-DCPU_CAPABILITY_AVX512",
    ],
    "avx2": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
    "generic": [],
}


def machine_flavour() -> str:
    """The widest flavour of ``FLAVOUR_FLAGS`` that torch itself runs on this CPU."""
    return {"AVX512": "avx512", "AVX2": "avx2"}.get(torch.backends.cpu.get_cpu_capability(), "generic")


_STAMP = "urgate-built"  # written into a build folder once its library loaded: the folder is complete
_log = logging.getLogger(__name__)


def _ensure_ninja_on_path() -> None:
    # A venv's python run without activating the venv does not have the venv's ninja on PATH.
    if shutil.which("ninja") is None:
        try:
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        except (ImportError, AttributeError):
            pass


def _one_line(error: BaseException) -> str:
    # A failed build's message is the whole compiler log ending in "ninja: build stopped": the compiler's first
    # error line says more than that last line.
    lines = str(error).strip().splitlines() or [""]
    line = next((x for x in lines if "error:" in x), lines[-1])
    return f"{type(error).__name__}: {line.strip()}"


class BuildWaitTimeout(RuntimeError):
    """Another process held the build lock for longer than the wait allowed."""


@contextlib.contextmanager
def _build_lock(path: Path, wait_s: float) -> Iterator[None]:
    """Hold the build lock on ``path`` (``policies.locks``), waiting at most ``wait_s`` seconds for its holder (on
    Windows, without advisory locks, concurrent first builds rely on torch's own lock file)."""

    def announce() -> None:
        _log.warning("urgate: waiting for another process that is building %s", path.stem)

    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(exclusive_lock(path, wait_s, on_wait=announce))
        except LockHeld as held:
            raise BuildWaitTimeout(
                f"waited {wait_s:g} s for another process (pid {held.pid}) that holds the build lock {path}"
            ) from None
        yield


class CompiledExtension:
    """A C++ (or CUDA) extension of the package, built from ``sources`` on first use and cached between processes.

    Its ops register themselves in ``torch.ops.urgate`` (``TORCH_LIBRARY_FRAGMENT(urgate, m)``, so that several
    extensions share the namespace). ``load`` builds or loads it at most once per process and never raises: when it
    cannot, ``error`` says why, and callers take their pure-torch path.

    :param name: short name of the extension (``"refine"``); the library is ``urgate_<name>_<flavour>_<key>``
    :param sources: file names in ``source_dir`` to compile; every header there (``*.h``, ``*.cuh``) counts
        towards the cache key too, as the sources may include it
    :param description: what the extension is, for the one log line of a first build
    :param source_dir: where the sources and headers are (the package's ``csrc/`` by default)
    :param extra_cflags: host compiler flags beyond ``-O3`` and the CPU flavour's
    :param extra_cuda_cflags: nvcc flags, for CUDA sources
    :param cpu_flavour: True compiles the host code for the vector width torch itself runs on this CPU
        (``machine_flavour``: AVX-512, AVX2 or generic); False compiles without CPU-specific flags; a key of
        ``FLAVOUR_FLAGS`` chooses that flavour (benchmarks compare them)
    """

    def __init__(
        self,
        name: str,
        sources: Sequence[str],
        *,
        description: str,
        source_dir: Path = CSRC,
        extra_cflags: Sequence[str] = (),
        extra_cuda_cflags: Sequence[str] = (),
        cpu_flavour: bool | str = True,
    ) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"extension name must be lower-case letters, digits and _, got {name!r}")
        self.name = name
        self.sources = tuple(Path(source_dir) / s for s in sources)
        self.description = description
        self.source_dir = Path(source_dir)
        self.extra_cflags = list(extra_cflags)
        self.extra_cuda_cflags = list(extra_cuda_cflags)
        if isinstance(cpu_flavour, str) and cpu_flavour not in FLAVOUR_FLAGS:
            raise ValueError(f"unknown CPU flavour {cpu_flavour!r}; valid: {', '.join(FLAVOUR_FLAGS)}")
        # The CPU flavour this extension is built for (a key of FLAVOUR_FLAGS), fixed for the process.
        if isinstance(cpu_flavour, str):
            self.flavour = cpu_flavour
        else:
            self.flavour = machine_flavour() if cpu_flavour else "generic"
        self.loaded = False
        self.error: str | None = None  # why it is unavailable in this process, once known
        self._lock = threading.Lock()

    def _cflags(self) -> tuple[str, list[str]]:
        return self.flavour, ["-O3", *FLAVOUR_FLAGS[self.flavour], *self.extra_cflags]

    def library_name(self) -> str:
        """``urgate_<name>_<flavour>_torch<version>_<hash>``: the hash covers torch's version and build, the
        Python ABI, the machine, the flags and every source and header byte."""
        flavour, cflags = self._cflags()
        key = hashlib.sha256()
        build = (torch.__version__, torch.version.git_version, torch.version.cuda, torch.version.hip)
        for part in (
            *map(str, build),
            sys.implementation.cache_tag,
            os.uname().machine if hasattr(os, "uname") else "",
        ):
            key.update(part.encode() + b"\0")
        key.update(repr((cflags, self.extra_cuda_cflags)).encode())
        headers = sorted(p for pattern in ("*.h", "*.cuh") for p in self.source_dir.glob(pattern))
        for path in (*self.sources, *headers):
            key.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        version = re.sub(r"[^0-9a-zA-Z]+", "_", torch.__version__).strip("_")
        return f"urgate_{self.name}_{flavour}_torch{version}_{key.hexdigest()[:12]}"

    def build_directory(self) -> Path:
        """The folder this process's build lives in (not created)."""
        from torch.utils import cpp_extension

        root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
        return Path(root) / self.library_name()

    def load(self) -> bool:
        """Load the cached library, or build it first; True when its ops are registered in this process."""
        if self.loaded or self.error is not None:
            return self.loaded
        with self._lock:
            if not (self.loaded or self.error is not None):
                try:
                    self._load()
                    self.loaded = True
                except Exception as e:  # noqa: BLE001 - any build or load failure means: use the pure-torch path
                    self.error = str(e) if isinstance(e, BuildWaitTimeout) else f"the build failed: {_one_line(e)}"
        return self.loaded

    def _load(self) -> None:
        from torch.utils import cpp_extension

        build_dir = self.build_directory()
        library = build_dir / f"{build_dir.name}{cpp_extension.LIB_EXT}"
        if not (build_dir / _STAMP).exists():
            build_dir.parent.mkdir(parents=True, exist_ok=True)
            with _build_lock(build_dir.with_name(build_dir.name + ".lock"), BUILD_WAIT_S):
                if not (build_dir / _STAMP).exists():  # else another process built it while this one waited
                    self._build(build_dir)
                    return  # torch's loader loaded the library
        torch.ops.load_library(str(library))

    def _build(self, build_dir: Path) -> None:
        """Build from scratch (the caller holds the build lock); a folder without the stamp is a killed build's."""
        from torch.utils import cpp_extension

        shutil.rmtree(build_dir, ignore_errors=True)  # also removes torch's own lock file that a killed build left
        build_dir.mkdir(parents=True)
        _log.warning("urgate: building the %s (once per machine, 15-60 s; cached in %s)", self.description, build_dir)
        _ensure_ninja_on_path()
        _, cflags = self._cflags()
        cpp_extension.load(
            name=build_dir.name,
            sources=[str(s) for s in self.sources],
            extra_cflags=cflags,
            extra_cuda_cflags=self.extra_cuda_cflags or None,
            build_directory=str(build_dir),
            is_python_module=False,
            verbose=False,
        )
        (build_dir / _STAMP).write_text(f"torch {torch.__version__}\n")
