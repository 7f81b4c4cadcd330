"""The `scadles` command line: a thin layer over the public API, one module per command."""

from scadles.cli.main import main

__all__ = ["main"]
