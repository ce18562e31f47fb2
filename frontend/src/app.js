// Enhancements of the citizen pages, which all work without this script: live search (the
// server's own HTML swapped in, the count announced), commune suggestions, « autour de moi »,
// the map loaded on demand, copy buttons, and the widget's height sent to the embedding page.

const all = (selector, root = document) => Array.from(root.querySelectorAll(selector));

/** The form's fields as a query string, empty ones left out (as short as the API's URLs). */
function queryOf(form) {
  const params = new URLSearchParams();
  for (const [key, value] of new FormData(form)) {
    if (String(value).trim() !== "") params.append(key, value);
  }
  return params.toString();
}

let inFlight;

/** Fetches the page the form would load and swaps in its region `regionId`. */
async function refresh(form, regionId) {
  const query = queryOf(form);
  const url = form.getAttribute("action") + (query ? `?${query}` : "");
  inFlight?.abort();
  inFlight = new AbortController();
  let response;
  try {
    response = await fetch(url, { signal: inFlight.signal, headers: { Accept: "text/html" } });
  } catch (error) {
    if (error.name !== "AbortError") window.location.assign(url);
    return;
  }
  // Errors are shown next to their fields by the full page.
  if (!response.ok) {
    window.location.assign(url);
    return;
  }
  const page = new DOMParser().parseFromString(await response.text(), "text/html");
  const fresh = page.getElementById(regionId);
  const current = document.getElementById(regionId);
  if (!fresh || !current) {
    window.location.assign(url);
    return;
  }
  // The live region stays the same node, so screen readers announce its new text.
  const count = current.querySelector("[role=status]");
  const freshCount = fresh.querySelector("[role=status]");
  const countText = freshCount?.textContent ?? "";
  if (count && freshCount) freshCount.replaceWith(count);
  current.replaceChildren(...fresh.childNodes);
  if (count) {
    count.textContent = "";
    window.setTimeout(() => (count.textContent = countText), 50);
  }
  document.title = page.title;
  window.history.pushState({ live: true }, "", url);
  enhance(current);
  document.dispatchEvent(new CustomEvent("proximites:results"));
}

function liveForms() {
  for (const form of all("form[data-live]")) {
    const regionId = form.dataset.live;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      refresh(form, regionId);
    });
    if (form.classList.contains("generator")) {
      form.addEventListener("change", () => refresh(form, regionId));
    }
  }
  window.addEventListener("popstate", () => window.location.reload());
}

function suggestions() {
  for (const input of all("input[data-suggest]")) {
    const list = document.getElementById(input.getAttribute("list"));
    let timer;
    input.addEventListener("input", () => {
      // A commune typed replaces the position found by « autour de moi ».
      input.form?.querySelector("[data-near]")?.remove();
      window.clearTimeout(timer);
      timer = window.setTimeout(async () => {
        const q = input.value.trim();
        if (q.length < 2 || !list) return;
        const response = await fetch(`${input.dataset.suggest}?${new URLSearchParams({ q, limit: "8" })}`);
        if (!response.ok) return;
        const places = await response.json();
        list.replaceChildren(
          ...places.map((place) => {
            const option = document.createElement("option");
            option.value = `${place.name} (${place.postcodes?.[0] ?? place.insee_code})`;
            return option;
          }),
        );
      }, 150);
    });
  }
}

function locateButtons() {
  for (const button of all("[data-locate]")) {
    const status = button.parentElement.querySelector("[data-locate-status]");
    button.hidden = false;
    button.addEventListener("click", () => {
      if (!navigator.geolocation) {
        status.textContent = button.dataset.denied;
        return;
      }
      status.textContent = button.dataset.locating;
      navigator.geolocation.getCurrentPosition(
        (position) => {
          const form = button.form;
          let near = form.querySelector("[data-near]");
          if (!near) {
            near = document.createElement("input");
            near.type = "hidden";
            near.name = "near";
            near.dataset.near = "";
            form.append(near);
          }
          near.value = `${position.coords.longitude.toFixed(5)},${position.coords.latitude.toFixed(5)}`;
          const place = form.querySelector("[name=lieu]");
          if (place) place.value = "";
          status.textContent = "";
          form.requestSubmit();
        },
        () => (status.textContent = button.dataset.denied),
        { timeout: 10000, maximumAge: 60000 },
      );
    });
  }
}

/** The results on the page, for the map. */
function resultItems() {
  return all("li.result[data-lon]").map((li) => ({
    id: li.dataset.id,
    name: li.dataset.name,
    lon: Number(li.dataset.lon),
    lat: Number(li.dataset.lat),
  }));
}

function loadMapScript(container) {
  if (window.ProximitesMap) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const style = document.createElement("link");
    style.rel = "stylesheet";
    style.href = container.dataset.mapStyle;
    document.head.append(style);
    const script = document.createElement("script");
    script.src = container.dataset.mapScript;
    script.onload = resolve;
    script.onerror = reject;
    document.head.append(script);
  });
}

let mapShown = false;

function mapToggles(root) {
  for (const button of all("[data-map-toggle]", root)) {
    const container = document.getElementById(button.getAttribute("aria-controls"));
    if (!container) continue;
    button.hidden = false;
    const show = async () => {
      await loadMapScript(container);
      container.hidden = false;
      button.setAttribute("aria-expanded", "true");
      button.textContent = button.dataset.hide;
      window.ProximitesMap.show(container, resultItems());
      mapShown = true;
    };
    button.addEventListener("click", () => {
      if (button.getAttribute("aria-expanded") === "true") {
        container.hidden = true;
        button.setAttribute("aria-expanded", "false");
        button.textContent = button.dataset.show;
        mapShown = false;
      } else {
        show();
      }
    });
    // New results keep the map shown if it was.
    if (mapShown) show();
  }
}

function copyButtons(root) {
  for (const button of all("[data-copy]", root)) {
    button.hidden = false;
    button.addEventListener("click", async () => {
      const field = document.getElementById(button.dataset.copy);
      field.select();
      try {
        await navigator.clipboard.writeText(field.value);
      } catch {
        document.execCommand("copy");
      }
      const status = document.querySelector("[data-copy-status]");
      if (status) status.textContent = button.dataset.copied;
    });
  }
}

/** The widget tells the page that frames it how tall it is (nothing else). */
function reportHeight() {
  if (!document.body.dataset.embed || window.parent === window) return;
  const post = () =>
    window.parent.postMessage(
      { type: "proximites:height", height: Math.ceil(document.documentElement.scrollHeight) },
      "*",
    );
  new ResizeObserver(post).observe(document.body);
  post();
}

function enhance(root) {
  mapToggles(root);
  copyButtons(root);
}

liveForms();
suggestions();
locateButtons();
enhance(document);
reportHeight();
