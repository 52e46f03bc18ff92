"""The compiled refine-gate recurrences against their plain definitions, and the fallback rules around them.

The references are ``policies.recurrence.step_loop`` over ``policies.gates.refine_cell``
(``recurrence.refine_recurrence_reference``) and ``gru_step_loop`` over ``gru_cell`` / ``refine_gru_cell``
(``recurrence.gru_recurrence_reference``), differentiated by autograd. The extension loader
(``policies.extensions``) is tested at the end: cache key, concurrent first builds, killed and stuck builders.
"""

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from policies import extensions, kernels, make_core
from policies.kernels import DISABLE_ENV, gru_recurrence, refine_recurrence
from policies.recurrence import gru_recurrence_reference, refine_recurrence_reference

ROOT = Path(__file__).resolve().parents[1]
TOL = {torch.float64: dict(atol=1e-12, rtol=1e-10), torch.float32: dict(atol=2e-5, rtol=1e-4)}


@pytest.fixture
def compiled(monkeypatch):
    """The compiled path, which must build on a machine with a C++ compiler (built once per test process)."""
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    assert kernels.kernel_available(), f"compiled refine kernel is unavailable: {kernels.REFINE.error}"


@pytest.fixture(params=["compiled", "pure_torch"])
def path(request, monkeypatch):
    if request.param == "compiled":
        request.getfixturevalue("compiled")
    else:
        monkeypatch.setenv(DISABLE_ENV, "1")
    return request.param


def make_inputs(T, B, H, dtype, resets="none", seed=0):
    gen = torch.Generator().manual_seed(seed)
    xproj = (torch.randn(T, B, 4 * H, generator=gen, dtype=torch.float64) * 1.5).to(dtype).requires_grad_()
    w_hh = (torch.randn(4 * H, H, generator=gen, dtype=torch.float64) / H**0.5).to(dtype).requires_grad_()
    h0 = torch.randn(B, H, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    c0 = torch.randn(B, H, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    if resets == "none":
        rs = None
    else:
        rs = (torch.rand(T, B, generator=gen) < 0.3).to(dtype)
        if resets == "start":
            rs[0] = 1.0
    return xproj, w_hh, h0, c0, rs


def outputs_and_grads(fn, xproj, w_hh, h0, c0, rs, seed=1):
    out, h, c = fn(xproj, w_hh, h0, c0, rs)
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t) for t in (out, h, c)]
    loss = sum((t * w).sum() for t, w in zip((out, h, c), weights, strict=True))
    grads = torch.autograd.grad(loss, (xproj, w_hh, h0, c0))
    return (out, h, c), grads


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("resets", ["none", "inner", "start"])
# B up to 16 runs small_gemm.h's per-step product (row blocks of 4 and tails of 1-3 rows, partial vectors for H = 5
# or 13), B = 17 runs at::mm_out with 8-float vectors and small_gemm with AVX-512 (up to 128 rows), B = 129 at::mm_out.
@pytest.mark.parametrize(
    "T,B,H",
    [(1, 1, 1), (1, 3, 8), (7, 4, 5), (12, 3, 13), (20, 2, 16), (6, 9, 13), (5, 16, 7), (4, 17, 6), (3, 129, 5)],
)
def test_compiled_matches_reference(compiled, dtype, resets, T, B, H, monkeypatch):
    args = make_inputs(T, B, H, dtype, resets)
    ref_outs, ref_grads = outputs_and_grads(refine_recurrence_reference, *args)

    # Make sure the compiled path, not the reference, answers refine_recurrence.
    def forbidden(*a, **k):
        raise AssertionError("refine_recurrence fell back to the pure-torch path")

    monkeypatch.setattr(kernels, "refine_recurrence_reference", forbidden)
    outs, grads = outputs_and_grads(refine_recurrence, *args)
    for name, a, b in zip(("out", "h_T", "c_T"), outs, ref_outs, strict=True):
        assert a.dtype == dtype and a.shape == b.shape, name
        torch.testing.assert_close(a, b, **TOL[dtype], msg=f"{name} differs")
    for name, a, b in zip(("xproj", "w_hh", "h0", "c0"), grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, **TOL[dtype], msg=f"gradient of {name} differs")


