"""What every `yiwang` command prints when it refuses: one red line on stderr and an exit code.

Exit codes: 0 done, 1 the platform (or the command) failed, 2 a bad argument, 3 locked, 4 a stream cannot go on.
A usage error that click finds itself (an option out of its range, an unknown option) is one line too, and an
unexpected exception is one line naming the log file that holds its traceback; the hidden global `--debug`
(`yiwang --debug COMMAND ...`) shows the traceback instead.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperGroup
from typer.exceptions import Abort, TyperException

CST = timezone(timedelta(hours=8))  # China Standard Time: every time a person reads
FAILED = 1
BAD_ARGUMENT = 2
_debug = {"on": False}


def fail(message: str, code: int = BAD_ARGUMENT) -> typer.Exit:
    """`raise fail(...)`: the message on stderr, then exit `code` (2: a bad argument) without a traceback."""
    from rich.markup import escape

    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


def existing_warehouse(root: str):
    """The warehouse at `root`; a local one must exist (a batch run creates it): refused with one line otherwise."""
    from pathlib import Path

    from ingestion.warehouse import Warehouse

    warehouse = Warehouse.at(root)
    if warehouse.is_local and not Path(warehouse.root).is_dir():
        raise fail(f"warehouse {warehouse.root} does not exist: run `yiwang run` first (or pass --warehouse)")
    return warehouse


def parse_date(text: str | None, option: str) -> date | None:
    """`--as-of 2026-11-15` as a date; anything else is refused with one line."""
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise fail(f"{option} {text!r} is not a date: give YYYY-MM-DD, e.g. 2026-11-15") from None


def check_choice(option: str, value: str | None, choices: Sequence[str]) -> str | None:
    """`value` when it is one of `choices` (or None); refused with one line otherwise."""
    if value is not None and value not in choices:
        raise fail(f"{option} {value!r} is not one of {', '.join(choices)}")
    return value


def cst_text(moment: datetime | None, seconds: bool = False) -> str:
    """A time as a person reads it: China Standard Time, `2026-11-15 08:00` (no zone: the README says CST)."""
    if moment is None:
        return ""
    return moment.astimezone(CST).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def cst_values(row: dict[str, Any]) -> dict[str, Any]:
    """A row for JSON or CSV: times as ISO 8601 in China Standard Time (`2026-11-15T08:00:00+08:00`)."""
    return {
        key: value.astimezone(CST).isoformat(timespec="seconds")
        if isinstance(value, datetime) and value.tzinfo is not None
        else value
        for key, value in row.items()
    }


def emit_rows(rows: Iterable[dict[str, Any]], fmt: str, columns: Sequence[str] | None = None) -> int:
    """Rows on stdout as `jsonl` (one object a line), `json` (one array) or `csv` (a header, then rows);
    times in China Standard Time. Plain stdout, never rich: a pipe must get the exact text. Returns the count."""
    rows = [cst_values(row) for row in rows]
    if fmt == "jsonl":
        for row in rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    elif fmt == "json":
        sys.stdout.write(json.dumps(rows, ensure_ascii=False, default=str, indent=2) + "\n")
    elif fmt == "csv":
        buffer = io.StringIO()
        fields = list(columns or (rows[0] if rows else []))
        writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: json.dumps(v, ensure_ascii=False) if isinstance(v, list | dict) else v for k, v in row.items()}
            )
        sys.stdout.write(buffer.getvalue())
    else:  # pragma: no cover - callers check the format first
        raise ValueError(fmt)
    sys.stdout.flush()
    return len(rows)


# --- the root command: one line for every refusal ---------------------------------------------------


def set_debug(on: bool) -> None:
    _debug["on"] = on


def _error_log() -> str | None:
    """Write the current exception's traceback to `<home>/logs/errors.log`; its path, or None when it can't."""
    import os
    import traceback
    from pathlib import Path

    try:
        home = Path(os.environ.get("YIWANG_HOME", Path.cwd() / ".yiwang"))
        path = home / "logs" / "errors.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as log:
            log.write(f"--- {datetime.now(CST).isoformat(timespec='seconds')} yiwang {' '.join(sys.argv[1:])}\n")
            log.write(traceback.format_exc())
        return str(path)
    except OSError:
        return None


class OneLineErrors(TyperGroup):
    """The root `yiwang` group: click's usage errors and unexpected exceptions become one red line.

    Typer would print a usage block and a boxed error for `--limit 0`, and a page of traceback for an
    exception; an operator needs what is wrong and what to do.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except TyperException as error:  # typer's own click: usage errors, bad parameters, missing options
            if type(error).__name__ == "NoArgsIsHelpError":  # the help is printed already
                sys.exit(error.exit_code)
            ctx = getattr(error, "ctx", None)
            where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            raise SystemExit(_line(f"{error.format_message()}{where}", error.exit_code)) from None
        except Abort:
            raise SystemExit(_line("aborted", FAILED)) from None
        except Exception as error:
            if _debug["on"]:
                raise
            log = _error_log()
            first = (str(error).strip().splitlines() or [""])[0][:300]
            where = f"the traceback is in {log}" if log else "rerun with `yiwang --debug ...` for the traceback"
            raise SystemExit(_line(f"unexpected {type(error).__name__}: {first} ({where})", FAILED)) from None
        sys.exit(code if isinstance(code, int) else 0)


def _line(message: str, code: int) -> int:
    fail(message.replace("\n", " "), code)
    return code
