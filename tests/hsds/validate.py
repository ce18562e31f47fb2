"""Reads HSDS API answers with the HSDS 3.0 JSON schemas (tests/hsds/schema, references
resolved among them, formats such as uuid, uri, email and date-time checked).

Usage: validate.py SCHEMA_DIR CHECKS.json
CHECKS.json is a list of [schema file name, instance]. Prints the number of instances accepted;
exits non-zero with the first errors otherwise.
"""
import json
import pathlib
import sys

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

BASE = "https://hsds.invalid/schema/"

schema_dir = pathlib.Path(sys.argv[1])
registry = Registry().with_resources(
    (
        BASE + path.name,
        Resource.from_contents(
            json.loads(path.read_text(encoding="utf-8")),
            default_specification=DRAFT202012,
        ),
    )
    for path in schema_dir.glob("*.json")
)
with open(sys.argv[2], encoding="utf-8") as f:
    checks = json.load(f)
failures = []
for index, (schema, instance) in enumerate(checks):
    validator = Draft202012Validator(
        {"$ref": BASE + schema}, registry=registry, format_checker=FormatChecker()
    )
    for error in validator.iter_errors(instance):
        failures.append(
            f"check {index} ({schema}, {instance.get('id') if isinstance(instance, dict) else ''}): "
            f"{error.message} at {list(error.absolute_path)}"
        )
if failures:
    sys.exit("\n".join(failures[:8]) + f"\n{len(failures)} errors")
print(len(checks))
