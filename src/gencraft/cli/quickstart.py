"""`gencraft quickstart` (being built)."""


def register(app) -> None:
    pass
