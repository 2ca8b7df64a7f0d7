"""`python -m factory ...` (what `torchrun -m factory train ...` runs)."""

from factory.cli import main

main()
