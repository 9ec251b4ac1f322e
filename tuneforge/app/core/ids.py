import secrets


def new_id(prefix: str) -> str:
    """OpenAI-style ids: a type prefix and 24 random hex characters."""
    return f"{prefix}-{secrets.token_hex(12)}"
