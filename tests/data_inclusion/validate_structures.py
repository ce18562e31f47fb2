"""Validates data·inclusion structures with the schema's own models (PyPI package
`data-inclusion-schema`, v1): every record must be accepted.

Usage: validate_structures.py FILE.json
Prints the number of records accepted; exits non-zero with the first errors otherwise.
"""
import json
import sys

from pydantic import ValidationError

from data_inclusion.schema.v1 import Structure

with open(sys.argv[1], encoding="utf-8") as f:
    records = json.load(f)
assert isinstance(records, list), type(records)
failures = []
for index, record in enumerate(records):
    try:
        Structure.model_validate(record)
    except ValidationError as error:
        failures.append(f"record {index} ({record.get('id')}): {error}")
if failures:
    sys.exit("\n".join(failures[:5]) + f"\n{len(failures)} refused")
print(len(records))
