"""The README's configuration table matches what dashboard/settings.py reads, and the README
names the two commands a newcomer needs (no database needed).

The variables are derived from the code, not listed here: statically, every
`get("DASHBOARD_...")`-style read in `Settings.from_env` (found with `ast`), and dynamically,
every key `from_env` looks up in the environment mapping it is given.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path

import dashboard.settings as settings_module
from dashboard.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PREFIX = "DASHBOARD_"

# How `from_env` reads one variable: `get("X")` (its local helper), `e.get("X")`,
# `os.environ.get("X")`, `os.getenv("X")`, and subscripts `e["X"]` / `os.environ["X"]`.
READER_FUNCTIONS = {"get", "getenv"}


def _dashboard_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        if node.value.startswith(PREFIX):
            return node.value
    return None


def _reads(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            callee = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else None
            )
            name = _dashboard_name(node.args[0])
            if callee in READER_FUNCTIONS and name:
                yield name
        elif isinstance(node, ast.Subscript):
            name = _dashboard_name(node.slice)
            if name:
                yield name


def _from_env_tree() -> ast.Module:
    return ast.parse(textwrap.dedent(inspect.getsource(Settings.from_env)))


@cache
def variables_read_statically() -> frozenset[str]:
    return frozenset(_reads(_from_env_tree()))


class RecordingEnv(Mapping[str, str]):
    """An environment holding only `data` that remembers every key looked up (`get`, `in`
    and `[]` all go through `__getitem__`)."""

    def __init__(self, data: Mapping[str, str]) -> None:
        self.data = dict(data)
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        raise AssertionError(
            "Settings.from_env iterates the environment, so this test can no longer tell "
            "which variables it reads: update tests/test_docs.py"
        )

    def __len__(self) -> int:
        return len(self.data)


@cache
def variables_read_dynamically() -> frozenset[str]:
    env = RecordingEnv({f"{PREFIX}SCRIPT_LOCATION": str(ROOT / "alembic")})
    Settings.from_env(env)
    return frozenset(k for k in env.asked if k.startswith(PREFIX))


def variables_read() -> frozenset[str]:
    return variables_read_statically() | variables_read_dynamically()


def configuration_table() -> list[list[str]]:
    """The rows (cells, stripped) of the table under README's `## Configuration`."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^## Configuration\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, "README.md has no '## Configuration' section"
    lines = [ln.strip() for ln in match.group(1).splitlines() if ln.strip().startswith("|")]
    assert len(lines) >= 3, "the Configuration section has no table"
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    header, rule, body = rows[0], rows[1], rows[2:]
    assert [h.lower() for h in header] == ["variable", "meaning", "default"], header
    assert all(set(c) <= set(":-") and c for c in rule), rule
    return body


NAME_CELL = re.compile(r"`(DASHBOARD_[A-Z0-9_]+)`(?: / `(DASHBOARD_[A-Z0-9_]+)`)*")


def variables_documented() -> list[str]:
    names: list[str] = []
    for cells in configuration_table():
        assert len(cells) == 3, f"row should have 3 cells (variable | meaning | default): {cells}"
        first = cells[0]
        # one variable, or several that share a row: `A` / `B` / `C`
        assert NAME_CELL.fullmatch(first), (
            f"first cell {first!r} should be backticked DASHBOARD_ names separated by ' / '"
        )
        names.extend(re.findall(r"`(DASHBOARD_[A-Z0-9_]+)`", first))
    return names


def test_settings_reads_are_found() -> None:
    # guards against this test passing vacuously if the way from_env reads changes
    read = variables_read()
    assert f"{PREFIX}DATABASE_URL" in read and len(read) >= 10, sorted(read)
    missed = variables_read_dynamically() - variables_read_statically()
    assert not missed, (
        f"from_env reads {sorted(missed)} in a way this test's ast scan does not recognise; "
        "teach _reads() about it"
    )


def test_every_setting_is_in_the_readme_table() -> None:
    missing = sorted(variables_read() - set(variables_documented()))
    assert not missing, f"README.md's configuration table lacks {missing}"


def test_the_readme_table_names_only_settings_that_are_read() -> None:
    documented = variables_documented()
    unknown = sorted(set(documented) - variables_read())
    assert not unknown, f"README.md documents {unknown}, which Settings.from_env does not read"
    twice = sorted({n for n in documented if documented.count(n) > 1})
    assert not twice, f"README.md's configuration table lists {twice} more than once"


def test_settings_errors_name_variables_that_are_read() -> None:
    """A `SettingsError("DASHBOARD_X", ...)` (or a parse_*("DASHBOARD_X", ...) label) for a
    variable nobody reads would send the operator to the wrong knob."""
    tree = ast.parse(inspect.getsource(settings_module))
    labels = {
        name
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and node.args
        for name in [_dashboard_name(node.args[0])]
        if name
    }
    assert labels, "no DASHBOARD_ labels found in dashboard/settings.py"
    unread = sorted(labels - variables_read())
    assert not unread, f"dashboard/settings.py names {unread} in errors but never reads them"


def test_readme_names_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for target in ("demo", "test"):
        assert f"make {target}" in text, f"README.md does not mention `make {target}`"
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"Makefile has no {target}:"
