"""The package version (its one owner; pyproject.toml reads the same number)."""

__version__ = "0.1.0"
