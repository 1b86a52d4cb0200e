"""Expectation suites derived from the data contracts, never retyped.

Each expectation's `meta` names the contract, its version and the rule it comes from, using the same
rule codes as the quarantine (`required`, `pattern`, `allowed_values`, `range`, `duplicate_key`), so
that a failing expectation and a quarantined row point at the same line of the contract.
Two kinds are added beyond the row rules: `schema` (each column exists) and `completeness`
(non-null share of an optional column: informational, it never fails; the scorecard reads it).
"""

from __future__ import annotations

from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
from great_expectations.expectations.expectation import Expectation

from ingestion.contract import Column, Contract
from quality.results import ALLOWED_VALUES, COMPLETENESS, DUPLICATE_KEY, PATTERN, RANGE, REQUIRED, SCHEMA

_VALUE_TYPES: dict[str, type] = {"integer": int, "number": float}


def suite_name(contract: Contract) -> str:
    """Versioned, so a contract change never reuses a suite built from the old one."""
    return f"{contract.id}@{contract.version}"


def _meta(contract: Contract, rule: str, source: str, column: str) -> dict[str, Any]:
    return {
        "contract_id": contract.id,
        "contract_version": contract.version,
        "rule": rule,
        "column": column,
        "contract_rule": source,
    }


def _typed_values(column: Column) -> list[Any]:
    """Allowed values are text in ODCS; compare them in the column's type (bronze validates the same)."""
    cast = _VALUE_TYPES.get(column.logical_type, str)
    return [cast(v) for v in column.allowed_values or ()]


def column_expectations(contract: Contract, column: Column) -> list[Expectation]:
    """The expectations one column's contract entry asks for, in contract order."""
    prop = f"schema.properties[{column.name}]"
    name = column.name
    found: list[Expectation] = [
        gxe.ExpectColumnToExist(column=name, meta=_meta(contract, SCHEMA, prop, name)),
    ]
    if column.required:
        found.append(
            gxe.ExpectColumnValuesToNotBeNull(column=name, meta=_meta(contract, REQUIRED, f"{prop}.required", name))
        )
    else:
        found.append(
            gxe.ExpectColumnValuesToNotBeNull(
                column=name, mostly=0.0, meta=_meta(contract, COMPLETENESS, f"{prop}.required=false", name)
            )
        )
    if column.pattern:
        found.append(
            gxe.ExpectColumnValuesToMatchRegex(
                column=name,
                regex=column.pattern,
                meta=_meta(contract, PATTERN, f"{prop}.logicalTypeOptions.pattern", name),
            )
        )
    if column.allowed_values is not None:
        found.append(
            gxe.ExpectColumnValuesToBeInSet(
                column=name,
                value_set=_typed_values(column),
                meta=_meta(contract, ALLOWED_VALUES, f"{prop}.quality[invalidValues].validValues", name),
            )
        )
    if column.minimum is not None or column.maximum is not None:
        found.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=name,
                min_value=column.minimum,
                max_value=column.maximum,
                meta=_meta(contract, RANGE, f"{prop}.logicalTypeOptions.minimum/maximum", name),
            )
        )
    return found


def key_expectation(contract: Contract) -> Expectation | None:
    """Primary-key uniqueness; rows with an incomplete key are left to the `required` expectations."""
    key = contract.primary_key
    if not key:
        return None
    label = ", ".join(key)
    meta = _meta(contract, DUPLICATE_KEY, "schema.properties[*].primaryKey", label)
    if len(key) == 1:
        return gxe.ExpectColumnValuesToBeUnique(column=key[0], meta=meta)
    return gxe.ExpectCompoundColumnsToBeUnique(column_list=list(key), ignore_row_if="any_value_is_missing", meta=meta)


def expectations_for(contract: Contract) -> list[Expectation]:
    """Every expectation of a contract: per column in contract order, then the primary key."""
    found = [e for column in contract.columns for e in column_expectations(contract, column)]
    key = key_expectation(contract)
    return [*found, key] if key is not None else found


def build_suite(contract: Contract) -> gx.ExpectationSuite:
    """The suite for one contract, not yet attached to a context (so building needs none)."""
    return gx.ExpectationSuite(
        name=suite_name(contract),
        expectations=expectations_for(contract),
        meta={
            "contract_id": contract.id,
            "contract_version": contract.version,
            "department": contract.department,
        },
    )