def assert_same_values(got, want, dtype, what):
    """Close within TOL where finite, and NaN and +-inf at exactly the same places."""
    for name, a, b in zip(what, got, want, strict=True):
        torch.testing.assert_close(a, b, **TOL[dtype], equal_nan=True, msg=lambda m, name=name: f"{name}: {m}")


def with_special(tensor, value, positions):
    t = tensor.detach().clone()
    for index in positions:
        t[index] = value
    return t.requires_grad_()


SPECIALS = ["nan", "inf", "-inf", "huge", "-huge"]


def special_value(name, dtype):
    # "huge": finite, but its exp overflows (and so does 2x its exp for tanh's 2 sigma(2a) - 1).
    return {"huge": 1, "-huge": -1}[name] * torch.finfo(dtype).max / 2 if "huge" in name else float(name)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("value", SPECIALS)
@pytest.mark.parametrize("resets", ["none", "inner"])
def test_compiled_matches_reference_on_special_pre_activations(compiled, dtype, value, resets):
    # One special pre-activation in each gate block (r, f, u, o), at different steps and rows. ATen's AVX2 float
    # exp clamps a NaN to a finite number: the kernel used to return sigma(NaN) = 0 and tanh(NaN) = -1.
    T, B, H = 7, 3, 5
    xproj, w_hh, h0, c0, rs = make_inputs(T, B, H, dtype, resets, seed=4)
    xproj = with_special(xproj, special_value(value, dtype), [(1 + k, k % B, k * H + k) for k in range(4)])
    ref_outs, ref_grads = outputs_and_grads(refine_recurrence_reference, xproj, w_hh, h0, c0, rs)
    outs, grads = outputs_and_grads(refine_recurrence, xproj, w_hh, h0, c0, rs)
    if value == "nan":
        assert ref_outs[0].isnan().any() and ref_grads[0].isnan().any()  # the case tests propagation
    assert_same_values(outs, ref_outs, dtype, ("out", "h_T", "c_T"))
    assert_same_values(grads, ref_grads, dtype, ("d xproj", "d w_hh", "d h0", "d c0"))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("value", SPECIALS)
@pytest.mark.parametrize("where", ["w_hh", "h0", "c0"])
def test_compiled_matches_reference_on_special_weights_and_states(compiled, dtype, value, where):
    T, B, H = 6, 3, 5
    args = dict(zip(("xproj", "w_hh", "h0", "c0", "rs"), make_inputs(T, B, H, dtype, "inner", seed=5), strict=True))
    args[where] = with_special(args[where], special_value(value, dtype), [(1, 2)])
    ref_outs, ref_grads = outputs_and_grads(refine_recurrence_reference, *args.values())
    outs, grads = outputs_and_grads(refine_recurrence, *args.values())
    assert_same_values(outs, ref_outs, dtype, ("out", "h_T", "c_T"))
    if where == "c0" and value != "nan":
        # An infinite (or huge) cell state makes dL/dg = dc (c_prev - u) infinite (huge). The kernel applies the
        # chain rule in factored form, autograd term by term (inf - inf = NaN where the kernel gets +-inf), and
        # float32's approximate tanh has an absolute error that a huge gradient scales up: compare which entries
        # are finite, and the finite ones relative to the gradient's size.
        for name, a, b in zip(("d xproj", "d w_hh", "d h0", "d c0"), grads, ref_grads, strict=True):
            assert torch.equal(a.isfinite(), b.isfinite()), name
            finite = b[b.isfinite()]
            scale = max([1.0, *finite.abs().flatten().tolist()])
            torch.testing.assert_close(a[a.isfinite()], finite, atol=TOL[dtype]["atol"] * scale, rtol=0)
    else:
        assert_same_values(grads, ref_grads, dtype, ("d xproj", "d w_hh", "d h0", "d c0"))


@pytest.mark.parametrize("resets", ["none", "inner", "start"])
def test_gradcheck(path, resets):
    xproj, w_hh, h0, c0, rs = make_inputs(5, 3, 4, torch.float64, resets, seed=2)
    assert torch.autograd.gradcheck(lambda *a: refine_recurrence(*a, rs), (xproj, w_hh, h0, c0))


