"""`gencraft data` (being built)."""


def register(app) -> None:
    pass
