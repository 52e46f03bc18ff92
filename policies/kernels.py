"""The refine-gate and GRU recurrences over a whole sequence: a compiled CPU kernel where available, else pure torch;
and the loader that builds every compiled extension of the package.

``refine_recurrence`` (R/UR-LSTM) and ``gru_recurrence`` (GRU and UR-GRU, ``csrc/gru.cpp``, built into the same
extension and loaded with it) are the entry points the cores call; what follows describes the first, and the
second is built the same way around ``recurrence.gru_step_loop``. The gru/ugru cores use ``gru_recurrence`` only
where it is compiled (torch's CPU GRU steps through composite ops and is slow) and torch's nn.GRU elsewhere.
The pure-torch path of ``refine_recurrence`` is the plain loop of
``recurrence.step_loop`` over ``gates.refine_cell`` (autograd through the loop). The compiled path
(``csrc/refine.cpp``) fuses each step's elementwise work into one loop next to one matrix product, and has a
hand-written backward pass whose recurrent weight gradient is one matrix product over all steps. It must match the
pure-torch path, special values (NaN, +-inf) included (tests/test_kernels.py).

The compiled path serves CPU float32/float64 tensors. CUDA tensors go to the Triton kernels of
``policies.triton_refine`` once they pass a one-time self-check per device and dtype (triton is the optional extra
``urgate[gpu]``). Elsewhere (other dtypes, no triton, a kernel that cannot be built or fails its self-check) the
pure-torch path runs after one warning that says why. ``URGATE_DISABLE_KERNEL=1`` in the environment forces the
pure-torch path silently.

``CompiledExtension`` builds a named set of sources from ``csrc/`` with torch's C++ extension loader and ninja on
first use and caches the library under ``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``) in a
folder named by the torch version and a hash of everything that went into the build, so two virtualenvs with
different torch builds, or two checkouts with different sources, never load each other's library. Processes that
start together build once: the builder holds an advisory file lock (``fcntl.flock``) that the operating system
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
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from .gates import gru_cell, refine_cell, refine_gru_cell
from .recurrence import gru_step_loop, step_loop

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent first builds then rely on torch's own lock file
    fcntl = None

DISABLE_ENV = "URGATE_DISABLE_KERNEL"
CSRC = Path(__file__).with_name("csrc")
# How long a process waits for another one's build before it falls back: a build takes 15-60 s, several minutes
# on a loaded machine; a longer wait means the builder is stuck (a dead builder releases the lock at once).
BUILD_WAIT_S = 300.0
# ATen's vector types (and the SLEEF exp/tanh that libtorch exports) at the widest width measured to pay here:
# AVX2 on any x86 CPU where torch itself dispatches to AVX2 or AVX-512 (AVX-512 measured no faster); elsewhere
# the generic, scalar build.
_AVX2_FLAGS = ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
_STAMP = "urgate-built"  # written into a build folder once its library loaded: the folder is complete
_log = logging.getLogger(__name__)


def refine_recurrence_reference(
    xproj: torch.Tensor,
    w_hh: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    resets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pure-torch refine recurrence: ``(out (T, B, H), h_T, c_T)``; see ``refine_recurrence``."""
    out, h, c, _ = step_loop(refine_cell, xproj, w_hh, h0, c0, resets)
    return out, h, c


