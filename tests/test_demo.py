"""`factory demo`'s training step: a separate `factory train` process that never outlives the demo."""

from __future__ import annotations

import psutil
import pytest

from factory.ship.demo import ensure_trained


def test_the_training_process_is_stopped_when_the_demo_fails_while_it_trains(tmp_path):
    def fail() -> None:
        raise RuntimeError("the demo failed while training ran")

    try:
        with pytest.raises(RuntimeError, match="while training ran"):
            ensure_trained(tmp_path / "run", say=lambda _: None, meanwhile=fail)
        assert psutil.Process().children(recursive=True) == []
        assert not (tmp_path / "run" / "supernet.pt").exists()  # stopped, not waited for
    finally:
        for child in psutil.Process().children(recursive=True):
            child.kill()
