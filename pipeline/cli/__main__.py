"""`python -m pipeline.cli` (what torchrun launches) is the `hataori` command."""

from pipeline.cli import main

main()
