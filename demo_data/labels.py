"""The answer key under `<landing>/_labels/` (ingestion ignores folders whose names start with `_`).

- `defects.csv`: every planted row defect of a batch that should load (`contract_id, batch_id,
  record_key, rule, note`); rule `normalisable` marks messy-but-valid IDs that must NOT be quarantined.
- `bad_batches.csv`: whole batches to reject (`rejected`) or to wait for (`waiting`).
- `crosscheck_cases.csv`: planted assistance cases and the rule outcome expected for each.
- `hotline_event_codes.csv`: the event class behind every hotline appeal's text.
- `video_frames.csv`: what each demo frame shows, and which frames are broken (written by `frames`).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from demo_data.crosscheck import PlantedCase
from demo_data.events import TextEvents

LABELS_DIR = "_labels"

README = """# Demo landing zone: answer key

Ingestion ignores this folder (its name starts with `_`). The files say what the generator planted:

- `defects.csv`: contract_id, batch_id, record_key (primary-key values as delivered, joined by `|`), rule, note.
  Rules: required, type, pattern, allowed_values, range, check_character, duplicate_key (both copies are in
  the batch; the key is listed once), and `normalisable` for messy but valid ID numbers (spaces, full-width
  digits, lower-case x, 15-digit first-generation numbers) that must be normalised, not quarantined.
  Only batches expected to load are listed; rows of rejected batches are not.
- `bad_batches.csv`: contract_id, batch_id, expected_status (rejected | waiting), reason_kind
  (row_count | sha256 | unknown_version | too_many_bad_rows | no_manifest).
- `crosscheck_cases.csv`: case_id, rule_code, expected (flag | no_flag), description. Cases not listed are
  ordinary and should raise no flag at all.
- `hotline_event_codes.csv`: appeal_id, event_code (the class the appeal's text was drawn from; empty for
  a call that is no catalogue problem at all: a question, thanks, a wrong number).
- `video_frames.csv`: camera_id, frame_seq, name, algorithm, objects (what was drawn, per class), expected
  (`scored`, or `corrupt_image` for the two broken JPEGs that must go to quarantine) of the demo frame batch.
"""


def _write(path: Path, header: list[str], rows: Iterable[Iterable[object]]) -> int:
    count = 0
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
            count += 1
    return count


def write_labels(
    out: Path,
    defects: list[tuple[str, str, str, str, str]],
    bad_batches: list[tuple[str, str, str, str]],
    planted: list[PlantedCase],
    case_ids: list[str],
    hotline: TextEvents,
) -> None:
    folder = out / LABELS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(README, encoding="utf-8")
    _write(folder / "defects.csv", ["contract_id", "batch_id", "record_key", "rule", "note"], defects)
    _write(folder / "bad_batches.csv", ["contract_id", "batch_id", "expected_status", "reason_kind"], bad_batches)
    _write(
        folder / "crosscheck_cases.csv",
        ["case_id", "rule_code", "expected", "description"],
        ((case_ids[p.case], p.rule_code, p.expected, p.description) for p in planted),
    )
    _write(
        folder / "hotline_event_codes.csv",
        ["appeal_id", "event_code"],
        zip(hotline.ident.tolist(), hotline.event_code.tolist(), strict=True),
    )
