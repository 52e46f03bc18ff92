"""benchmarks/gate_table.py: per-run gate statistics from the gates.npz the trainer writes."""

import numpy as np
import pytest

from agents.run.rundir import write_gates
from benchmarks.gate_table import gate_stats, main


def test_gate_stats_against_hand_counts():
    g = np.array([0.5, 0.98, 0.995, 0.999, 0.001])  # timescales 2, 50, 200, 1000, ~1
    median, long, binary = gate_stats(g, long=100, binary=0.01)
    assert median == pytest.approx(50.0)
    assert long == pytest.approx(2 / 5)  # 200 and 1000
    assert binary == pytest.approx(3 / 5)  # 0.995, 0.999 and 0.001


def test_table_has_one_row_per_run_with_gates_and_refuses_none(tmp_path, capsys):
    for name, final in (("a", [0.5, 0.5]), ("b", [0.999, 0.5])):
        (tmp_path / name).mkdir()
        write_gates(tmp_path / name, (0, np.array([0.5, 0.5], dtype=np.float32)), (4096, np.array(final, np.float32)))
    (tmp_path / "no_gates").mkdir()
    main([str(tmp_path / "*")])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and out[2].startswith("| a | 4,096 | 2.0 -> 2.0 |") and "0.0% -> 50.0%" in out[3]
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "no_gates")])
    assert exc.value.code == 2 and "no gates.npz with final gates" in capsys.readouterr().err
