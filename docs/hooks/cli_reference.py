"""The command-line reference in docs/cli.md, generated from run_rl.py's argparse parser.

``python docs/hooks/cli_reference.py`` rewrites the generated part of docs/cli.md (between the two markers);
as an MkDocs hook (mkdocs.yml: ``hooks``) it fails the build when the committed page no longer matches the
parser, and ``tests/test_docs.py`` fails the same way, so the page cannot drift from the code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "cli.md"
BEGIN = "<!-- BEGIN GENERATED from run_rl.py's parser: python docs/hooks/cli_reference.py -->"
END = "<!-- END GENERATED -->"


def _cell(text: str) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text.replace("<", "&lt;").replace(">", "&gt;")  # runs/<env>-... is text, not an HTML tag


def _flag(action: argparse.Action) -> str:
    if not action.option_strings:  # a positional argument
        return f"`{action.metavar or action.dest.upper()}`"
    names = ", ".join(action.option_strings)
    if action.nargs == 0:  # store_true and friends take no value
        return f"`{names}`"
    return f"`{names} {action.metavar or action.dest.upper()}`"


def _command_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise RuntimeError("run_rl.py's parser has no subcommands")


def reference() -> str:
    """The generated markdown: one section per command, one table row per argument."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import run_rl

    parser = run_rl.build_parser()
    lines = [BEGIN, ""]
    for name, sub in _command_parsers(parser).items():
        command = run_rl.COMMANDS[name]
        lines += [f"### `{name}`", "", command.help[0].upper() + command.help[1:] + ".", ""]
        positional = [a.metavar or a.dest.upper() for a in sub._actions if not a.option_strings]
        lines += ["```bash", " ".join(["python run_rl.py", name, *positional, "[options]"]), "```", ""]
        arguments = [a for a in sub._actions if not isinstance(a, argparse._HelpAction)]
        if arguments:  # the help texts name the defaults
            lines += ["| argument | meaning |", "|---|---|"]
            lines += [f"| {_flag(a)} | {_cell(a.help or '')} |" for a in arguments]
        else:
            lines.append("No options.")
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def with_reference(page: str) -> str:
    """``page`` with the text between the markers replaced by the current reference."""
    head, sep, rest = page.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise RuntimeError(f"{PAGE} lacks the markers {BEGIN!r} ... {END!r}")
    return head + reference() + tail


def on_pre_build(config) -> None:  # MkDocs hook
    from mkdocs.exceptions import PluginError

    page = PAGE.read_text()
    if with_reference(page) != page:
        raise PluginError(
            "docs/cli.md does not match run_rl.py's parser: run `python docs/hooks/cli_reference.py` and commit it"
        )


if __name__ == "__main__":
    PAGE.write_text(with_reference(PAGE.read_text()))
    print(f"wrote {PAGE.relative_to(ROOT)}")
