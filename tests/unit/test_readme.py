"""The README is a short front door that opens with the two commands, CI runs exactly its test
command, and the pages of docs/ say what the code does and link to what exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from authz_service.cli import main as service_main
from authz_service.core import decision
from authz_service.core.decision import Decision, Reason

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
NAMED_ELSEWHERE = re.compile(
    r"the seed|DESIGN says|the reference page|design is silent", re.IGNORECASE
)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _first_block(text: str) -> list[str]:
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block is not None, "the README has no sh code block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def _prose(text: str) -> str:
    """The text outside fenced code blocks (where a `#` starts a comment, not a heading)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _section(text: str, heading: str) -> str:
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def _anchors(text: str) -> set[str]:
    """The anchors GitHub gives the headings of a page."""
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", _prose(text), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


def test_the_readme_opens_with_the_serve_and_test_commands() -> None:
    readme = README.read_text()
    assert readme.index("```sh") < readme.index("\n## ")
    assert _first_block(readme) == ["python3 dev.py serve", "python3 dev.py test"]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    test_command = _first_block(README.read_text())[1]
    ci_lines = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert test_command in ci_lines


def test_the_readme_stays_a_front_door_of_at_most_200_lines() -> None:
    assert len(README.read_text().splitlines()) <= 200


def test_the_readme_maps_every_page_of_docs() -> None:
    mapped = set(
        re.findall(r"\]\((docs/[\w-]+\.md)\)", _section(README.read_text(), "Documentation"))
    )
    assert mapped == {f"docs/{page.name}" for page in PAGES}


def test_every_server_setting_is_documented_on_the_settings_page() -> None:
    settings_page = (DOCS / "settings.md").read_text()
    package = ROOT / "authz_service"
    sources = [(package / name).read_text() for name in ("settings.py", "healthcheck.py")]
    cli = (package / "cli.py").read_text()
    names = {name for source in sources for name in re.findall(r"AUTHZ_[A-Z_]+", source)}
    names |= set(re.findall(r"--[a-z-]+", cli))
    assert "AUTHZ_TLS_SERVER_NAME" in names
    missing = sorted(name for name in names if name not in settings_page and name != "--version")
    assert missing == []


def test_serve_help_and_the_settings_page_name_the_same_variables(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        service_main(["serve", "--help"])
    assert exited.value.code == 0
    in_help = set(re.findall(r"AUTHZ_[A-Z0-9_]+", capsys.readouterr().out))
    section = _section((DOCS / "settings.md").read_text(), "`authz-service serve`")
    on_page = set(re.findall(r"AUTHZ_[A-Z0-9_]+", section))
    assert "AUTHZ_REPLICA_LEASE" in in_help
    assert in_help == on_page


def test_every_check_reason_is_in_the_api_page_with_its_http_status_and_code() -> None:
    table = _section((DOCS / "api.md").read_text(), "Check reasons")
    rows = re.findall(r"^\| `([a-z_]+)`[^|]*\| (\d{3}) \((\d+) [A-Z_]+\) \|", table, re.M)
    documented = {reason: (int(status), int(code)) for reason, status, code in rows}
    denies = [d for d in vars(decision).values() if isinstance(d, Decision)]
    expected = {d.reason: (d.http_status, d.code) for d in denies}
    assert set(expected) == {reason.value for reason in Reason}
    expected["ok"] = (200, decision.OK)  # the metrics' name for an ALLOW
    assert documented == expected


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda page: page.name)
def test_every_link_leads_to_a_file_and_heading_that_exist(page: Path) -> None:
    for target in LINK.findall(_prose(page.read_text())):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), target
        if anchor:
            assert anchor in _anchors(linked.read_text()), target


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda page: page.name)
def test_the_docs_speak_of_this_project_alone(page: Path) -> None:
    assert NAMED_ELSEWHERE.findall(page.read_text()) == []


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda page: page.name)
def test_every_python_example_in_the_docs_is_valid_python(page: Path) -> None:
    for block in re.findall(r"^```python\n(.*?)^```", page.read_text(), re.S | re.M):
        ast.parse(block)


def test_the_operations_page_keeps_a_section_on_limits_and_hardening() -> None:
    assert "\n## Limits and hardening\n" in (DOCS / "operations.md").read_text()
