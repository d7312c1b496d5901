"""The version of eds-server: here only. pyproject.toml reads it for the package, `--version` prints it."""

__version__ = "0.1.0"
