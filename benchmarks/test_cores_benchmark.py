"""benchmarks/cores.py runs every registered core (and its option variants) and prints one row for each, whose
numbers are each variant's median time over its own torch baseline's (nn.GRU for the GRU family, else nn.LSTM)."""

import re

from torch import nn

from benchmarks import cores as cores_benchmark
from policies import CORE_NAMES

# Made-up times (s) by baseline, by whether the sequence has resets inside, and by the pure-torch path.
BASE_S = {"nn.LSTM": 0.002, "nn.GRU": 0.004}


def fake_make_step(module, x, starts, pure_torch):
    """A step whose 'time' is known: a baseline takes BASE_S; a core 2x its baseline (3x with resets), 5x that on
    the pure-torch path."""
    if type(module) in (nn.LSTM, nn.GRU):
        seconds = BASE_S[f"nn.{type(module).__name__}"]
    else:
        seconds = BASE_S[cores_benchmark.baseline_of(module)] * (2 if starts is None else 3) * (5 if pure_torch else 1)
    return lambda calls=1: seconds


def table(out: str) -> dict[str, list[str]]:
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in out.splitlines() if line.startswith("| ")]
    return {row[0]: row[1:] for row in rows}


def test_cores_benchmark_times_every_core(monkeypatch, capsys):
    monkeypatch.setattr(cores_benchmark, "SIZES", ((3, 2, 3, 16),))  # H divisible by the chunk sizes
    cores_benchmark.main(["--repeats", "1"])
    rows = table(capsys.readouterr().out)
    expected = [*CORE_NAMES, *(f"{n}, {k}={v}" for n, (k, v) in cores_benchmark.OPTION_VARIANTS.items())]
    expected += [f"{n} ({cores_benchmark.FALLBACK.get(n, 'pure torch')})" for n in cores_benchmark.COMPILED_CORES]
    assert list(rows) == ["core", "nn.LSTM (ms)", "nn.GRU (ms)", *expected]
    for label in expected:  # real timings: positive ratios, no resets / with resets
        (cell,) = rows[label]
        assert re.fullmatch(r"\d+\.\d\dx / \d+\.\d\dx", cell) and float(cell.split("x")[0]) > 0, (label, cell)


def test_each_ratio_is_the_variants_time_over_its_own_baseline(monkeypatch, capsys):
    monkeypatch.setattr(cores_benchmark, "SIZES", ((3, 2, 3, 16), (4, 2, 3, 16)))
    monkeypatch.setattr(cores_benchmark, "make_step", fake_make_step)
    cores_benchmark.main(["--repeats", "3"])
    rows = table(capsys.readouterr().out)
    assert rows["nn.LSTM (ms)"] == ["2.00 ms"] * 2 and rows["nn.GRU (ms)"] == ["4.00 ms"] * 2
    for name in CORE_NAMES:  # 2x / 3x of its own baseline, whichever that is
        assert rows[name] == ["2.00x / 3.00x"] * 2, name
    for name in cores_benchmark.COMPILED_CORES:
        assert rows[f"{name} ({cores_benchmark.FALLBACK.get(name, 'pure torch')})"] == ["10.00x / 15.00x"] * 2
