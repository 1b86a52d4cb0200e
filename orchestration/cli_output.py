"""What every `yiwang` command prints when it refuses: one red line on stderr and an exit code."""

from __future__ import annotations

import typer
from rich.console import Console


def fail(message: str, code: int = 2) -> typer.Exit:
    """`raise fail(...)`: the message on stderr, then exit `code` (2: a bad argument) without a traceback."""
    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def existing_warehouse(root: str):
    """The warehouse at `root`; a local one must exist (a batch run creates it): refused with one line otherwise."""
    from pathlib import Path

    from ingestion.warehouse import Warehouse

    warehouse = Warehouse.at(root)
    if warehouse.is_local and not Path(warehouse.root).is_dir():
        raise fail(f"warehouse {warehouse.root} does not exist: run `yiwang run` first (or pass --warehouse)")
    return warehouse
