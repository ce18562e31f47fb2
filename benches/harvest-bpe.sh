#!/usr/bin/env bash
# The BPE figures of issue 16: a file of ROWS rows in the layout of the INSEE Base permanente
# des équipements (`;`-separated, TYPEQU, DEPCOM, NOMRS, address columns, LAMBERT_X/LAMBERT_Y
# with their EPSG: Lambert-93 in metropolitan France, the UTM zone of each overseas
# département, reprojected here by PROJ's cs2cs), written from the generated entries of
# benches/search.sh (target/bench/synth-3000000-1.csv: real communes and positions). Each row
# takes a BPE type of its typology, or one of a typology chosen from its number when its
# typology has none; one row in ten is of a type no typology takes (shops, trades: most of the
# real BPE), one in a hundred is published without coordinates. Then:
#   - `proximites harvest bpe` into a new database, timed (reprojection included);
#   - the server started on it, timed until a harvested name is found by the search API;
#   - the same file harvested again (every row matched, nothing changed), timed;
#   - with WITH_DILA=N, benches/harvest.sh's N records of the Annuaire (the same generated
#     services as the first BPE rows) harvested into that directory afterwards: the detection
#     of duplicates across sources at the scale of a national directory.
#
# Usage: benches/harvest-bpe.sh [ROWS]      (default 2800000)
# Environment: BIN (default target/release/proximites, built here), PORT (default 18093).
set -euo pipefail
export LC_ALL=C
rows=${1:-2800000}
cd "$(dirname "$0")/.."
default_port=18093
. benches/harvest-common.sh
python3 - "$synth" taxonomy/typologies.toml "$rows" "$work/bpe.csv" <<'PY'
import csv, subprocess, sys, tomllib
synth, taxonomy, wanted, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with open(taxonomy, "rb") as f:
    bpe = {t["code"]: t["bpe"][0] for t in tomllib.load(f)["typology"] if t.get("bpe")}
mapped = sorted(bpe.values())
unmapped = ["A203", "A501", "B207", "B202", "A404", "B302"]
def epsg(insee):
    return {"971": 5490, "972": 5490, "973": 2972, "974": 2975, "976": 4471}.get(insee[:3], 2154)
rows = []
with open(synth, encoding="utf-8") as f:
    for n, row in enumerate(csv.DictReader(f)):
        if n == wanted:
            break
        if n % 10 == 9:
            typequ = unmapped[n % len(unmapped)]
        else:
            typequ = bpe.get(row["typology"]) or mapped[n % len(mapped)]
        rows.append((row, typequ, n % 100 == 42))
# Reprojected by PROJ, one cs2cs per system (EPSG:4326 takes latitude first).
projected = [None] * len(rows)
for code in sorted({epsg(r[0]["insee_code"]) for r in rows}):
    at = [i for i, r in enumerate(rows) if epsg(r[0]["insee_code"]) == code and not r[2]]
    text = "".join(f'{rows[i][0]["lat"]} {rows[i][0]["lon"]}\n' for i in at)
    result = subprocess.run(["cs2cs", "-f", "%.2f", "EPSG:4326", f"EPSG:{code}"],
                            input=text, capture_output=True, text=True, check=True).stdout.split("\n")
    for i, line in zip(at, result):
        x, y, _ = line.split()
        projected[i] = (x, y, code)
with open(out, "w", encoding="utf-8", newline="") as o:
    w = csv.writer(o, delimiter=";", lineterminator="\r\n")
    w.writerow(["NOMRS", "CNOMRS", "NUMVOIE", "INDREP", "TYPVOIE", "LIBVOIE", "CADR", "CODPOS",
                "DEPCOM", "DEP", "TYPEQU", "SIRET", "LAMBERT_X", "LAMBERT_Y", "QUALITE_XY",
                "EPSG", "LIBCOM", "AN"])
    for (row, typequ, bare), xy in zip(rows, projected):
        number, _, street = row["address"].partition(" ")
        x, y, code = xy if xy else ("", "", "")
        insee = row["insee_code"]
        w.writerow([row["name"].upper(), "", number, "", "", street.upper(), "", row["postcode"],
                    insee, insee[:3] if insee.startswith("97") else insee[:2], typequ, "", x, y,
                    "" if bare else "Bonne", code, row["city"], "2024"])
print(f"{len(rows)} rows")
PY
ls -l "$work/bpe.csv" | awk '{printf "BPE file: %.0f MB\n", $5/1e6}'
started=$(date +%s.%N)
harvest bpe "$work/bpe.csv"
harvest_s=$(since "$started")
start_server
# Searches by place and typology answer once the spatial index is loaded; searches by words
# once the text index is built (a new database has none yet: it is built from every entry).
until_found "typology=mairie" "near=3.0863,45.7797"
placed_s=$(since "$started")
until_found "q=$(tail -2 "$work/bpe.csv" | head -1 | cut -d';' -f1)"
echo "harvest $harvest_s s; searchable by place and typology after $placed_s s, by words after $(since "$started") s (server start included)"
stop_server
again=$(date +%s.%N)
harvest bpe "$work/bpe.csv"
echo "second harvest of the same file: $(since "$again") s"
if [ -n "${WITH_DILA:-}" ]; then
    HARVEST_DB="$db" BIN="$BIN" PORT=$((port + 1)) benches/harvest.sh "$WITH_DILA"
fi
