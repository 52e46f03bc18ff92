"""benchmarks/cores.py runs every registered core (and its option variants) and prints one row for each."""

from benchmarks import cores as cores_benchmark
from policies import CORE_NAMES


def test_cores_benchmark_times_every_core(monkeypatch, capsys):
    monkeypatch.setattr(cores_benchmark, "SIZES", ((3, 2, 3, 16),))  # H divisible by the chunk sizes
    cores_benchmark.main(["--repeats", "1"])
    rows = [line.split("|")[1].strip() for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    expected = [*CORE_NAMES, *(f"{n}, {k}={v}" for n, (k, v) in cores_benchmark.OPTION_VARIANTS.items())]
    expected += [f"{n} ({cores_benchmark.FALLBACK.get(n, 'pure torch')})" for n in cores_benchmark.COMPILED_CORES]
    assert rows == ["core", "nn.LSTM (ms)", "nn.GRU (ms)", *expected]
