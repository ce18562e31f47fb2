"""Pages a sorted OGC API – Features collection to its end with OWSLib, as a GIS script does.

Usage: page_sorted.py BASE_URL PROPERTY asc|desc LIMIT
Prints the number of features read, then one line per feature: its id and its value.
"""
import sys
from urllib.parse import parse_qs, urlparse

from owslib.ogcapi.features import Features

base, prop, order, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
api = Features(base)
cursor = None
seen = []
while True:
    kwargs = {"sortby": (prop, order), "limit": limit}
    if cursor:
        kwargs["cursor"] = cursor
    page = api.collection_items("services", **kwargs)
    for feature in page["features"]:
        seen.append((feature["id"], feature["properties"].get(prop) or ""))
    following = [link for link in page.get("links", []) if link.get("rel") == "next"]
    if not following:
        break
    cursor = parse_qs(urlparse(following[0]["href"]).query)["cursor"][0]
print(len(seen))
for identifier, value in seen:
    print(f"{identifier}\t{value}")
