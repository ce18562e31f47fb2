"""Loads an OGC API – Features collection in QGIS (headless) as a GIS technician would, by
pasting the endpoint, and prints what QGIS sees: feature count, features read, CRS, fields.

Usage: python3 read_layer.py ENDPOINT COLLECTION [CRS]
Run with Debian's /usr/bin/python3 (python3-qgis) and QT_QPA_PLATFORM=offscreen.
"""
import json
import sys

from qgis.core import QgsApplication, QgsVectorLayer

endpoint, collection = sys.argv[1], sys.argv[2]
crs = sys.argv[3] if len(sys.argv) > 3 else None

app = QgsApplication([], False)
app.initQgis()
uri = f"url='{endpoint}' typename='{collection}' restrictToRequestBBOX='0'"
if crs:
    uri += f" srsname='{crs}'"
layer = QgsVectorLayer(uri, collection, "OAPIF")
if not layer.isValid():
    print(json.dumps({"valid": False, "error": layer.error().summary()}))
    sys.exit(1)
ids = set()
first = None
for feature in layer.getFeatures():
    ids.add(feature["id"])
    if first is None:
        point = feature.geometry().asPoint()
        first = {"id": feature["id"], "x": point.x(), "y": point.y()}
print(
    json.dumps(
        {
            "valid": True,
            "feature_count": layer.featureCount(),
            "read": len(ids),
            "crs": layer.crs().authid(),
            "fields": [f.name() for f in layer.fields()],
            "first": first,
        }
    )
)
# The layer goes before the application: QGIS 3.22 crashes at exit otherwise.
del layer
app.exitQgis()
