"""docs/PRIVACY.md names a proving test for each promise: every one it names exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "PRIVACY.md").read_text()


def test_every_test_the_data_map_names_exists():
    named = re.findall(r"`(tests/[\w/]+\.py)((?:::\w+)?)`((?:, `::\w+`)*)", DOC)
    assert len(named) > 20, "the data map names its tests"
    missing = []
    for path, first, more in named:
        source = ROOT / path
        if not source.exists():
            missing.append(path)
            continue
        text = source.read_text()
        for name in [first, *re.findall(r"::\w+", more)]:
            if name and f"def {name[2:]}(" not in text:
                missing.append(f"{path}{name}")
    assert missing == [], f"docs/PRIVACY.md names tests that do not exist: {missing}"