def test_gradcheck_compiled_partial_inputs(compiled):
    # Only some inputs need gradients (e.g. a frozen recurrent matrix): the others must come back as None.
    xproj, w_hh, h0, c0, rs = make_inputs(4, 2, 3, torch.float64, "inner", seed=3)
    w_hh = w_hh.detach()
    h0 = h0.detach()
    assert torch.autograd.gradcheck(lambda x, c: refine_recurrence(x, w_hh, h0, c, rs), (xproj, c0))


def test_compiled_inference_path_equals_training_path(compiled):
    args = make_inputs(9, 4, 6, torch.float32, "inner")
    train = refine_recurrence(*args)
    assert all(t.requires_grad for t in train)
    with torch.no_grad():
        infer = refine_recurrence(*args)
    assert not any(t.requires_grad for t in infer)
    for a, b in zip(train, infer, strict=True):
        torch.testing.assert_close(a.detach(), b, atol=0, rtol=0)


def test_compiled_accepts_non_contiguous_inputs(compiled):
    xproj, w_hh, h0, c0, rs = make_inputs(6, 3, 5, torch.float64, "inner")
    x_nc = xproj.detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
    w_nc = w_hh.detach().t().contiguous().t().requires_grad_()
    assert not x_nc.is_contiguous() and not w_nc.is_contiguous()
    ref_outs, ref_grads = outputs_and_grads(refine_recurrence_reference, xproj, w_hh, h0, c0, rs)
    outs, grads = outputs_and_grads(refine_recurrence, x_nc, w_nc, h0, c0, rs)
    for a, b in zip((*outs, *grads), (*ref_outs, *ref_grads), strict=True):
        torch.testing.assert_close(a, b, **TOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", ["r", "ur", "urgru", "gru", "ugru"])
def test_multilayer_core_compiled_equals_pure_torch(name, dtype, monkeypatch):
    torch.manual_seed(0)
    core = make_core(name, 5, 6, num_layers=3).to(dtype)
    x = torch.randn(11, 4, 5, dtype=dtype, requires_grad=True)
    hx = tuple(torch.randn(3, 4, 6, dtype=dtype) for _ in range(2))
    starts = (torch.rand(11, 4) < 0.25).to(dtype)
    starts[0, 1] = 1.0

    def run():
        core.zero_grad(set_to_none=True)
        x.grad = None
        out, (h, c) = core(x, hx, episode_starts=starts)
        (out.sin().sum() + h.sum() + 2 * c.sum()).backward()
        return [out, h, c, x.grad] + [p.grad for p in core.parameters()]

    monkeypatch.delenv(DISABLE_ENV, raising=False)
    assert kernels.kernel_available()
    fast = run()
    monkeypatch.setenv(DISABLE_ENV, "1")
    slow = run()
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, **TOL[dtype])


# --- fallback rules -------------------------------------------------------------------------------------------


def test_unsupported_dtype_falls_back_with_one_warning(monkeypatch):
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    monkeypatch.setattr(kernels, "_warned", set())
    args = make_inputs(4, 2, 3, torch.float64, "inner")
    args = tuple(a.detach().to(torch.bfloat16) if a is not None else None for a in args)
    with pytest.warns(RuntimeWarning, match="pure-torch recurrence.*bfloat16"):
        got = refine_recurrence(*args)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = refine_recurrence(*args)  # no second warning
    want = refine_recurrence_reference(*args)
    for a, b, c in zip(got, again, want, strict=True):
        assert torch.equal(a, c) and torch.equal(b, c)


