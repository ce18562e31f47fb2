// The results map, loaded only when a citizen asks for it: Leaflet with French labels, every
// marker named for screen readers, clusters when points are many, list and map in step. The
// base map is our server's tile proxy, or the commune boundaries from our own API: no request
// leaves the site.
import L from "./leaflet-global.js";
import "leaflet.markercluster";

const texts = {
  fr: { zoomIn: "Zoom avant", zoomOut: "Zoom arrière", cluster: (n) => `${n} services regroupés : zoomer` },
  en: { zoomIn: "Zoom in", zoomOut: "Zoom out", cluster: (n) => `${n} grouped services: zoom in` },
};

let map;
let clusters;
let boundaries;
let markers = new Map();

function escapeHtml(text) {
  const span = document.createElement("span");
  span.textContent = text;
  return span.innerHTML;
}

function listLink(id) {
  return document.querySelector(`li.result[data-id="${CSS.escape(id)}"] a`);
}

async function drawBoundaries(container) {
  const b = map.getBounds();
  const bbox = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map((n) => n.toFixed(4)).join(",");
  const response = await fetch(`${container.dataset.boundaries}?bbox=${bbox}`);
  if (!response.ok) return;
  const data = await response.json();
  boundaries?.remove();
  boundaries = L.geoJSON(data, {
    interactive: false,
    style: { color: "#6a6a6a", weight: 1, fillColor: "#f2efe9", fillOpacity: 1 },
  }).addTo(map);
  boundaries.bringToBack();
}

function create(container) {
  const t = texts[container.dataset.lang] ?? texts.fr;
  map = L.map(container, { zoomControl: false, attributionControl: true, maxZoom: 19, minZoom: 5 });
  L.control.zoom({ zoomInTitle: t.zoomIn, zoomOutTitle: t.zoomOut }).addTo(map);
  map.attributionControl.setPrefix("Leaflet");
  if (container.dataset.tiles) {
    L.tileLayer(container.dataset.tiles, {
      maxZoom: 19,
      attribution: escapeHtml(container.dataset.attribution ?? ""),
    }).addTo(map);
  } else {
    let timer;
    map.on("moveend", () => {
      window.clearTimeout(timer);
      timer = window.setTimeout(() => drawBoundaries(container), 200);
    });
  }
  clusters = L.markerClusterGroup({
    showCoverageOnHover: false,
    iconCreateFunction: (cluster) => {
      const n = cluster.getChildCount();
      return L.divIcon({
        className: "cluster",
        html: `<span aria-hidden="true">${n}</span><span class="visually-hidden">${t.cluster(n)}</span>`,
        iconSize: [36, 36],
      });
    },
  });
  map.addLayer(clusters);
}

function show(container, items) {
  if (!map || map.getContainer() !== container) {
    map?.remove();
    create(container);
  }
  clusters.clearLayers();
  markers = new Map();
  for (const item of items) {
    const marker = L.marker([item.lat, item.lon], {
      title: item.name,
      keyboard: true,
      icon: L.divIcon({
        className: "pin",
        html: `<span class="visually-hidden">${escapeHtml(item.name)}</span>`,
        iconSize: [22, 22],
        iconAnchor: [11, 22],
      }),
    });
    marker.bindTooltip(escapeHtml(item.name));
    marker.on("click keypress", () => {
      const link = listLink(item.id);
      if (link) {
        link.closest("li").classList.add("highlight");
        link.focus();
      }
    });
    markers.set(item.id, marker);
    clusters.addLayer(marker);
  }
  for (const li of document.querySelectorAll("li.result[data-id]")) {
    const marker = markers.get(li.dataset.id);
    if (!marker) continue;
    const on = () => {
      marker.getElement()?.classList.add("active");
      if (marker.getElement()) marker.openTooltip();
    };
    const off = () => {
      marker.getElement()?.classList.remove("active");
      marker.closeTooltip();
      li.classList.remove("highlight");
    };
    li.addEventListener("mouseenter", on);
    li.addEventListener("focusin", on);
    li.addEventListener("mouseleave", off);
    li.addEventListener("focusout", off);
  }
  map.invalidateSize();
  if (items.length === 1) {
    map.setView([items[0].lat, items[0].lon], 15);
  } else if (items.length > 1) {
    map.fitBounds(L.latLngBounds(items.map((i) => [i.lat, i.lon])), { padding: [24, 24] });
  } else {
    map.setView([46.6, 2.5], 5);
  }
}

window.ProximitesMap = { show };
