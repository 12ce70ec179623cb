"""Every command shown in README.md and docs/*.md stays true to the command line.

The rule: in a ```bash, ```sh, ```shell or ```console block (console: only `$ ` lines, prompt
dropped), a line is split at `&&`, `||`, `;` and ` | ` (outside `[...]`), and a piece is
checked when it runs `edgeship` (any path ending in `/edgeship`) or `python… -m edge_runtime`,
after leading `VAR=value` and `sudo`; everything else (make, pip, ssh, tar, cd, a Python module
of the tests) is not ours to check. A `#` starts a comment; a line ending in `\\` and, in a
synopsis block, a line that starts with spaces continue the command. Its subcommand must exist,
and each `--option` it shows (also inside `[...]`) must appear in that subcommand's `--help`.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.support.procs import REPO

FENCES = ("bash", "sh", "shell", "console")
OPTION = re.compile(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)")
SEPARATORS = ("&&", "||", ";", "|")


def _doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _blocks(text: str):
    """(first line number, lines) of each shell block."""
    lang, start, body = None, 0, []
    for no, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*```\s*([\w-]*)", line)
        if fence and lang is None:
            lang, start, body = fence.group(1).lower(), no + 1, []
        elif fence:
            if lang in FENCES:
                yield start, lang, body
            lang = None
        elif lang is not None:
            body.append(line)


def _strip_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def commands(text: str) -> list[tuple[int, str]]:
    """(line number, command text) of every edgeship / edge_runtime command in the text."""
    found = []
    for start, lang, body in _blocks(text):
        logical: list[tuple[int, str]] = []
        continued = False
        for offset, raw in enumerate(body):
            no = start + offset
            if lang == "console":
                if not raw.startswith("$ ") and not continued:
                    continue
                raw = raw[2:] if raw.startswith("$ ") else raw
            line = _strip_comment(raw)
            joins = continued or (raw[:1].isspace() and logical and lang != "console")
            if joins and logical and line.strip():
                logical[-1] = (logical[-1][0], logical[-1][1] + " " + line.strip().rstrip("\\"))
            elif line.strip():
                logical.append((no, line.strip().rstrip("\\")))
            continued = raw.rstrip().endswith("\\")
        for no, line in logical:
            for piece in _pieces(line):
                words = _ours(piece)
                if words:
                    found.append((no, " ".join(words)))
    return found


def _pieces(line: str) -> list[str]:
    """The line split at `&&`, `||`, `;`, ` | ` outside quotes and outside a synopsis's `[...]`
    (where `|` means "or": `[--model mlp|cnn]`, `[--token T | --token-file F]`)."""
    pieces, current, depth, quote, i = [], "", 0, None, 0
    while i < len(line):
        ch = line[i]
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[]":
            depth += 1 if ch == "[" else -1
        elif depth <= 0:
            sep = next((s for s in SEPARATORS if line.startswith(s, i)), None)
            if sep == "|" and not line[i - 1 : i].isspace():
                sep = None  # `MODEL.keras|.h5`: a pipe has spaces around it
            if sep:
                pieces.append(current)
                current, i = "", i + len(sep)
                continue
        current += ch
        i += 1
    return [*pieces, current]


def _ours(piece: str) -> list[str] | None:
    """The words of an edgeship / `python -m edge_runtime` command, from the program on."""
    try:
        words = shlex.split(piece)
    except ValueError:
        words = piece.split()
    while words and (re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]) or words[0] == "sudo"):
        words = words[1:]
    if not words:
        return None
    if words[0] == "edgeship" or words[0].endswith("/edgeship"):
        return ["edgeship", *words[1:]]
    if re.search(r"(^|/)python[\d.]*$", words[0]) and words[1:3] == ["-m", "edge_runtime"]:
        return ["edge_runtime", *words[3:]]
    return None


@functools.cache
def _typer_help(path: tuple[str, ...]) -> str:
    from edgeship.cli import app

    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=240)
    assert result.exit_code == 0, f"edgeship {' '.join(path)} --help: {result.output}"
    return result.output


def _typer_commands(path: tuple[str, ...]) -> dict[str, object] | None:
    """The subcommands under `edgeship PATH` (None when PATH is a command, not a group)."""
    import typer.main

    from edgeship.cli import app

    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return getattr(command, "commands", None)


@functools.cache
def _edge_runtime_help(sub: str | None) -> str:
    from edge_runtime.cli import build_parser

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args([sub, "--help"] if sub else ["--help"])
    return out.getvalue()


def _edge_runtime_subcommands() -> set[str]:
    import argparse

    from edge_runtime.cli import build_parser

    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


def check(words: list[str]) -> list[str]:
    """What is wrong with one command: an unknown subcommand, options its --help lacks."""
    args = words[1:]
    if words[0] == "edgeship":
        path: list[str] = []
        while True:
            subs = _typer_commands(tuple(path))
            if subs is None or not args or args[0].startswith("-"):
                break
            if args[0] not in subs:
                return [f"`edgeship {' '.join([*path, args[0]])}`: no such command"]
            path.append(args.pop(0))
        help_text, shown = _typer_help(tuple(path)), f"edgeship {' '.join(path)}".strip()
    else:
        sub = args[0] if args and not args[0].startswith("-") else None
        if sub is not None and sub not in _edge_runtime_subcommands():
            return [f"`python -m edge_runtime {sub}`: no such command"]
        help_text = _edge_runtime_help(sub)
        shown = f"python -m edge_runtime {sub or ''}".strip()
    missing = []
    for option in OPTION.findall(" ".join(args)):
        if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text):
            missing.append(f"`{shown}` has no {option}")
    return missing


def _problems(path: Path) -> list[str]:
    rel = path.relative_to(REPO)
    return [
        f"{rel}:{no}: {problem}"
        for no, command in commands(path.read_text(encoding="utf-8"))
        for problem in check(command.split(" "))
    ]


def test_docs_show_commands():
    """The rule finds the commands (not vacuous): README's command-line block is all there."""
    found = commands((REPO / "README.md").read_text(encoding="utf-8"))
    programs = {c.split(" ")[0] + " " + c.split(" ")[1] for _, c in found}
    assert {"edgeship train", "edgeship convert", "edgeship deploy", "edge_runtime serve"} <= (
        programs
    )
    assert len(found) >= 20


@pytest.mark.parametrize("path", _doc_files(), ids=lambda p: p.name)
def test_every_command_shown_exists(path):
    assert _problems(path) == []


def test_the_check_catches_a_wrong_command():
    text = "\n".join(
        [
            "```bash",
            "edgeship train --epochs 2 \\",
            "    --no-such-option --out runs/x   # a comment --not-an-option",
            "edgeship deploy teleport pi.tar.gz",
            "cd pi && venv/bin/python -m edge_runtime predict m.tflite a.png --top-k 3 --fast",
            "make demo --not-ours",
            "```",
            "```console",
            "$ edgeship bench runs/x --runs 5 --nope",
            "  output lines are ignored --not-checked",
            "```",
        ]
    )
    problems = [p for _, c in commands(text) for p in check(c.split(" "))]
    assert problems == [
        "`edgeship train` has no --no-such-option",
        "`edgeship deploy teleport`: no such command",
        "`python -m edge_runtime predict` has no --fast",
        "`edgeship bench` has no --nope",
    ]