def kernel_disabled() -> bool:
    """True when the user forces the pure-torch path with ``URGATE_DISABLE_KERNEL=1`` (read at every call)."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no")


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
    """Hold the exclusive advisory lock on ``path``, waiting at most ``wait_s`` seconds for its holder.

    The lock dies with the process that holds it, however it ends. The holder's pid is written into the file, for
    the message of a waiter that gives up.
    """
    if fcntl is None:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not announced:
                    announced = True
                    _log.warning("urgate: waiting for another process that is building %s", path.stem)
                if time.monotonic() >= deadline:
                    owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                    raise BuildWaitTimeout(
                        f"waited {wait_s:g} s for another process (pid {owner}) that holds the build lock {path}"
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


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
    :param cpu_flavour: compile the host code for AVX2 where torch itself runs AVX2 or AVX-512 code (else for the
        generic CPU); False compiles without CPU-specific flags
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
        cpu_flavour: bool = True,
    ) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"extension name must be lower-case letters, digits and _, got {name!r}")
        self.name = name
        self.sources = tuple(Path(source_dir) / s for s in sources)
        self.description = description
        self.source_dir = Path(source_dir)
        self.extra_cflags = list(extra_cflags)
        self.extra_cuda_cflags = list(extra_cuda_cflags)
        self.cpu_flavour = cpu_flavour
        self.loaded = False
        self.error: str | None = None  # why it is unavailable in this process, once known
        self._lock = threading.Lock()

    def _cflags(self) -> tuple[str, list[str]]:
        avx2 = self.cpu_flavour and torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
        flavour = "avx2" if avx2 else "generic"
        return flavour, ["-O3", *(_AVX2_FLAGS if avx2 else []), *self.extra_cflags]

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


# One extension: the refine LSTM and the GRU / refine GRU kernels (each file registers its ops in urgate's namespace).
REFINE = CompiledExtension("refine", ["refine.cpp", "gru.cpp"], description="refine-gate and GRU CPU kernels")
_warned = False


def kernel_available() -> bool:
    """Whether the compiled refine kernel is usable in this process (builds it on first call)."""
    return not kernel_disabled() and REFINE.load()


def _warn_fallback(reason: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"urgate: refine-gate cores run the slower pure-torch recurrence, gru/ugru nn.GRU's CPU forward ({reason}); "
            f"set {DISABLE_ENV}=1 to choose that path explicitly and silence this warning",
            RuntimeWarning,
            stacklevel=3,
        )


class CompiledRecurrence(torch.autograd.Function):
    """Autograd wrapper of a compiled LSTM-state kernel's forward and backward passes (first-order gradients only).

    ``forward_op(*args, xproj, w_hh, h0, c0, resets, save)`` returns ``(out, h, c, acts, hprev, cprev, tanh_c)``
    and ``backward_op(*args, grad_out, grad_h, grad_c, w_hh, acts, cprev, tanh_c, resets)`` returns
    ``(d_xproj, dh0, dc0)``; ``args`` are the kernel's leading options (none for the refine kernel, the kind and
    chunk size for the ordered one).
    """

    @staticmethod
    def forward(ctx, forward_op, backward_op, args, xproj, w_hh, h0, c0, resets):
        out, h, c, acts, hprev, cprev, tanhc = forward_op(*args, xproj, w_hh, h0, c0, resets, True)
        ctx.backward_op, ctx.args = backward_op, args
        ctx.save_for_backward(w_hh, acts, hprev, cprev, tanhc, resets)
        return out, h, c

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_h, grad_c):
        w_hh, acts, hprev, cprev, tanhc, resets = ctx.saved_tensors
        d_gates, dh0, dc0 = ctx.backward_op(*ctx.args, grad_out, grad_h, grad_c, w_hh, acts, cprev, tanhc, resets)
        # The recurrent weight gradient of all steps as one product: sum_t dG_t^T h_{t-1}.
        d_w = d_gates.flatten(0, 1).t().mm(hprev.flatten(0, 1)) if ctx.needs_input_grad[4] else None
        return None, None, None, d_gates, d_w, dh0, dc0, None


def _kernel_reason(
    xproj: torch.Tensor, tensors: tuple[torch.Tensor, ...], extension: CompiledExtension | None = None
) -> str | None:
    """Why the compiled kernel (of ``extension``, the refine extension by default) cannot take these tensors, or None
    when it can."""
    extension = extension or REFINE
    if xproj.device.type != "cpu":
        return f"the compiled kernel is CPU-only, got device {xproj.device.type}"
    if xproj.dtype not in (torch.float32, torch.float64):
        return f"the compiled kernel takes float32/float64, got {xproj.dtype}"
    if any(t.dtype != xproj.dtype for t in tensors):
        return "mixed dtypes"
    if not extension.load():
        return f"the compiled kernel is unavailable: {extension.error}"
    return None


def refine_recurrence(
    xproj: torch.Tensor,
    w_hh: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    resets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Refine-gate LSTM recurrence for one layer.

    :param xproj: ``W_ih x_t + b_ih + b_hh`` for every step, (T, B, 4H), blocks ordered (r, f, u, o)
    :param w_hh: recurrent weights (4H, H)
    :param h0: initial hidden state (B, H)
    :param c0: initial cell state (B, H)
    :param resets: (T, B), 1 where both states are zeroed before step t; None for no resets
    :return: ``(out, h_T, c_T)``
    """
    if xproj.device.type == "cuda" and not kernel_disabled():
        from . import triton_refine  # imports triton only when CUDA tensors arrive

        reason = triton_refine.unavailable_reason(xproj, (w_hh, h0, c0))
        if reason is None:
            return triton_refine.refine_recurrence_triton(xproj, w_hh, h0, c0, resets)
        _warn_fallback(reason)
        return refine_recurrence_reference(xproj, w_hh, h0, c0, resets)
    return _dispatch(
        lambda *a: refine_recurrence_reference(*a),
        lambda *a: CompiledRecurrence.apply(torch.ops.urgate.refine_forward, torch.ops.urgate.refine_backward, (), *a),
        lambda *a: torch.ops.urgate.refine_forward(*a, False)[:3],
        (xproj, w_hh, h0, c0),
        resets,
    )


