"""Commands registered by this module (being written)."""


def register(sub) -> None:
    """No commands yet."""
