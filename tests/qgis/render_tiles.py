"""Opens the vector tiles of a collection in QGIS (headless) as a GIS technician would, from
the tile URL template, and renders an extent: prints whether the layer is valid and how many
pixels its features painted.

Usage: python3 render_tiles.py TEMPLATE XMIN YMIN XMAX YMAX
TEMPLATE holds {z}, {x} and {y}; the extent is in EPSG:3857 metres.
Run with Debian's /usr/bin/python3 (python3-qgis) and QT_QPA_PLATFORM=offscreen.
"""
import json
import sys

from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsRectangle,
    QgsVectorTileBasicRenderer,
    QgsVectorTileLayer,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor

template = sys.argv[1]
xmin, ymin, xmax, ymax = (float(v) for v in sys.argv[2:6])

app = QgsApplication([], False)
app.initQgis()
layer = QgsVectorTileLayer(f"type=xyz&url={template}&zmin=0&zmax=22", "services")
renderer = QgsVectorTileBasicRenderer()
renderer.setStyles(QgsVectorTileBasicRenderer.simpleStyleWithRandomColors())
layer.setRenderer(renderer)

settings = QgsMapSettings()
settings.setLayers([layer])
settings.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:3857"))
settings.setExtent(QgsRectangle(xmin, ymin, xmax, ymax))
settings.setOutputSize(QSize(512, 512))
settings.setBackgroundColor(QColor(255, 255, 255, 0))
job = QgsMapRendererSequentialJob(settings)
job.start()
job.waitForFinished()
image = job.renderedImage()
painted = sum(
    1
    for x in range(image.width())
    for y in range(image.height())
    if image.pixelColor(x, y).alpha() > 0
)
print(
    json.dumps(
        {
            "valid": layer.isValid(),
            "painted": painted,
            "errors": [e.message for e in job.errors()],
        }
    )
)
