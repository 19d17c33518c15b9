"""The crash/soak harness (tests/soak/soak.py) for 60 seconds; `make soak`
runs it for longer (SOAK_SECONDS, default 300)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "soak"))

import soak  # noqa: E402


def test_sixty_seconds_of_kill_9_lose_no_acknowledged_write(tmp_path):
    counts = soak.run(float(os.environ.get("SOAK_TEST_SECONDS", 60)), clients=4, base=tmp_path)
    print(f"operations {counts.ops}, acknowledged {counts.acknowledged}, kills {counts.kills}, "
          f"checked {counts.checked}, violations {len(counts.violations)}")
    assert not counts.violations, counts.violations[:20]
    assert counts.kills >= 5 and counts.acknowledged > 100
