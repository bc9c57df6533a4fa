"""Every ``aggregator`` command the README and the manual (``docs/``) show, as concrete
invocations.

``python3 -m aggregator ...`` (any path to a ``python3``) counts as ``aggregator ...``.
Commands are read from shell code blocks (``sh``, ``shell``, ``console``,
``bash``: lines may start with ``$ `` or ``sudo ``, and be chained with ``&&``), from
inline code spans anywhere outside code blocks (``sudo aggregator status --config ...``),
and from table cells, where `` `aggregator sources` / `status` `` means both commands.

A synopsis is expanded into forms: the bare command (every optional ``[...]`` group
dropped), the command with every group's first alternative, and one more form for each
further alternative (``[--since 24h | --from T --to T]``, ``text|markdown|html``,
``drop IDS... | --sink NAME | --all``). Placeholders (``ENTRY``, ``URL``, ...) are left
as written: the test maps them to values in its fixture.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

SHELL_LANGS = {"sh", "shell", "console", "bash"}
SPAN = re.compile(r"`([^`]+)`")
CELL_OF_SPANS = re.compile(r"^`[^`]+`(?: / `[^`]+`)*$")
PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z0-9_]*(?:\.\.\.)?|[A-Z]+\.[a-z]+)$")
COMMAND_WORD = re.compile(r"^[a-z][a-z-]*$")
FIRST_WORD = re.compile(r"^(?:[a-z][a-z-]*|-[A-Za-z]|--[a-z][a-z-]*)$")  # `aggregator -V` too


@dataclass(frozen=True)
class Command:
    """One concrete form of a README command, placeholders unmapped."""

    line: int  # 1-based line of the file it comes from
    text: str  # the text it was expanded from
    argv: tuple[str, ...]  # the words after ``aggregator``
    stdout_to: str | None = None  # ``> FILE`` in the text
    file: str = "README.md"  # the file it comes from, relative to the repository

    @property
    def where(self) -> str:
        """``docs/install.md line 12``."""
        return f"{self.file} line {self.line}"

    @property
    def id(self) -> str:
        """A readable test id: the command as a user types it."""
        words = " ".join(shlex.quote(a) for a in self.argv)
        return words + (f" > {self.stdout_to}" if self.stdout_to else "")


def readme_commands(*files: Path, root: Path | None = None) -> list[Command]:
    """Every distinct form of every ``aggregator`` command in ``files``, in their order.

    ``root`` is what a command's ``file`` is named relative to (default: each file's
    directory).
    """
    found: dict[str, Command] = {}
    for path in files:
        name = str(path.relative_to(root)) if root else path.name
        for line, text in _invocations(path.read_text().splitlines()):
            for command in expand(line, text, name):
                found.setdefault(command.id, command)
    return list(found.values())


def doc_files(root: Path) -> list[Path]:
    """The README and every page of the manual under ``root``."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


#: ``python3 -m aggregator``, ``/opt/aggregator/bin/python3 -m aggregator``: ``aggregator``.
PYTHON_M = re.compile(r"^(?:\S*/)?python3?(?:\.\d+)? -m aggregator(?=\s|$)")


def _invocations(lines: list[str]) -> list[tuple[int, str]]:
    """(line number, ``aggregator ...`` text) of every invocation, ``aggregator`` included."""
    out: list[tuple[int, str]] = []
    fence: str | None = None
    for number, raw in enumerate(lines, start=1):
        stripped = raw.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else stripped[3:].strip().lower()
            continue
        if fence is not None:
            if fence in SHELL_LANGS:
                out += [(number, part) for part in _shell_parts(stripped)]
            continue
        out += [(number, span) for span in _spans(stripped)]
    return out


def _shell_parts(line: str) -> list[str]:
    """The ``aggregator`` commands of one shell line (comments, ``$``, ``sudo`` removed)."""
    line = re.sub(r"^\$\s+", "", line)
    line = re.sub(r"(^|\s)#.*$", "", line).strip()
    parts = []
    for part in re.split(r"\s*(?:&&|\|\||;)\s*", line):
        part = PYTHON_M.sub("aggregator", re.sub(r"^sudo\s+", "", part.strip()))
        if part == "aggregator" or part.startswith("aggregator "):
            parts.append(part)
    return parts


