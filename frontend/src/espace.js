// The contributors' entry form, improved when scripts run (the form works without them): a map
// to place or drag the point, with the commune found from it by the server; an opening-hours
// editor (days × two slots, public holidays) that writes OSM `opening_hours` and shows the
// server's preview (« ouvert maintenant ? » and the week).
import L from "leaflet";

const DAYS = [
  ["Mo", "Lundi"],
  ["Tu", "Mardi"],
  ["We", "Mercredi"],
  ["Th", "Jeudi"],
  ["Fr", "Vendredi"],
  ["Sa", "Samedi"],
  ["Su", "Dimanche"],
];

function announce(element, text) {
  if (element) element.textContent = text;
}

async function findCommune(lon, lat, output) {
  const response = await fetch(`/espace/commune?lon=${lon}&lat=${lat}`, { credentials: "same-origin" });
  if (!response.ok) {
    announce(output, "Aucune commune connue à cet endroit.");
    return;
  }
  const commune = await response.json();
  announce(output, `Commune trouvée depuis le point : ${commune.name} (${commune.insee_code})`);
}

function placementMap(container) {
  const lonInput = document.getElementById("lon");
  const latInput = document.getElementById("lat");
  const output = document.getElementById("commune-trouvee");
  container.hidden = false;
  const lon = parseFloat(lonInput.value);
  const lat = parseFloat(latInput.value);
  const start = Number.isFinite(lon) && Number.isFinite(lat) ? [lat, lon] : [45.77, 3.08];
  const map = L.map(container, { zoomControl: true, maxZoom: 19, minZoom: 5 }).setView(start, Number.isFinite(lon) ? 16 : 9);
  map.zoomControl.getContainer().querySelector(".leaflet-control-zoom-in").title = "Zoom avant";
  map.zoomControl.getContainer().querySelector(".leaflet-control-zoom-out").title = "Zoom arrière";
  map.attributionControl.setPrefix("Leaflet");
  if (container.dataset.tiles) {
    L.tileLayer(container.dataset.tiles, { maxZoom: 19, attribution: container.dataset.attribution ?? "" }).addTo(map);
  } else {
    let boundaries;
    const draw = async () => {
      const b = map.getBounds();
      const bbox = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map((n) => n.toFixed(4)).join(",");
      const response = await fetch(`/api/v1/boundaries?bbox=${bbox}`);
      if (!response.ok) return;
      boundaries?.remove();
      boundaries = L.geoJSON(await response.json(), {
        interactive: false,
        style: { color: "#6a6a6a", weight: 1, fillColor: "#f2efe9", fillOpacity: 1 },
      }).addTo(map);
      boundaries.bringToBack();
    };
    map.on("moveend", draw);
    draw();
  }
  const marker = L.marker(start, {
    draggable: true,
    keyboard: true,
    title: "Position du service (déplaçable)",
    icon: L.divIcon({
      className: "pin",
      html: '<span class="visually-hidden">Position du service</span>',
      iconSize: [22, 22],
      iconAnchor: [11, 22],
    }),
  }).addTo(map);
  const moved = (latlng) => {
    lonInput.value = latlng.lng.toFixed(6);
    latInput.value = latlng.lat.toFixed(6);
    findCommune(lonInput.value, latInput.value, output);
  };
  marker.on("dragend", () => moved(marker.getLatLng()));
  map.on("click", (event) => {
    marker.setLatLng(event.latlng);
    moved(event.latlng);
  });
  const typed = () => {
    const lon = parseFloat(lonInput.value);
    const lat = parseFloat(latInput.value);
    if (!Number.isFinite(lon) || !Number.isFinite(lat)) return;
    marker.setLatLng([lat, lon]);
    map.panTo([lat, lon]);
    findCommune(lon, lat, output);
  };
  lonInput.addEventListener("change", typed);
  latInput.addEventListener("change", typed);
}

/** `Mo-Fr 08:30-12:00,13:30-17:00; Sa 09:00-12:00; PH off` from the editor's grid. */
function composeHours(days, holidaysClosed) {
  const rules = [];
  let i = 0;
  while (i < days.length) {
    const slots = days[i].slots.join(",");
    let j = i;
    while (j + 1 < days.length && days[j + 1].slots.join(",") === slots) j += 1;
    if (slots) {
      const span = i === j ? days[i].code : `${days[i].code}-${days[j].code}`;
      rules.push(`${span} ${slots}`);
    }
    i = j + 1;
  }
  if (rules.length && holidaysClosed) rules.push("PH off");
  return rules.join("; ");
}

async function preview(value, output) {
  const response = await fetch(`/espace/horaires?oh=${encodeURIComponent(value)}`, { credentials: "same-origin" });
  output.innerHTML = await response.text();
}

function hoursEditor(editor) {
  const field = document.getElementById("opening_hours");
  const output = document.getElementById("apercu-horaires-direct");
  editor.hidden = false;
  const rows = DAYS.map(([code, label]) => `<tr><th scope="row">${label}</th>${["matin, ouverture", "matin, fermeture", "après-midi, ouverture", "après-midi, fermeture"]
    .map((part, k) => `<td><input type="time" data-day="${code}" data-slot="${k}" aria-label="${label}, ${part}"></td>`)
    .join("")}</tr>`);
  editor.querySelector("tbody").innerHTML = rows.join("");
  editor.querySelector("[data-write-hours]").addEventListener("click", () => {
    const days = DAYS.map(([code]) => {
      const times = [0, 1, 2, 3].map((k) => editor.querySelector(`input[data-day="${code}"][data-slot="${k}"]`).value);
      const slots = [];
      if (times[0] && times[1]) slots.push(`${times[0]}-${times[1]}`);
      if (times[2] && times[3]) slots.push(`${times[2]}-${times[3]}`);
      return { code, slots };
    });
    field.value = composeHours(days, editor.querySelector("#feries-fermes").checked);
    preview(field.value, output);
  });
  let timer;
  field.addEventListener("input", () => {
    window.clearTimeout(timer);
    timer = window.setTimeout(() => preview(field.value, output), 400);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const container = document.getElementById("carte-fiche");
  if (container) placementMap(container);
  const editor = document.getElementById("editeur-horaires");
  if (editor) hoursEditor(editor);
});
