"""What every `yiwang` command prints when it refuses: one red line on stderr and an exit code."""

from __future__ import annotations

import typer
from rich.console import Console


def fail(message: str, code: int = 2) -> typer.Exit:
    """`raise fail(...)`: the message on stderr, then exit `code` (2: a bad argument) without a traceback."""
    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/] {message}", highlight=False)
    return typer.Exit(code)