def _dispatch(
    reference,
    train,
    inference,
    tensors: tuple[torch.Tensor, ...],
    resets: torch.Tensor | None,
    *,
    extension: CompiledExtension | None = None,
    warn=None,
):
    """The one rule of every compiled recurrence: the pure-torch ``reference`` when the kernel is disabled (silently)
    or cannot take these tensors (after the one warning), else the compiled autograd pass ``train`` when a gradient
    is needed and the compiled ``inference`` pass (nothing saved for backward) when not.

    :param tensors: the recurrence's tensor arguments, ``xproj`` first
    :param resets: (T, B) or None, passed last
    :param extension: the extension the kernel is in (default: the refine/GRU one)
    :param warn: the one-warning function for its cores (default: the refine/GRU cores')
    """
    if kernel_disabled():
        return reference(*tensors, resets)
    reason = _kernel_reason(tensors[0], tensors[1:], extension)
    if reason is not None:
        (warn or _warn_fallback)(reason)
        return reference(*tensors, resets)
    rs = resets.to(tensors[0].dtype) if resets is not None else tensors[0].new_empty(0)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return train(*tensors, rs)
    return tuple(inference(*tensors, rs))


def gru_recurrence_reference(
    xproj: torch.Tensor,
    w_hh: torch.Tensor,
    b_hh: torch.Tensor,
    h0: torch.Tensor,
    resets: torch.Tensor | None = None,
    *,
    refine: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure-torch GRU / refine-GRU recurrence: ``(out (T, B, H), h_T)``; see ``gru_recurrence``."""
    out, h, _ = gru_step_loop(refine_gru_cell if refine else gru_cell, xproj, w_hh, b_hh, h0, resets)
    return out, h


class GruRecurrence(torch.autograd.Function):
    """Autograd wrapper of the compiled GRU / refine-GRU forward and backward passes (first-order gradients only)."""

    @staticmethod
    def forward(ctx, refine, xproj, w_hh, b_hh, h0, resets):
        out, h, acts, hprev, a_n = torch.ops.urgate.gru_forward(xproj, w_hh, b_hh, h0, resets, refine, True)
        ctx.refine = refine
        ctx.save_for_backward(w_hh, acts, hprev, a_n, resets)
        return out, h

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_h):
        w_hh, acts, hprev, a_n, resets = ctx.saved_tensors
        d_x, d_a, dh0 = torch.ops.urgate.gru_backward(grad_out, grad_h, w_hh, acts, a_n, hprev, resets, ctx.refine)
        d_flat = d_a.flatten(0, 1)
        # The recurrent weight and bias gradients of all steps as one product and one sum.
        d_w = d_flat.t().mm(hprev.flatten(0, 1)) if ctx.needs_input_grad[2] else None
        d_b = d_flat.sum(0) if ctx.needs_input_grad[3] else None
        return None, d_x, d_w, d_b, dh0, None


def gru_recurrence(
    xproj: torch.Tensor,
    w_hh: torch.Tensor,
    b_hh: torch.Tensor,
    h0: torch.Tensor,
    resets: torch.Tensor | None = None,
    *,
    refine: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRU (``refine=False``, nn.GRU's cell) or refine-gate GRU recurrence for one layer: compiled on CPU, else
    pure torch after the one warning.

    :param xproj: ``W_ih x_t + b_ih`` for every step, (T, B, 3H) ordered (r, z, n), or (T, B, 4H) ordered
        (r, z, n, refine) with ``refine``
    :param w_hh: recurrent weights (3H or 4H, H)
    :param b_hh: recurrent bias (3H or 4H,)
    :param h0: initial hidden state (B, H)
    :param resets: (T, B), 1 where the state is zeroed before step t; None for no resets
    :param refine: whether the update gate is refined (UR-GRU)
    :return: ``(out, h_T)``
    """
    return _dispatch(
        lambda *a: gru_recurrence_reference(*a, refine=refine),
        lambda *a: GruRecurrence.apply(refine, *a),
        lambda *a: torch.ops.urgate.gru_forward(*a, refine, False)[:2],
        (xproj, w_hh, b_hh, h0),
        resets,
    )


def compiled_kernel_takes(x: torch.Tensor) -> bool:
    """Whether the compiled kernel is enabled, built and able to take tensors like ``x`` (CPU, float32/64); when it
    is not for a CPU tensor (and not disabled), the one fallback warning says why."""
    if kernel_disabled():
        return False
    reason = _kernel_reason(x, ())
    if reason is not None and x.device.type == "cpu":
        _warn_fallback(reason)
    return reason is None
