"""docs/SCHEDULES.md names a proving test for each promise: every one it names exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "SCHEDULES.md").read_text()


def test_every_test_the_schedules_doc_names_exists():
    # `tests/x.py::test_a`, then `::test_b` for more in the same file, until the next path.
    current, named, missing = None, [], []
    for path, name in re.findall(r"`(?:(tests/[\w/]+\.py))?(::\w+)?`", DOC):
        if path:
            current = path
        if name and current:
            named.append((current, name[2:]))
    assert len(named) > 15, "the doc names its tests"
    for path, name in named:
        source = ROOT / path
        if not source.exists() or f"def {name}(" not in source.read_text():
            missing.append(f"{path}::{name}")
    assert missing == [], f"docs/SCHEDULES.md names tests that do not exist: {missing}"
