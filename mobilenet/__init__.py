"""Shared pieces of the project: the architecture specs, the summary and the CLI."""

__version__ = "0.1.0"
