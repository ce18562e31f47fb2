// The printed directories' page in the contributor space (/espace/annuaires/…), which works
// without this script: the cover preview shown in the page instead of a new tab, and the
// progress of a guide being made followed without reloading.

const labels = {
  queued: "En attente dans la file",
  composing: "Sélection et composition des fiches",
  laying_out: "Mise en page",
  writing: "Écriture du PDF",
  done: "Annuaire prêt",
  failed: "Échec",
};

function preview() {
  const button = document.getElementById("apercu");
  const form = document.getElementById("choix");
  const state = document.getElementById("apercu-etat");
  const image = document.getElementById("apercu-image");
  if (!button || !form || !state || !image) return;
  button.addEventListener("click", async (event) => {
    event.preventDefault();
    state.textContent = "Aperçu en cours…";
    let response;
    try {
      response = await fetch(button.getAttribute("formaction"), { method: "POST", body: new FormData(form) });
    } catch {
      state.textContent = "Erreur : le serveur ne répond pas.";
      return;
    }
    if (!response.ok) {
      const problem = await response.json().catch(() => ({ detail: response.statusText }));
      state.textContent = `Erreur : ${problem.detail}`;
      image.hidden = true;
      return;
    }
    // A data: address (the pages' security policy allows no blob: images).
    const reader = new FileReader();
    reader.onload = () => {
      image.src = reader.result;
      image.hidden = false;
      state.textContent = "Aperçu à jour.";
    };
    reader.readAsDataURL(await response.blob());
  });
}

function progress() {
  const state = document.getElementById("etat");
  const bar = document.getElementById("avancement");
  if (!state || !bar || state.dataset.running !== "1") return;
  async function poll() {
    let job;
    try {
      const response = await fetch(`/api/v1/directories/${encodeURIComponent(state.dataset.job)}`);
      if (!response.ok) throw new Error(response.statusText);
      job = await response.json();
    } catch {
      window.setTimeout(poll, 2000);
      return;
    }
    bar.value = Math.round(job.progress * 100);
    state.textContent =
      labels[job.stage] + (job.queue_position > 0 ? ` — ${job.queue_position} avant lui dans la file` : "");
    // The finished page holds the links (or the error).
    if (job.stage === "done" || job.stage === "failed") window.location.reload();
    else window.setTimeout(poll, 1000);
  }
  window.setTimeout(poll, 1000);
}

preview();
progress();
