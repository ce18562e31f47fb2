// Browser tests of the contributors' pages, in Debian's Chromium driven by playwright-core:
// invitation, the session cookie (only on /espace, HttpOnly, SameSite=Lax), the entry form's map
// (the commune found from the point) and opening-hours editor (OSM value and preview), creation,
// history; axe-core (WCAG 2.1 A and AA) on every page; no cookie on the citizen pages; no request
// off the origin. Usage: node espace.mjs BASE_URL INVITATION_PATH
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [base, invitation] = process.argv.slice(2);
assert.ok(base && invitation, "usage: node espace.mjs http://127.0.0.1:PORT /espace/invitation/SECRET");
const origin = new URL(base).origin;
const axeSource = readFileSync(new URL("../node_modules/axe-core/axe.min.js", import.meta.url), "utf8");
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

const results = [];
const failures = [];
async function check(name, body) {
  const started = Date.now();
  try {
    await body();
    results.push(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    failures.push(`FAIL ${name}: ${error.stack ?? error}`);
  }
}

async function axe(page, state) {
  await page.evaluate(axeSource);
  const violations = await page.evaluate(
    async () =>
      (await window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } })).violations,
  );
  const described = violations.map(
    (v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).slice(0, 3).join(" | ")}`,
  );
  assert.deepEqual(described, [], `axe violations in « ${state} »`);
}

await check("invitation, session cookie, entry form with map and hours editor, history", async () => {
  const context = await browser.newContext({ locale: "fr-FR" });
  const foreign = [];
  context.on("request", (request) => {
    const url = new URL(request.url());
    if (!["data:", "blob:", "about:"].includes(url.protocol) && url.origin !== origin) foreign.push(request.url());
  });
  const page = await context.newPage();
  const scriptErrors = [];
  page.on("pageerror", (error) => scriptErrors.push(String(error)));

  for (const path of ["/", "/recherche?q=mairie", "/evenements-de-vie"]) {
    await page.goto(`${base}${path}`);
  }
  assert.deepEqual(await context.cookies(), [], "the citizen pages set no cookie");

  await page.goto(`${base}${invitation}`);
  await axe(page, "invitation");
  await page.fill("#password", "un mot de passe assez long");
  await page.fill("#confirmation", "un mot de passe assez long");
  await page.click("button[type=submit]");
  await page.waitForURL(`${base}/espace`);
  const cookies = await context.cookies();
  assert.equal(cookies.length, 1);
  assert.equal(cookies[0].name, "proximites_session");
  assert.equal(cookies[0].path, "/espace");
  assert.equal(cookies[0].httpOnly, true);
  assert.equal(cookies[0].sameSite, "Lax");
  await axe(page, "my entries");

  // The cookie is not sent to the citizen pages (its path), which still set none.
  const citizen = await page.goto(`${base}/`);
  assert.equal((await citizen.request().allHeaders()).cookie, undefined, "no cookie sent to /");

  await page.goto(`${base}/espace/fiches/nouvelle`);
  await page.waitForSelector("#carte-fiche.leaflet-container");
  // Placing the point: a click on the map fills lon/lat and the commune is announced.
  await page.locator("#carte-fiche").scrollIntoViewIfNeeded();
  const box = await page.locator("#carte-fiche").boundingBox();
  // Beside the marker (which sits at the centre): a click on the map itself.
  await page.mouse.click(box.x + box.width / 2 + 12, box.y + box.height / 2 + 8);
  await page
    .waitForFunction(() => /Commune trouvée/.test(document.querySelector("#commune-trouvee").textContent), null, { timeout: 10000 })
    .catch(async (error) => {
      const state = { box, lon: await page.inputValue("#lon"), said: await page.textContent("#commune-trouvee"), scriptErrors };
      throw new Error(`no commune announced: ${JSON.stringify(state)}: ${error}`);
    });
  assert.match(await page.textContent("#commune-trouvee"), /Clermont-Ferrand \(63113\)|\(63\d{3}\)/);
  const lon = parseFloat(await page.inputValue("#lon"));
  const lat = parseFloat(await page.inputValue("#lat"));
  assert.ok(Math.abs(lon - 3.08) < 0.05 && Math.abs(lat - 45.77) < 0.05, `point ${lon},${lat}`);

  // Hours: Monday to Friday mornings and afternoons, closed on public holidays.
  for (const day of ["Mo", "Tu", "We", "Th", "Fr"]) {
    await page.fill(`input[data-day=${day}][data-slot="0"]`, "08:30");
    await page.fill(`input[data-day=${day}][data-slot="1"]`, "12:00");
    await page.fill(`input[data-day=${day}][data-slot="2"]`, "13:30");
    await page.fill(`input[data-day=${day}][data-slot="3"]`, "17:00");
  }
  await page.fill('input[data-day=Sa][data-slot="0"]', "09:00");
  await page.fill('input[data-day=Sa][data-slot="1"]', "12:00");
  await page.click("[data-write-hours]");
  assert.equal(await page.inputValue("#opening_hours"), "Mo-Fr 08:30-12:00,13:30-17:00; Sa 09:00-12:00; PH off");
  await page.waitForFunction(() => /Horaires compris/.test(document.querySelector("#apercu-horaires-direct").textContent));
  assert.match(await page.textContent("#apercu-horaires-direct"), /Ouvert maintenant \?|Lundi/);
  await axe(page, "new entry, map and hours editor");

  await page.selectOption("#typology", "mairie");
  await page.fill("#name", "Maison du Colibri");
  await page.click("form[action='/espace/fiches/nouvelle'] button[type=submit]");
  await page.waitForURL(/\/espace\/fiches\/[0-9a-z]{16}\?enregistree=1/);
  assert.match(await page.textContent("[role=alert]"), /Fiche enregistrée/);
  // Stored normalised, as imports store it.
  assert.equal(await page.inputValue("#opening_hours"), "Mo-Fr 08:30-12:00,13:30-17:00; Sa 09:00-12:00; PH closed");
  await page.waitForSelector("#carte-fiche.leaflet-container");
  await axe(page, "edit form");

  await page.click("a[href$='/historique']");
  await page.waitForURL(/historique$/);
  assert.match(await page.textContent("table"), /création/);
  await axe(page, "history");

  for (const path of ["/espace/engagements", "/espace/signalements", "/espace/campagnes", "/espace/equipe", "/espace/import"]) {
    await page.goto(`${base}${path}`);
    await axe(page, path);
  }

  // The organisation's settings: the référent's fields editable, the convention read-only.
  await page.goto(`${base}/espace/organisations`);
  await page.click("main ul a[href^='/espace/organisations/org-']");
  await page.waitForSelector("#referent_email");
  assert.equal(await page.getAttribute("#territory", "readonly"), "");
  await axe(page, "organisation settings");

  // An API token made on the team page: shown once, in a labelled field.
  await page.goto(`${base}/espace/equipe`);
  await page.fill("input[id^='jeton-nom-']", "SIG");
  await page.click("form[action='/espace/equipe/jetons'] button[type=submit]");
  await page.waitForSelector("#jeton-cree");
  assert.match(await page.inputValue("#jeton-cree"), /^pxm_/);
  await axe(page, "token created");
  await page.goto(`${base}/espace/import`);

  // A bulk update: the check first (one row to create, one wrong), then a good file applied.
  const header = "source_ref,typology,name,address,postcode,city,insee_code,lon,lat,phone,email,website,opening_hours,wheelchair,description";
  const csv = (rows) => ({ name: "fiches.csv", mimeType: "text/csv", buffer: Buffer.from([header, ...rows].join("\n") + "\n") });
  await page.setInputFiles("#fichier", csv(["m1,mairie,Mairie annexe de Montferrand,,,,63113,3.1050,45.7930,,,,,,", "m2,mairie,Sans point,,,,63113,abc,45.79,,,,,,"]));
  await page.click("form[action='/espace/import'] button[type=submit]");
  await page.waitForSelector("#refus");
  assert.match(await page.textContent("[role=alert]"), /Ligne 3/);
  await axe(page, "bulk update with a wrong row");
  await page.goto(`${base}/espace/import`);
  await page.setInputFiles("#fichier", csv(["m1,mairie,Mairie annexe de Montferrand,,,,63113,3.1050,45.7930,,,,,,"]));
  await page.click("form[action='/espace/import'] button[type=submit]");
  await page.waitForSelector("#creations");
  assert.match(await page.textContent("#resume + ul"), /1 fiche à créer/);
  await axe(page, "bulk update checked");
  await page.click("button:text('Appliquer')");
  await page.waitForSelector("[role=status]");
  assert.match(await page.textContent("[role=status]"), /1 fiche créée/);
  await axe(page, "bulk update applied");

  // A town hall the Annuaire harvested in the territory, claimed from « Mes fiches »: the
  // entry's page then tells where it came from and what its source suggests.
  await page.goto(`${base}/espace`);
  const claimable = page.locator("section[aria-labelledby=a-revendiquer] form button[type=submit]");
  assert.ok((await claimable.count()) > 0, "harvested entries to claim");
  await claimable.first().click();
  await page.waitForURL(/\/espace\/fiches\/[0-9a-z]{16}\?enregistree=1/);
  assert.match(await page.textContent("section[aria-labelledby=origine]"), /Revendiquée le .*Annuaire de l'administration/s);
  assert.match(await page.textContent("section[aria-labelledby=suggestions]"), /Aucune suggestion en attente/);
  await axe(page, "claimed entry, origin and suggestions");

  assert.deepEqual(scriptErrors, [], "no script error");
  assert.deepEqual(foreign, [], "no request leaves the origin");
  await context.close();
});

await browser.close();
console.log(results.join("\n"));
if (failures.length) {
  console.error(failures.join("\n\n"));
  process.exit(1);
}
