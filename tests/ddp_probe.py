"""Started by torchrun from tests/test_train_distributed.py: train, then write this rank's weight hash.

(Not a test module: pytest only collects test_*.py.)"""

import os
import sys
import tomllib
from pathlib import Path

from factory.training.config import config_from_dict
from factory.training.trainer import train

config, out, hashes = sys.argv[1:4]
summary = train(config_from_dict(tomllib.loads(Path(config).read_text()), origin=config), out)
Path(hashes, f"rank{os.environ['RANK']}.txt").write_text(f"{summary['weights_sha256']} {summary['world_size']}\n")
