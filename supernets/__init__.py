"""Search spaces, the elastic supernet, sub-network configs and their cost.

Imports torch lazily: `from supernets import get_space` must stay cheap for the CLI.
"""

from supernets.arch import ArchConfig
from supernets.cost import Cost, cost
from supernets.space import SPACES, SearchSpace, SpaceSpec, StageSpec, get_space, make_divisible, scale_spec

__all__ = [
    "SPACES",
    "ArchConfig",
    "Cost",
    "SearchSpace",
    "SpaceSpec",
    "StageSpec",
    "Supernet",
    "cost",
    "get_space",
    "make_divisible",
    "scale_spec",
]


def __getattr__(name: str):
    if name == "Supernet":
        from supernets.supernet import Supernet

        return Supernet
    raise AttributeError(name)
