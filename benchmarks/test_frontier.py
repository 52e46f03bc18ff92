"""benchmarks/frontier.py: the frontier tables from per-length experiments whose run directories are written
with the trainer's own writers (tests/fake_runs.py)."""

import json

import pytest

from agents.run import rundir
from agents.study.experiments import RUNS_DIR, Experiment, prepare
from benchmarks.frontier import collect, frontier, gate_rows, load_experiments, main, markdown, variant_label
from tests.fake_runs import write_run


def make_length(root, name, length, cores, finals, overrides=(), status="finished"):
    """One experiment directory for one length; ``finals[core]`` are the seeds' final success rates."""
    exp_dir = root / name
    exp = Experiment(
        env_ids=["urgate/TMaze-v0"],
        cores=list(cores),
        seeds=[0, 1, 2],
        grid={"length": [length]},
        overrides=list(overrides),
    )
    prepare(exp, exp_dir)
    for spec in exp.runs():
        run = exp_dir / RUNS_DIR / spec.name
        write_run(run, core=spec.core, seed=spec.seed, env_kwargs=spec.params, status=status, timesteps=1000)
        if status == "finished":
            summary = json.loads((run / "summary.json").read_text())
            summary["final_eval"]["success_rate"] = finals[spec.core][spec.seed]
            (run / "summary.json").write_text(json.dumps(summary))


def test_frontier_is_the_longest_length_most_seeds_solve_and_variants_keep_their_overrides(tmp_path):
    make_length(tmp_path, "length50", 50, ["lstm", "ur"], {"lstm": [0.4, 0.5, 1.0], "ur": [1.0, 0.96, 0.3]})
    make_length(tmp_path, "length100", 100, ["lstm", "ur"], {"lstm": [0.4, 0.4, 0.4], "ur": [1.0, 0.5, 0.4]})
    make_length(
        tmp_path,
        "length100_zero",
        100,
        ["ur"],
        {"ur": [1.0, 1.0, 0.2]},
        overrides=["policy_kwargs.core_kwargs.refine_bias=zero"],
    )
    table = collect(load_experiments(tmp_path), 0.95)
    assert sorted(table) == ["lstm", "ur", "ur (refine_bias=zero)"]
    assert frontier(table["lstm"], 0.95) == (None, None)  # one seed of three at 50 is not most seeds
    assert frontier(table["ur"], 0.95)[0] == 50  # 1/3 at 100
    assert frontier(table["ur (refine_bias=zero)"], 0.95)[0] == 100
    text = markdown(table, 0.95)
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| 50 ") or "| 100 (" in line}
    assert "**2/3**" in rows["| 50 (1M)"] and "1/3" in rows["| 50 (1M)"]
    lstm, ur, zero = rows["| 100 (2M)"].strip(" |").split(" | ")[1:]  # columns in CORE_NAMES order
    assert lstm.startswith("0/3 (best ") and ur.startswith("1/3, from ") and zero.startswith("**2/3**, from ")
    assert "the others: best" in ur and "the other: best" in zero
    assert "| ur (refine_bias=zero) | 100 |" in text and "| lstm | none of 50, 100 |" in text
    # the median first-solved step is read from the solving seeds' evaluations
    evals = [
        rundir.read_evaluations(p)
        for p in sorted((tmp_path / "length100_zero" / RUNS_DIR).iterdir())
        if "s2" not in p.name
    ]
    assert all((e["success_rate"] >= 0.95).any() for e in evals)  # the made-up curves reach it
    firsts = [int(e["timesteps"][(e["success_rate"] >= 0.95).argmax()]) for e in evals]
    assert frontier(table["ur (refine_bias=zero)"], 0.95)[1] == pytest.approx(sum(firsts) / 2)


def test_unfinished_runs_are_listed_and_never_solved(tmp_path, capsys):
    make_length(tmp_path, "length50", 50, ["chrono"], {}, status=None)
    main(["--root", str(tmp_path)])
    out = capsys.readouterr().out
    assert "0/3; running: s0 at 500, s1 at 500, s2 at 500" in out
    assert "| chrono | none of 50 |" in out


def test_variant_labels_and_an_empty_root(tmp_path):
    assert variant_label("chrono", []) == "chrono"
    assert variant_label("chrono", ["n_envs=32", "policy_kwargs.core_kwargs.t_max=1000"]) == (
        "chrono (n_envs=32, t_max=1000)"
    )
    with pytest.raises(SystemExit) as err:
        main(["--root", str(tmp_path)])
    assert err.value.code == 2


def test_gate_table_reads_start_and_end_gates_of_every_seed(tmp_path):
    make_length(tmp_path, "length50", 50, ["lstm", "ur"], {"lstm": [0.5] * 3, "ur": [1.0] * 3})
    rows = {
        line.split(" | ")[0]: line.strip(" |").split(" | ")
        for line in gate_rows(load_experiments(tmp_path)).splitlines()[2:]
    }
    assert set(rows) == {"| lstm", "| ur"}
    for name in rows:
        assert rows[name][1:3] == ["50", "3"]
    # tests/fake_runs.py: every core starts at U(0.02, 0.98); ur ends bimodal (near 0 and near 1), lstm at 0.9 g
    ur_start, ur_end = (float(x.strip("%")) for x in rows["| ur"][3].split(" -> "))
    lstm_start, lstm_end = (float(x.strip("%")) for x in rows["| lstm"][3].split(" -> "))
    assert ur_end > 50 > ur_start and lstm_end <= lstm_start
    short, long = (float(x) for x in rows["| lstm"][4].split(" -> "))
    assert long < short  # g * 0.9 shortens every timescale
