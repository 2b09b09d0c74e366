"""`gencraft train` (being built)."""


def register(app) -> None:
    pass
