"""The README opens with the two commands, and CI runs exactly its test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _first_block(text: str) -> list[str]:
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block is not None, "the README has no sh code block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_opens_with_the_serve_and_test_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert readme.index("```sh") < readme.index("\n## ")
    assert _first_block(readme) == ["python3 dev.py serve", "python3 dev.py test"]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    test_command = _first_block((ROOT / "README.md").read_text())[1]
    ci_lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert test_command in ci_lines


def test_every_server_setting_is_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    settings = (ROOT / "authz_service" / "settings.py").read_text()
    cli = (ROOT / "authz_service" / "cli.py").read_text()
    names = set(re.findall(r"AUTHZ_[A-Z_]+", settings)) | set(re.findall(r"--[a-z-]+", cli))
    assert names
    missing = sorted(name for name in names if name not in readme and name != "--version")
    assert missing == []
