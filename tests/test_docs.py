"""The README and the documentation site: the command-line reference matches the parser, the README's links
resolve, and nothing that users read names things they do not have (tracker issues, people, branches, files
outside the repository, absolute paths, commits missing from the history)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _cli_reference():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "docs" / "hooks" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_matches_the_parser():
    ref = _cli_reference()
    page = ref.PAGE.read_text()
    assert ref.with_reference(page) == page, "docs/cli.md is stale: run `python docs/hooks/cli_reference.py`"


def test_cli_reference_lists_every_command_and_option():
    import run_rl

    text = _cli_reference().reference()
    for name in run_rl.COMMANDS:
        assert f"### `{name}`" in text
    for flag in ("--core", "--set KEY=VALUE", "--episodes", "--grid KEY=V1,V2,...", "--keep-checkpoints N", "--dpi"):
        assert flag in text


def test_cli_reference_drift_is_detected():
    ref = _cli_reference()
    stale = ref.PAGE.read_text().replace("| `--core CORE` |", "| `--kore CORE` |")
    assert ref.with_reference(stale) != stale


# What users read: the README, every page of the site (results.md files included) and the configs' comments.
def user_facing_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "mkdocs.yml"]
    files += sorted((ROOT / "docs").rglob("*.md"))
    files += sorted((ROOT / "configs").glob("*.yaml"))
    return files


FORBIDDEN = {
    "a tracker issue or pull request number": re.compile(r"\b(issues?|PRs?|pull requests?)\s+#?\d+", re.I),
    "an engineer or the lead": re.compile(r"\bengineers?\b|\bthe lead\b", re.I),
    "a development branch": re.compile(r"\bbranch(es)?\b|\b(on|reached|reach|to) main\b|\bmain's code\b", re.I),
    "a work session": re.compile(
        r"\b(this|the|a|one|each) (work )?session\b(?!s of)(?! took)|\bsession'?s? (work|task)", re.I
    ),
    "a file outside the repository": re.compile(r"\b(PAPER|NOTES|DESIGN|STYLE|COMMON|STATUS)\.md\b|\.\./shared/"),
    "an absolute path": re.compile(r"(?<![\w.~/:-])/(work|home|root|tmp|mnt|Users|opt|srv)/"),
    "a workplace tool": re.compile(r"\bfarm-(bench|studio)\b", re.I),
    "remarks on which machine was available": re.compile(
        r"\bno GPU (machine )?was (available|lent)|\bwas lent\b|\bmachine was available\b", re.I
    ),
}


def _violations(text: str) -> list[str]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for what, pattern in FORBIDDEN.items():
            match = pattern.search(line)
            if match:
                found.append(f"line {number}: {match.group(0)!r} ({what})")
    return found


@pytest.mark.parametrize("path", user_facing_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_internal_references(path: Path):
    text = path.read_text()
    if path.suffix == ".yaml":  # a config's user-facing text is its comments
        text = "\n".join(line.split("#", 1)[1] if "#" in line else "" for line in text.splitlines())
    assert not _violations(text), f"{path.relative_to(ROOT)}: " + "; ".join(_violations(text))


@pytest.mark.parametrize(
    "text",
    [
        "as issue 12 asked",
        "see issues 14 and 15",
        "PR #118",
        "run from engineer `cores`' branch at c8de8ba",
        "main's code at 3b188f1",
        "before that option reached main",
        "no GPU machine was available this session",
        "as ../shared/NOTES.md records it",
        "the maths is in PAPER.md",
        "written to /work/main/runs",
    ],
)
def test_the_check_catches(text: str):
    assert _violations(text)


@pytest.mark.parametrize(
    "text",
    [
        "wall time of all sessions, the steps and fps of the last session",
        "the main job trains for 300k steps",
        "cached in ~/.cache/torch_extensions",
        "https://github.com/Stable-Baselines-Team/stable-baselines3-contrib/issues",
        "runs/<run>/checkpoints/latest.zip",
    ],
)
def test_the_check_lets_through(text: str):
    assert not _violations(text)


COMMIT = re.compile(r"(?<![\w/.-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}(?![\w/.-])")


def _in_history(sha: str) -> bool | None:
    """True/False if git can tell whether ``sha`` is a commit of this repository's history, None if it cannot."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        return None
    shallow = subprocess.run([git, "rev-parse", "--is-shallow-repository"], cwd=ROOT, capture_output=True, text=True)
    if shallow.returncode != 0 or shallow.stdout.strip() == "true":
        return None
    ok = subprocess.run([git, "merge-base", "--is-ancestor", sha, "HEAD"], cwd=ROOT, capture_output=True)
    return ok.returncode == 0


def test_commits_named_are_in_the_history():
    named = {sha for path in user_facing_files() for sha in COMMIT.findall(path.read_text())}
    verdicts = {sha: _in_history(sha) for sha in sorted(named)}
    if any(v is None for v in verdicts.values()):
        pytest.skip("no full git history to check commits against")
    assert [sha for sha, ok in verdicts.items() if not ok] == []


LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_readme_links_resolve():
    readme = (ROOT / "README.md").read_text()
    targets = [t for t in LINK.findall(readme) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    assert targets, "the README links into the documentation"
    missing = [t for t in targets if not (ROOT / t.split("#", 1)[0]).exists()]
    assert missing == []


REPO_PATH = re.compile(
    r"(?<![\w/.-])((?:agents|envs|policies|benchmarks|configs|tests|docs)/[\w/.-]*\.(?:py|yaml|sh|cpp|h|md|png|svg|csv))\b"
)


@pytest.mark.parametrize("path", user_facing_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_files_named_exist(path: Path):
    """A file of the repository named in the README or a page exists (moving a module means updating its docs)."""
    missing = sorted({name for name in REPO_PATH.findall(path.read_text()) if not (ROOT / name).exists()})
    assert missing == [], f"{path.relative_to(ROOT)} names files that do not exist"


def test_readme_stays_short():
    """The README is for users (what, install, quick start, short tables); measurements go to docs/experiments/."""
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= 250, f"README.md has {lines} lines: move details to a page under docs/ and link it"
