"""`python -m gencraft.cli`."""

from gencraft.cli import main

main()