def _spans(line: str) -> list[str]:
    """``aggregator ...`` code spans of a prose line or table row (``sudo`` removed)."""
    spans: list[str] = []
    cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)] if line.startswith("|") else [line]
    for cell in cells:
        cell_spans = [s.replace("\\|", "|") for s in SPAN.findall(cell)]
        shorthand = bool(CELL_OF_SPANS.match(cell))
        prefix_ok = False
        for span in cell_spans:
            span = PYTHON_M.sub("aggregator", re.sub(r"^sudo\s+", "", span.strip()))
            if span.startswith("aggregator ") and FIRST_WORD.match(span.split()[1]):
                spans.append(span)
                prefix_ok = shorthand
            elif prefix_ok and COMMAND_WORD.match(span.split()[0]):
                spans.append(f"aggregator {span}")  # `aggregator sources` / `status`
    return spans


def expand(line: int, text: str, file: str = "README.md") -> list[Command]:
    """The concrete forms of one synopsis (see the module docstring)."""
    text, stdout_to = _redirect(text)
    forms: list[str] = []
    for alternative in _top_alternatives(text):
        forms += _group_forms(alternative)
    commands = []
    for form in forms:
        for concrete in _value_forms(form):
            argv = tuple(shlex.split(concrete))[1:]
            commands.append(Command(line, text, argv, stdout_to, file))
    return commands


def _redirect(text: str) -> tuple[str, str | None]:
    match = re.search(r"\s>\s*(\S+)$", text)
    return (text[: match.start()].strip(), match.group(1)) if match else (text, None)


def _top_alternatives(text: str) -> list[str]:
    """``drop IDS... | --sink NAME | --all`` -> three commands (the options replace the args)."""
    parts = _split_outside_brackets(text, " | ")
    if len(parts) == 1:
        return parts
    words = parts[0].split()
    head = []
    for word in words:
        if not COMMAND_WORD.match(word):
            break
        head.append(word)
    return [parts[0]] + [" ".join([*head, alt.strip()]) for alt in parts[1:]]


def _split_outside_brackets(text: str, sep: str) -> list[str]:
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        if text[i] == "[":
            depth += 1
        elif text[i] == "]":
            depth -= 1
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i].strip())
            start = i + len(sep)
            i = start
            continue
        i += 1
    parts.append(text[start:].strip())
    return parts


def _group_forms(text: str) -> list[str]:
    """Bare form, full form (first alternatives), one form per further alternative."""
    groups = re.findall(r"\[([^\[\]]*)\]", text)
    if not groups:
        return [text]
    bare = re.sub(r"\s*\[[^\[\]]*\]", "", text).strip()
    alternatives = [[a.strip() for a in g.split(" | ")] for g in groups]
    full = " ".join([bare, *(alts[0] for alts in alternatives)])
    extra = [f"{bare} {alt}" for alts in alternatives for alt in alts[1:]]
    return [bare, full, *extra]


def _value_forms(text: str) -> list[str]:
    """``--format text|markdown`` -> one form per value (the first keeps the other options)."""
    words = text.split()
    choices = [(i, w.split("|")) for i, w in enumerate(words) if "|" in w and " " not in w]
    if not choices:
        return [text]
    first = [w.split("|")[0] for w in words]
    prefix = []  # the command and its positional arguments: the words before any option
    for word in first:
        if word.startswith("-"):
            break
        prefix.append(word)
    forms = [" ".join(first)]
    for i, values in choices:
        for value in values[1:]:
            if i < len(prefix):  # a positional choice: `check URL|NAME`
                forms.append(" ".join([*prefix[:i], value, *prefix[i + 1 :]]))
            else:  # an option's value: `--format text|markdown`, on its own
                forms.append(" ".join([*prefix, words[i - 1], value]))
    return forms


def placeholders(argv: tuple[str, ...]) -> list[tuple[str | None, str]]:
    """(preceding option or None, token) of every README placeholder in ``argv``.

    Placeholders are upper-case words (``ENTRY``, ``IDS...``, ``NEW.db``), URLs and absolute
    paths: each needs a value in the test's fixture.
    """
    found = []
    for i, arg in enumerate(argv):
        if PLACEHOLDER.match(arg) or "://" in arg or arg.startswith("/"):
            before = argv[i - 1] if i > 0 and argv[i - 1].startswith("-") else None
            found.append((before, arg))
    return found
