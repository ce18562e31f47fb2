"""Reads a DCAT catalogue as JSON-LD with pyld (the JSON-LD processor, PyPI) and checks the
properties DCAT-AP 3 makes mandatory, on the expanded terms (full IRIs), as a harvester reads
them. Prints one line per distribution and service: its type and URL.

Usage: check_catalogue.py FILE
"""
import json
import sys

from pyld import jsonld

DCAT = "http://www.w3.org/ns/dcat#"
DCT = "http://purl.org/dc/terms/"

with open(sys.argv[1], encoding="utf-8") as f:
    document = json.load(f)
# Flattened without a context: a list of nodes, every term a full IRI.
flat = jsonld.flatten(document)
graph = flat["@graph"] if isinstance(flat, dict) else flat
nodes = {node["@id"]: node for node in graph if "@id" in node}


def of_type(kind):
    return [n for n in nodes.values() if DCAT + kind in n.get("@type", [])]


def values(node, term):
    return node.get(term, [])


def need(node, term, what):
    if not values(node, term):
        sys.exit(f"{what} {node.get('@id')}: {term} missing")


catalogues = of_type("Catalog")
assert len(catalogues) == 1, catalogues
catalogue = catalogues[0]
for term in [DCT + "title", DCT + "description", DCT + "publisher", DCAT + "dataset"]:
    need(catalogue, term, "Catalog")
datasets = of_type("Dataset")
assert datasets, "no dataset"
for dataset in datasets:
    for term in [DCT + "title", DCT + "description", DCAT + "distribution"]:
        need(dataset, term, "Dataset")
distributions = of_type("Distribution")
assert distributions, "no distribution"
for distribution in distributions:
    need(distribution, DCAT + "accessURL", "Distribution")
    need(distribution, DCT + "license", "Distribution")
    url = values(distribution, DCAT + "downloadURL")[0]["@id"]
    print(f"distribution\t{url}")
for service in of_type("DataService"):
    need(service, DCAT + "endpointURL", "DataService")
    need(service, DCT + "title", "DataService")
    print(f"service\t{values(service, DCAT + 'endpointURL')[0]['@id']}")
modified = values(catalogue, DCT + "modified")[0]
assert modified["@type"] == "http://www.w3.org/2001/XMLSchema#dateTime", modified
