"""reportgen: explain what the attention heads of character-level transformer LMs do."""

__version__ = "0.1.0"
