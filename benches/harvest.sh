#!/usr/bin/env bash
# The harvest figures of issue 16: a DILA file of RECORDS records (the size of the national
# « Base de données locales », about 63,000 local offices) written in its bulk shape from the
# generated entries of benches/search.sh (target/bench/synth-3000000-1.csv: real communes and
# positions, typologies with a DILA pivot type, hours in plage_ouverture), then:
#   - `proximites harvest dila` into a new database, timed;
#   - the server started on it, timed until a harvested name is found by the search API;
#   - the same file harvested again (everything unchanged), timed.
#
# Usage: benches/harvest.sh [RECORDS]      (default 63000)
# Environment: BIN (default target/release/proximites, built here), PORT (default 18092).
set -euo pipefail
export LC_ALL=C
records=${1:-63000}
cd "$(dirname "$0")/.."
default_port=18092
. benches/harvest-common.sh
python3 - "$synth" taxonomy/typologies.toml "$records" "$work/dila.json" <<'PY'
import csv, json, sys, tomllib
synth, taxonomy, wanted, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with open(taxonomy, "rb") as f:
    pivot = {t["code"]: t["pivot"][0] for t in tomllib.load(f)["typology"] if t.get("pivot")}
days = {"Mo": "Lundi", "Tu": "Mardi", "We": "Mercredi", "Th": "Jeudi", "Fr": "Vendredi",
        "Sa": "Samedi", "Su": "Dimanche"}
def ranges(hours):
    found = []
    for rule in hours.split(";"):
        rule = rule.strip()
        if " " not in rule:
            continue
        span, times = rule.split(" ", 1)
        first, _, last = span.partition("-")
        if first not in days or (last and last not in days):
            continue
        slots = [t.split("-") for t in times.split(",") if "-" in t][:2]
        entry = {"nom_jour_debut": days[first], "nom_jour_fin": days[last or first], "commentaire": ""}
        for i, (a, b) in enumerate(slots, 1):
            entry[f"valeur_heure_debut_{i}"] = a + ":00"
            entry[f"valeur_heure_fin_{i}"] = b + ":00"
        found.append(entry)
    return found
with open(synth, encoding="utf-8") as f, open(out, "w", encoding="utf-8") as o:
    o.write('{"service": [\n')
    n = 0
    for row in csv.DictReader(f):
        if row["typology"] not in pivot:
            continue
        record = {
            "id": f"00000000-0000-4000-8000-{n:012d}",
            "nom": row["name"],
            "pivot": [{"type_service_local": pivot[row["typology"]], "code_insee_commune": [row["insee_code"]]}],
            "code_insee_commune": row["insee_code"],
            "adresse": [{"type_adresse": "Adresse", "numero_voie": row["address"], "complement1": "",
                         "complement2": "", "service_distribution": "", "code_postal": row["postcode"],
                         "nom_commune": row["city"], "pays": "France", "longitude": row["lon"],
                         "latitude": row["lat"], "accessibilite": "ACC", "note_accessibilite": ""}],
            "telephone": [{"valeur": row["phone"], "description": ""}] if row["phone"] else [],
            "adresse_courriel": [row["email"]] if row["email"] else [],
            "site_internet": [{"libelle": "", "valeur": row["website"]}] if row["website"] else [],
            "plage_ouverture": ranges(row["opening_hours"]),
            "date_modification": "2026-12-01 08:00:00",
            "url_service_public": f"https://lannuaire.service-public.fr/x/{n}",
        }
        o.write(("," if n else "") + json.dumps(record, ensure_ascii=False) + "\n")
        n += 1
        if n == wanted:
            break
    o.write("]}\n")
print(f"{n} records")
PY
ls -l "$work/dila.json" | awk '{printf "DILA file: %.0f MB\n", $5/1e6}'
started=$(date +%s.%N)
harvest dila "$work/dila.json"
harvest_s=$(since "$started")
start_server
until_found "q=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['service'][-1]['nom'])" "$work/dila.json")"
echo "harvest $harvest_s s, searchable after $(since "$started") s (server start included)"
stop_server
again=$(date +%s.%N)
harvest dila "$work/dila.json"
echo "second harvest of the same file: $(since "$again") s"
