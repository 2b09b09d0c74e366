"""`python -m gencraft` runs the CLI (torchrun needs a module entry point)."""

from gencraft.cli import main

if __name__ == "__main__":
    main()
