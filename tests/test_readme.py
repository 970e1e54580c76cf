"""The README documents every setting the services read, and the two commands."""

from pathlib import Path

from fama.cli import settings_table

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_documented():
    missing = []
    for env, *_ in settings_table():
        # The SMTP settings share one row: `NOTIFICATIONS_SMTP_HOST`, `_PORT`, ...
        short = env.removeprefix("NOTIFICATIONS_SMTP")
        if f"`{env}`" not in README and not (env.startswith("NOTIFICATIONS_SMTP_") and f"`{short}`" in README):
            missing.append(env)
    assert not missing, f"settings missing from README.md: {missing}"


def test_the_two_commands_are_there():
    assert "make run" in README and "make test" in README
