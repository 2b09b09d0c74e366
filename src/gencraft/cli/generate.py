"""`gencraft generate` (being built)."""


def register(app) -> None:
    pass
