"""Reads data·inclusion files with the schema's own models (PyPI package
`data-inclusion-schema`, v1): every record must be accepted.

Usage:
  validate.py structures|services FILE.json|FILE.csv
      prints the number of records accepted; exits non-zero with the first errors otherwise.
      CSV cells are read as data·inclusion publishes them: empty is absent, lists are
      comma-separated.
  validate.py referentiels taxonomy/data-inclusion.toml
      checks that the référentiels copied into the crosswalk are the package's own.
"""
import csv
import json
import sys
import tomllib

from pydantic import ValidationError

from data_inclusion.schema.v1 import (
    Public,
    ReseauPorteur,
    Service,
    Structure,
    Thematique,
    TypeService,
)

LISTS = {
    "thematiques",
    "publics",
    "modes_accueil",
    "zone_eligibilite",
    "modes_mobilisation",
    "mobilisable_par",
    "reseaux_porteurs",
}


def read(path):
    if path.endswith(".csv"):
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        return [
            {
                key: (value.split(",") if key in LISTS else value)
                for key, value in row.items()
                if value != ""
            }
            for row in rows
        ]
    with open(path, encoding="utf-8") as f:
        records = json.load(f)
    assert isinstance(records, list), type(records)
    return records


def validate(model, records):
    failures = []
    for index, record in enumerate(records):
        try:
            model.model_validate(record)
        except ValidationError as error:
            failures.append(f"record {index} ({record.get('id')}): {error}")
    if failures:
        sys.exit("\n".join(failures[:5]) + f"\n{len(failures)} refused")
    print(len(records))


def referentiels(path):
    with open(path, "rb") as f:
        ours = tomllib.load(f)["referentiels"]
    theirs = {
        "types": TypeService,
        "publics": Public,
        "reseaux_porteurs": ReseauPorteur,
        "thematiques": Thematique,
    }
    wrong = []
    for key, enum in theirs.items():
        expected = sorted(member.value for member in enum)
        if sorted(ours[key]) != expected:
            wrong.append(
                f"{key}: missing {sorted(set(expected) - set(ours[key]))}, "
                f"unknown {sorted(set(ours[key]) - set(expected))}"
            )
    if wrong:
        sys.exit("\n".join(wrong))
    print("ok")


kind, path = sys.argv[1], sys.argv[2]
if kind == "referentiels":
    referentiels(path)
else:
    validate({"structures": Structure, "services": Service}[kind], read(path))