def test_one_warning_per_distinct_fallback_and_reason(monkeypatch):
    """A second reason (another dtype) or other cores falling back warn again; a repeat does not. The refine
    cores' text names only them (it is also the CUDA text: no CPU GRU in it)."""
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    monkeypatch.setattr(kernels, "_warned", set())
    args = make_inputs(4, 2, 3, torch.float64, "inner")
    half = tuple(a.detach().to(torch.float16) if a is not None else None for a in args)
    brain = tuple(a.detach().to(torch.bfloat16) if a is not None else None for a in args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        refine_recurrence(*half)
        refine_recurrence(*brain)
        refine_recurrence(*half)  # the same cores, the same reason: no second warning
        kernels.warn_fallback(kernels.GRU_FALLBACK, "got dtype torch.float16")  # other cores, that reason again
        kernels.warn_fallback(kernels.GRU_FALLBACK, "got dtype torch.float16")
    texts = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(texts) == 3, texts
    assert "float16" in texts[0] and "bfloat16" in texts[1] and texts[2].startswith("urgate: gru/ugru")
    assert texts[0].startswith(f"urgate: {kernels.REFINE_FALLBACK} (")
    assert "GRU" not in kernels.REFINE_FALLBACK and "CPU" not in kernels.REFINE_FALLBACK


def test_failed_build_falls_back_with_one_warning(monkeypatch, tmp_path):
    # A real failed build: the compiler rejects the source (no torch header is parsed, so this is quick).
    (tmp_path / "broken.cpp").write_text("this is not C++;\n")
    broken = extensions.CompiledExtension(
        "broken", ["broken.cpp"], description="broken test extension", source_dir=tmp_path
    )
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    monkeypatch.setattr(kernels, "_warned", set())
    monkeypatch.setattr(kernels, "REFINE", broken)
    assert not kernels.kernel_available()
    assert broken.error.startswith("the build failed: RuntimeError:") and "broken.cpp" in broken.error, broken.error
    args = make_inputs(5, 2, 3, torch.float64, "inner")
    with pytest.warns(RuntimeWarning, match="compiled kernel is unavailable: the build failed: RuntimeError"):
        outs, grads = outputs_and_grads(refine_recurrence, *args)
    ref_outs, ref_grads = outputs_and_grads(refine_recurrence_reference, *args)
    for a, b in zip((*outs, *grads), (*ref_outs, *ref_grads), strict=True):
        assert torch.equal(a, b)


def test_env_var_forces_pure_torch_silently(monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "1")
    monkeypatch.setattr(kernels, "_warned", set())

    class Forbidden:
        def __getattr__(self, name):
            raise AssertionError("compiled kernel used although disabled")

    monkeypatch.setattr(kernels, "REFINE", Forbidden())
    assert not kernels.kernel_available()
    args = make_inputs(5, 2, 3, torch.float32, "inner")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outs, grads = outputs_and_grads(refine_recurrence, *args)
    ref_outs, ref_grads = outputs_and_grads(refine_recurrence_reference, *args)
    for a, b in zip((*outs, *grads), (*ref_outs, *ref_grads), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("value,disabled", [("1", True), ("yes", True), ("0", False), ("", False), ("false", False)])
def test_env_var_values(monkeypatch, value, disabled):
    monkeypatch.setenv(DISABLE_ENV, value)
    assert kernels.kernel_disabled() is disabled


def test_importing_policies_builds_nothing():
    code = (
        "import policies, policies.kernels as k; "
        "import torch; assert not k.REFINE.loaded and k.REFINE.error is None; "
        "assert not hasattr(torch.ops.urgate, 'refine_forward'); print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_falls_back_and_matches_cpu(monkeypatch):
    # CUDA tensors that the Triton kernels cannot take (here: a simulated failed self-check) run pure torch.
    from policies import triton_refine

    monkeypatch.delenv(DISABLE_ENV, raising=False)
    monkeypatch.setattr(kernels, "_warned", set())
    monkeypatch.setattr(triton_refine, "unavailable_reason", lambda *a: "simulated self-check failure")
    args = make_inputs(6, 3, 4, torch.float64, "inner")
    ref_outs, ref_grads = outputs_and_grads(refine_recurrence_reference, *args)
    cuda_args = tuple(a.detach().cuda().requires_grad_(a.requires_grad) if a is not None else None for a in args)
    with pytest.warns(RuntimeWarning, match="simulated self-check failure"):
        outs, grads = outputs_and_grads(refine_recurrence, *cuda_args)
    for a, b in zip((*outs, *grads), (*ref_outs, *ref_grads), strict=True):
        torch.testing.assert_close(a.cpu(), b, **TOL[torch.float64])


# --- the loader: cache key, concurrent first builds, killed and stuck builders ---------------------------------
# These build a probe extension from a plain C++ file (no torch header), which takes about a second, in a fresh
# extensions folder; the refine kernel itself is built by the tests above.

PROBE_CPP = 'extern "C" int urgate_probe_answer() { return 42; }\n'
PROBE_RUN = """
import ctypes, json, os, signal, sys, time
from pathlib import Path
from policies import extensions

probe = extensions.CompiledExtension("probe", ["probe.cpp"], description="probe extension", source_dir=Path(sys.argv[1]))
build = extensions.CompiledExtension._build
mode = sys.argv[2]
if mode == "killed":  # die mid-build, as under SIGKILL or the OOM killer, leaving torch's lock file behind
    def killed(self, build_dir):
        build_dir.mkdir(parents=True, exist_ok=True)
        (build_dir / "lock").touch()
        os.kill(os.getpid(), signal.SIGKILL)
    extensions.CompiledExtension._build = killed
if mode == "together":  # start loading with the other process; the builder builds once the other one waits
    import logging
    go = Path(sys.argv[3])
    class Waiting(logging.Handler):  # prints as logging's last-resort handler would, and marks the wait
        def emit(self, record):
            print(record.getMessage(), file=sys.stderr, flush=True)
            if "waiting for another process" in record.getMessage():
                go.with_name("waiting").touch()
    logging.getLogger("policies.extensions").addHandler(Waiting())
    def when_the_other_waits(self, build_dir):
        deadline = time.monotonic() + 30
        while not go.with_name("waiting").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        build(self, build_dir)
    extensions.CompiledExtension._build = when_the_other_waits
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.01)
loaded = probe.load()
answer = ctypes.CDLL(str(next(probe.build_directory().glob("*.so")))).urgate_probe_answer() if loaded else None
print(json.dumps({"loaded": loaded, "error": probe.error, "answer": answer}))
"""


@pytest.fixture
def probe_dir(tmp_path, monkeypatch):
    (tmp_path / "probe.cpp").write_text(PROBE_CPP)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    return tmp_path


def run_probe(probe_dir, mode, *extra, wait=True):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TORCH_EXTENSIONS_DIR": str(probe_dir / "ext")}
    cmd = [sys.executable, "-c", PROBE_RUN, str(probe_dir), mode, *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc.communicate(timeout=120) + (proc.returncode,) if wait else proc


def probe_result(stdout):
    import json

    return json.loads(stdout.strip().splitlines()[-1])


def test_cache_is_keyed_by_torch_version_and_every_source_byte(probe_dir, monkeypatch):
    def name():
        return extensions.CompiledExtension(
            "probe", ["probe.cpp"], description="p", source_dir=probe_dir
        ).library_name()

    first = name()
    assert first == name() and first.startswith("urgate_probe_")
    assert f"torch{torch.__version__.replace('.', '_').replace('+', '_')}_" in first
    monkeypatch.setattr(torch, "__version__", "9.9.9+other")
    other_torch = name()
    assert "torch9_9_9_other_" in other_torch and other_torch != first
    monkeypatch.undo()
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(probe_dir / "ext"))
    (probe_dir / "probe.cpp").write_text(PROBE_CPP + "// changed\n")
    changed_source = name()
    (probe_dir / "shared.h").write_text("#pragma once\n")  # a header the sources may include
    changed_header = name()
    assert len({first, other_torch, changed_source, changed_header}) == 4
    build_dir = extensions.CompiledExtension("probe", ["probe.cpp"], description="p", source_dir=probe_dir)
    assert build_dir.build_directory() == probe_dir / "ext" / changed_header


def test_two_processes_starting_together_build_once_and_both_load(probe_dir):
    go = probe_dir / "go"
    procs = [run_probe(probe_dir, "together", str(go), wait=False) for _ in range(2)]
    assert [p.stdout.readline().strip() for p in procs] == ["ready", "ready"]  # both imported torch, wait for go
    go.touch()
    done = [p.communicate(timeout=120) for p in procs]
    for (out, err), proc in zip(done, procs, strict=True):
        assert proc.returncode == 0, err
        assert probe_result(out) == {"loaded": True, "error": None, "answer": 42}, err
    stderr = "".join(err for _, err in done)
    assert stderr.count("urgate: building the probe extension") == 1, stderr
    assert stderr.count("urgate: waiting for another process that is building urgate_probe_") == 1, stderr


def test_a_build_killed_midway_blocks_no_later_process(probe_dir):
    out, err, rc = run_probe(probe_dir, "killed")
    assert rc == -9, err
    (build_dir,) = [p for p in (probe_dir / "ext").glob("urgate_probe_*") if p.is_dir()]
    assert (build_dir / "lock").exists()  # what made torch's loader wait forever
    t0 = time.monotonic()
    out, err, rc = run_probe(probe_dir, "plain")
    assert rc == 0 and probe_result(out) == {"loaded": True, "error": None, "answer": 42}, err
    assert "building the probe extension" in err and time.monotonic() - t0 < 60


def test_a_stuck_builder_is_waited_for_boundedly_then_pure_torch_with_one_warning(probe_dir, monkeypatch):
    probe = extensions.CompiledExtension("probe", ["probe.cpp"], description="probe extension", source_dir=probe_dir)
    lock = probe.build_directory().with_name(probe.build_directory().name + ".lock")
    lock.parent.mkdir(parents=True)
    hold = (
        "import sys, time; from pathlib import Path; from policies.extensions import _build_lock\n"
        "with _build_lock(Path(sys.argv[1]), 0):\n    print('locked', flush=True); time.sleep(120)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(lock)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setattr(extensions, "BUILD_WAIT_S", 0.5)
        monkeypatch.setattr(kernels, "REFINE", probe)
        monkeypatch.setattr(kernels, "_warned", set())
        monkeypatch.delenv(DISABLE_ENV, raising=False)
        t0 = time.monotonic()
        args = make_inputs(4, 2, 3, torch.float64, "inner")
        with pytest.warns(
            RuntimeWarning, match=f"unavailable: waited 0.5 s for another process \\(pid {holder.pid}\\)"
        ):
            outs, grads = outputs_and_grads(refine_recurrence, *args)
        assert time.monotonic() - t0 < 10
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            again = refine_recurrence(*args)  # decided once per process: no second wait, no second warning
        ref_outs, ref_grads = outputs_and_grads(refine_recurrence_reference, *args)
        for a, b in zip((*outs, *grads, *again), (*ref_outs, *ref_grads, *ref_outs), strict=True):
            assert torch.equal(a, b)
    finally:
        holder.kill()
        holder.wait()


# --- the GRU and refine GRU kernel ----------------------------------------------------------------------------


def make_gru_inputs(T, B, H, dtype, resets="none", seed=0, refine=True):
    xproj, w_hh, h0, _, rs = make_inputs(T, B, H, dtype, resets, seed)
    n = 4 if refine else 3
    xproj = xproj.detach()[..., : n * H].clone().requires_grad_()
    w_hh = w_hh.detach()[: n * H].clone().requires_grad_()
    b_hh = torch.randn(n * H, generator=torch.Generator().manual_seed(seed + 100), dtype=torch.float64) * 0.5
    return xproj, w_hh, b_hh.to(dtype).requires_grad_(), h0, rs


def gru_outputs_and_grads(fn, xproj, w_hh, b_hh, h0, rs, refine, seed=1):
    out, h = fn(xproj, w_hh, b_hh, h0, rs, refine=refine)
    gen = torch.Generator().manual_seed(seed)
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t)).sum() for t in (out, h))
    return (out, h), torch.autograd.grad(loss, (xproj, w_hh, b_hh, h0))


@pytest.mark.parametrize("refine", [True, False], ids=["refine_gru", "gru"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("resets", ["none", "inner", "start"])
@pytest.mark.parametrize("T,B,H", [(1, 1, 1), (1, 3, 8), (7, 4, 5), (12, 3, 13), (20, 2, 16)])
def test_compiled_gru_matches_reference(compiled, refine, dtype, resets, T, B, H, monkeypatch):
    args = make_gru_inputs(T, B, H, dtype, resets, refine=refine)
    ref_outs, ref_grads = gru_outputs_and_grads(gru_recurrence_reference, *args, refine)

    def forbidden(*a, **k):
        raise AssertionError("gru_recurrence fell back to the pure-torch path")

    monkeypatch.setattr(kernels, "gru_recurrence_reference", forbidden)
    outs, grads = gru_outputs_and_grads(gru_recurrence, *args, refine)
    for name, a, b in zip(("out", "h_T"), outs, ref_outs, strict=True):
        assert a.dtype == dtype and a.shape == b.shape, name
        torch.testing.assert_close(a, b, **TOL[dtype], msg=f"{name} differs")
    for name, a, b in zip(("xproj", "w_hh", "b_hh", "h0"), grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, **TOL[dtype], msg=f"gradient of {name} differs")


@pytest.mark.parametrize("refine", [True, False], ids=["refine_gru", "gru"])
@pytest.mark.parametrize("resets", ["none", "inner", "start"])
def test_gru_gradcheck(path, refine, resets):
    xproj, w_hh, b_hh, h0, rs = make_gru_inputs(5, 3, 4, torch.float64, resets, seed=2, refine=refine)
    assert torch.autograd.gradcheck(
        lambda *a: gru_recurrence(*a, rs, refine=refine), (xproj, w_hh, b_hh, h0), fast_mode=True
    )


def test_gru_gradcheck_compiled_partial_inputs(compiled):
    xproj, w_hh, b_hh, h0, rs = make_gru_inputs(4, 2, 3, torch.float64, "inner", seed=3)
    w_hh, h0 = w_hh.detach(), h0.detach()
    assert torch.autograd.gradcheck(lambda x, b: gru_recurrence(x, w_hh, b, h0, rs, refine=True), (xproj, b_hh))


@pytest.mark.parametrize("refine", [True, False], ids=["refine_gru", "gru"])
def test_compiled_gru_inference_path_equals_training_path_and_accepts_strides(compiled, refine):
    args = make_gru_inputs(9, 4, 6, torch.float32, "inner", refine=refine)
    train = gru_recurrence(*args, refine=refine)
    with torch.no_grad():
        infer = gru_recurrence(*args, refine=refine)
        xproj, w_hh = args[0], args[1]
        x_nc = xproj.transpose(0, 1).contiguous().transpose(0, 1)
        w_nc = w_hh.t().contiguous().t()
        assert not x_nc.is_contiguous() and not w_nc.is_contiguous()
        strided = gru_recurrence(x_nc, w_nc, *args[2:], refine=refine)
    assert all(t.requires_grad for t in train) and not any(t.requires_grad for t in infer)
    for a, b, c in zip(train, infer, strided, strict=True):
        torch.testing.assert_close(a.detach(), b, atol=0, rtol=0)
        torch.testing.assert_close(c, b, atol=0, rtol=0)


def test_gru_unsupported_dtype_falls_back_with_a_warning_of_its_own(monkeypatch):
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    monkeypatch.setattr(kernels, "_warned", set())
    gru_args = tuple(a.detach().to(torch.bfloat16) for a in make_gru_inputs(4, 2, 3, torch.float64, "inner"))
    lstm_args = tuple(a.detach().to(torch.bfloat16) for a in make_inputs(4, 2, 3, torch.float64, "inner"))
    with pytest.warns(RuntimeWarning, match=r"refine-gate GRU \(urgru\) runs the slower pure-torch.*bfloat16"):
        got = gru_recurrence(*gru_args, refine=True)
    with pytest.warns(RuntimeWarning, match=r"refine-gate LSTM cores \(r, ur\).*bfloat16"):
        refine_recurrence(*lstm_args)  # other cores falling back: their own warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gru_recurrence(*gru_args, refine=True)  # the same cores and reason again: silent
    for a, b in zip(got, gru_recurrence_reference(*gru_args, refine=True), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("refine", [True, False], ids=["refine_gru", "gru"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("value", SPECIALS)
def test_compiled_gru_matches_reference_on_special_pre_activations(compiled, refine, dtype, value):
    # One special pre-activation in each gate block (r, z, n[, q]), at different steps and rows: the GRU kernel
    # shares csrc/activations.h, so NaN must propagate as in torch here too.
    T, B, H = 7, 3, 5
    xproj, w_hh, b_hh, h0, rs = make_gru_inputs(T, B, H, dtype, "inner", seed=4, refine=refine)
    blocks = 4 if refine else 3
    xproj = with_special(xproj, special_value(value, dtype), [(1 + k, k % B, k * H + k) for k in range(blocks)])
    ref_outs, ref_grads = gru_outputs_and_grads(gru_recurrence_reference, xproj, w_hh, b_hh, h0, rs, refine)
    outs, grads = gru_outputs_and_grads(gru_recurrence, xproj, w_hh, b_hh, h0, rs, refine)
    if value == "nan":
        assert ref_outs[0].isnan().any() and ref_grads[0].isnan().any()  # the case tests propagation
    assert_same_values(outs, ref_outs, dtype, ("out", "h_T"))
    assert_same_values(grads, ref_grads, dtype, ("d xproj", "d w_hh", "d b_hh", "d h0"))


def test_cpu_flavour_follows_torch_and_can_be_chosen(probe_dir, monkeypatch):
    def ext(flavour):
        return extensions.CompiledExtension(
            "probe", ["probe.cpp"], description="p", source_dir=probe_dir, cpu_flavour=flavour
        )

    for capability, flavour in (("AVX512", "avx512"), ("AVX2", "avx2"), ("DEFAULT", "generic")):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        assert extensions.machine_flavour() == flavour
        assert ext(True).library_name().startswith(f"urgate_probe_{flavour}_")
    monkeypatch.undo()
    names = {f: ext(f).library_name() for f in extensions.FLAVOUR_FLAGS}
    assert len(set(names.values())) == 3  # each flavour is a library of its own
    assert ext(False).library_name() == names["generic"]
    assert "-mavx512f" in ext("avx512")._cflags()[1] and "-mavx512f" not in ext("avx2")._cflags()[1]
    with pytest.raises(ValueError, match="unknown CPU flavour 'sse'"):
        ext("sse")


@pytest.mark.parametrize("rows,inner,cols", [(1, 1, 1), (3, 5, 7), (9, 128, 33), (130, 17, 512), (4, 0, 6), (0, 3, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_matmul_equals_torch_mm(compiled, rows, inner, cols, dtype):
    gen = torch.Generator().manual_seed(rows * 1000 + cols)
    a = torch.randn(rows, inner, generator=gen, dtype=dtype)
    m = torch.randn(cols, inner, generator=gen, dtype=dtype).t()  # a strided operand is made contiguous first
    torch.testing.assert_close(torch.ops.urgate.matmul(a, m), a @ m, **TOL[dtype])


@pytest.mark.parametrize("shape", [(5, 7), (6, 3, 7)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch_linear_and_its_gradients(compiled, shape, bias, monkeypatch):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=gen, requires_grad=True)
    w = torch.randn(11, 7, generator=gen, requires_grad=True)
    b = torch.randn(11, generator=gen, requires_grad=True) if bias else None
    g = torch.randn(*shape[:-1], 11, generator=gen)
    inputs = [t for t in (x, w, b) if t is not None]
    monkeypatch.setattr(kernels, "_compiled_matmul", lambda a, m: True)  # the compiled loop on any CPU flavour
    got = kernels.linear(x, w, b)
    got_grads = torch.autograd.grad((got * g).sum(), inputs)
    want = torch.nn.functional.linear(x, w, b)
    want_grads = torch.autograd.grad((want * g).sum(), inputs)
    torch.testing.assert_close(got, want, **TOL[torch.float32])
    for a, c in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, c, **TOL[torch.float32])
    assert got.grad_fn is not None and "Linear" in type(got.grad_fn).__name__


def test_linear_uses_torch_where_the_compiled_loop_is_not_chosen(monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "1")
    x, w = torch.randn(4, 3), torch.randn(5, 3)
    assert not kernels._compiled_matmul(x, w)
    assert torch.equal(kernels.linear(x, w), torch.nn.functional.linear(x, w))
    assert not kernels._compiled_matmul(x.double(), w.double())
