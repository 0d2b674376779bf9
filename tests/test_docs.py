"""The README's set-up is what CI runs, and every page under docs/ is reachable from mkdocs.yml's nav."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _shell_lines(markdown: str) -> list[str]:
    return [line for block in re.findall(r"```bash\n(.*?)```", markdown, re.S) for line in block.splitlines()]


def test_the_readme_set_up_installs_and_tests_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    set_up = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    commands = [part.strip() for line in _shell_lines(set_up) if not line.startswith("#") for part in line.split("&&")]
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    installs = [re.sub(r"\s-q\b", "", line) for line in ci if line.startswith("pip install")]
    assert installs and all(line in commands for line in installs), (installs, commands)
    assert [line for line in ci if line.startswith("python -m pytest")] == ["python -m pytest -q -x --durations=15"]
    assert "python -m pytest -q -x --durations=15" in commands
    assert any(line.startswith("mkdocs build --strict") or " mkdocs build --strict" in line for line in ci)


def _nav_pages(entries) -> list[str]:
    pages = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_every_docs_page_is_in_the_nav_and_every_nav_page_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = _nav_pages(config["nav"])
    pages = sorted(str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md"))
    assert sorted(nav) == pages
