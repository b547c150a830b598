"""The README stays true: its settings table is the one the code generates, its commands exist."""

from pathlib import Path

from moderation_worker.cli import build_parser, settings_markdown

README = Path(__file__).resolve().parents[2] / "README.md"
CI_RUN = Path(__file__).resolve().parents[2] / ".ci" / "run"


def _between(text: str, marker: str) -> str:
    start = text.index(f"<!-- {marker}:start -->") + len(f"<!-- {marker}:start -->")
    return text[start : text.index(f"<!-- {marker}:end -->")].strip()


def test_the_readme_settings_table_matches_the_settings():
    assert _between(README.read_text(), "settings-table") == settings_markdown()


def test_the_readme_console_settings_table_matches_the_console_settings():
    from moderation_worker.review.cli import settings_markdown as console_settings_markdown

    assert _between(README.read_text(), "review-settings-table") == console_settings_markdown()


def test_the_readme_api_settings_table_matches_the_api_settings():
    from moderation_worker.api.cli import settings_markdown as api_settings_markdown

    assert _between(README.read_text(), "api-settings-table") == api_settings_markdown()


def test_ci_runs_the_readme_test_command():
    readme = README.read_text()
    assert "make test " in readme and "make demo " in readme
    assert "\nmake --no-print-directory test\n" in CI_RUN.read_text()


def test_the_make_targets_the_readme_names_exist():
    makefile = (README.parent / "Makefile").read_text()
    for target in ("setup", "demo", "test", "lint", "lock"):
        assert f"\n{target}:" in makefile, target


def test_every_subcommand_the_readme_shows_exists():
    parser = build_parser()
    for command in (
        ["run"], ["check", "x.jpg"], ["policies", "validate"], ["config"], ["demo"], ["demo", "--review"],
        ["review"], ["review", "ingest"], ["review", "web"], ["review", "migrate"],
        ["review", "users", "add", "x", "--role", "lead"],
        ["review", "export-labels"], ["review", "export-audit"],
        ["serve"], ["serve", "--scorer", "fake"], ["serve", "--new-key", "upload-service"],
    ):  # fmt: skip
        parser.parse_args(command)  # exits non-zero (fails the test) on an unknown command
