"""The copy task benchmark (benchmarks/copy_task.py): its sequences, its restartable runs, its input checks."""

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.copy_task import BASELINE, CUE, copy_batch, main, parse_core
from policies import PolicyConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_sequences_are_tokens_blanks_cues_and_targets_are_the_tokens():
    x, target = copy_batch(4, 7, torch.Generator().manual_seed(0))
    assert x.shape == (7 + 20, 4, 10) and target.shape == (10, 4)
    assert torch.equal(x.sum(-1), torch.ones(27, 4))  # one-hot
    seq = x.argmax(-1)
    assert torch.equal(seq[:10], target + 1) and ((seq[:10] >= 1) & (seq[:10] <= 8)).all()
    assert (seq[10:17] == 0).all() and (seq[17:] == CUE).all()
    assert set(target.unique().tolist()) <= set(range(8))


def test_baseline_is_the_memoryless_loss():
    # A model that ignores the input predicts the uniform distribution over the 8 token values at best.
    _, target = copy_batch(2000, 1, torch.Generator().manual_seed(0))
    freq = torch.bincount(target.flatten(), minlength=8).double() / target.numel()
    assert pytest.approx(math.log(8)) == BASELINE and -(freq * freq.log()).sum().item() == pytest.approx(
        BASELINE, abs=2e-3
    )


def test_core_specs():
    assert parse_core("lstm") == ("lstm", {})
    assert parse_core("chrono:t_max=520") == ("chrono", {"t_max": 520})
    with pytest.raises(PolicyConfigError, match="expected name:key=value"):
        parse_core("ur:zero")


def curve(out: Path, tag: str) -> list[dict]:
    with (out / "curves" / f"{tag}.csv").open() as f:
        return list(csv.DictReader(f))


def test_a_cut_run_resumes_to_the_same_curve(tmp_path, capsys):
    common = ["--cores", "lstm,chrono:t_max=30", "--seeds", "3", "--delay", "4", "--hidden", "6", "--log-every", "2"]
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    main([*common, "--steps", "6", "--out", str(straight), "--work-dir", str(straight / "state")])
    main([*common, "--steps", "4", "--out", str(cut), "--work-dir", str(cut / "state")])
    main([*common, "--steps", "6", "--out", str(cut), "--work-dir", str(cut / "state")])
    for tag in ("lstm-s3", "chrono_t_max-30-s3"):
        a, b = curve(straight, tag), curve(cut, tag)
        assert [r["step"] for r in a] == ["2", "4", "6"]
        assert [r["loss"] for r in a] == [r["loss"] for r in b]
    main([*common, "--steps", "6", "--out", str(cut), "--work-dir", str(cut / "state")])
    assert "done (6 steps), skipped" in capsys.readouterr().out
    main(["--report", "--out", str(cut), "--log-every", "2"])
    assert (cut / "copy_task.png").stat().st_size > 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["--cores", "lstmm"], "unknown core 'lstmm' (did you mean 'lstm'?)"),
        (["--cores", "lstm:t_max=9"], "unknown keyword for core 'lstm'"),
        (["--seeds", "a"], "--seeds: expected comma-separated integers, got 'a'"),
        (["--report"], "no curves under"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks/copy_task.py"),
            *args,
            "--out",
            str(tmp_path),
            "--work-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_resuming_with_other_settings_is_refused(tmp_path):
    common = ["--cores", "lstm", "--seeds", "0", "--hidden", "4", "--log-every", "1", "--steps", "1"]
    main([*common, "--delay", "2", "--out", str(tmp_path), "--work-dir", str(tmp_path / "s")])
    with pytest.raises(SystemExit) as exc:
        main([*common, "--delay", "3", "--out", str(tmp_path), "--work-dir", str(tmp_path / "s")])
    assert exc.value.code == 2
