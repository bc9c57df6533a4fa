"""The manual: a MkDocs site that builds without a broken link, and a README that stays short."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def readme_first_block() -> list[str]:
    """The command lines of the README's first shell block, comments removed."""
    block = re.search(r"```sh\n(.*?)```", README.read_text(), re.S)
    assert block is not None, "the README has no shell block"
    return [re.sub(r"\s+#.*$", "", line).strip() for line in block.group(1).splitlines()]


def test_readme_gives_the_two_commands_and_ci_runs_them_as_written() -> None:
    """The README's install-and-demo and test lines appear verbatim in .ci/run."""
    install, tests = readme_first_block()
    assert install == "python3 -m pip install -e . && python3 -m aggregator demo"
    assert tests == "python3 -m pip install -e '.[test]' && python3 -m pytest"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install in ci and tests in ci
    assert ci.index(tests) == len(ci) - 1  # the suite is the last thing CI runs


def test_readme_fits_on_a_few_screens_and_links_into_the_manual() -> None:
    """The README is short, and every page of docs/ is linked from it or from the index."""
    text = README.read_text()
    assert len(text.splitlines()) <= 120
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)", text))
    linked |= set(re.findall(r"\]\(([\w-]+\.md)", (ROOT / "docs" / "index.md").read_text()))
    pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"index.md"}
    assert pages <= linked, f"pages no README or index link leads to: {pages - linked}"


def test_the_manual_builds_strictly(tmp_path: Path) -> None:
    """`mkdocs build --strict` succeeds: no broken link or anchor, no page left out of nav."""
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        if os.environ.get("CI"):
            pytest.fail("mkdocs is not installed (the test extra installs it)")
        pytest.skip("mkdocs is not installed: python3 -m pip install -e '.[docs]'")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "search" / "search_index.js").is_file()  # offline search
    assert (tmp_path / "screenshot-story.png").is_file()


#: Loaded by the demo run below: the test tools cannot be imported.
NO_TEST_TOOLS = """
import sys

BLOCKED = {"pytest", "_pytest", "hypothesis", "playwright", "ruff", "aiosmtpd", "numpy",
           "mkdocs", "material"}


class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} is a test tool, not installed here", name=name)
        return None


sys.meta_path.insert(0, Blocker())
"""


def test_the_readme_demo_runs_without_the_test_tools_or_an_activated_venv(
    tmp_path: Path,
) -> None:
    """`python3 -m aggregator demo`, with the venv's python called by its path (not on
    PATH, as in a venv that is not activated) and no test tool importable, runs the
    demo and suggests commands in the form that works there."""
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NO_TEST_TOOLS)
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{guard}{os.pathsep}{ROOT}",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
    }
    probe = subprocess.run(
        [sys.executable, "-c", "import pytest"], env=env, capture_output=True, text=True
    )
    assert "is a test tool" in probe.stderr  # the guard works
    proc = subprocess.run(
        [sys.executable, "-m", "aggregator", "demo", "--delay", "0", "--epochs", "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Poll 2/2" in proc.stdout
    assert "python3 -m aggregator history summit --db " in proc.stdout


def test_the_test_tools_are_not_runtime_dependencies() -> None:
    """`pip install -e .` (the README's first line) installs no test or docs tool."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"]).lower()
    for tool in ("pytest", "hypothesis", "playwright", "ruff", "aiosmtpd", "mkdocs", "numpy"):
        assert tool not in runtime, tool
    assert "test" in project["optional-dependencies"]


def test_the_readme_s_first_config_loads() -> None:
    """The README's example config is valid as written (sources, sinks, durations)."""
    import tomllib

    from aggregator import config
    from aggregator.cli.common import register_plugins

    register_plugins()
    [block] = re.findall(r"```toml\n(.*?)```", README.read_text(), re.S)
    loaded = config.parse(tomllib.loads(block), "README.md")
    assert [s.name for s in loaded.sources] == ["world"] and loaded.sources[0].interval == 600
    assert [s.kind for s in loaded.sinks] == ["stdout"]


def test_help_says_where_the_manual_is() -> None:
    """`aggregator --help` names the manual, and the file it names exists."""
    from click.testing import CliRunner

    from aggregator.cli import main

    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "docs/index.md" in result.output
    assert (ROOT / "docs" / "index.md").is_file()
