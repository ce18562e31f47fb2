// The printed directories' pages of the contributor space in Debian's Chromium (playwright-core):
// a signed-in contributor fills the form, previews the cover in the page, makes the guide and
// follows it to its links, under the site's security policy; axe-core (WCAG 2.1 A and AA) in
// every state; no request off the origin, no console error (a script refused by the CSP says
// so there). Usage: node directory.mjs BASE_URL SESSION_COOKIE_VALUE
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [base, session] = process.argv.slice(2);
assert.ok(base && session, "usage: node directory.mjs http://127.0.0.1:PORT SESSION");
const origin = new URL(base).origin;
const axeSource = readFileSync(new URL("../node_modules/axe-core/axe.min.js", import.meta.url), "utf8");
const tags = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];

async function axe(page, state) {
  await page.evaluate(axeSource);
  const violations = await page.evaluate(
    async (tags) => (await window.axe.run(document, { runOnly: { type: "tag", values: tags } })).violations,
    tags,
  );
  const described = violations.map(
    (v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).slice(0, 3).join(" | ")}`,
  );
  assert.deepEqual(described, [], `axe violations in state « ${state} »`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update"],
});
const context = await browser.newContext({ locale: "fr-FR" });
await context.addCookies([{ name: "proximites_session", value: session, domain: "127.0.0.1", path: "/espace" }]);
const foreign = [];
context.on("request", (request) => {
  const url = new URL(request.url());
  if (!["data:", "blob:", "about:"].includes(url.protocol) && url.origin !== origin) foreign.push(request.url());
});
const page = await context.newPage();
const errors = [];
page.on("console", (message) => {
  if (message.type() === "error") errors.push(message.text());
});
page.on("pageerror", (error) => errors.push(String(error)));

let failed = false;
try {
  await page.goto(`${base}/espace/annuaires/nouveau`);
  assert.equal(await page.locator("h1").textContent(), "Nouvel annuaire imprimé");
  await axe(page, "form");

  await page.fill("#territory", "epci:246300701");
  await page.fill("#typologies", "mairie");
  await page.fill("#title", "Les mairies de la métropole");
  await page.click("#apercu");
  await page.waitForFunction(() => !document.getElementById("apercu-image").hidden);
  assert.match(await page.getAttribute("#apercu-image", "src"), /^data:image\/svg\+xml/);
  assert.equal(await page.locator("#apercu-etat").textContent(), "Aperçu à jour.");
  assert.equal(page.url(), `${base}/espace/annuaires/nouveau`, "the preview stays in the page");
  await axe(page, "cover preview");

  await page.fill("#territory", "nulle-part");
  await page.click("#apercu");
  await page.waitForFunction(() => document.getElementById("apercu-etat").textContent.startsWith("Erreur"));
  await page.fill("#territory", "epci:246300701");

  await Promise.all([page.waitForURL(/\/espace\/annuaires\/[0-9a-z]+$/), page.click("button.primary")]);
  await page.waitForSelector("text=Télécharger le livret PDF", { timeout: 120_000 });
  assert.match(await page.locator("#etat").textContent(), /Annuaire prêt/);
  await axe(page, "guide made");
  const pdf = await page.getAttribute("text=Télécharger le livret PDF", "href");
  const response = await page.request.get(`${base}${pdf}`);
  assert.equal(response.headers()["content-type"], "application/pdf");

  assert.deepEqual(foreign, [], "no third-party request");
  // The one refusal asked for above (an unknown territory) is the only resource that failed.
  const expected = "Failed to load resource: the server responded with a status of 422 (Unprocessable Entity)";
  assert.deepEqual(errors, [expected], "no other console error");
  console.log("ok   printed directory: form, cover preview in the page, guide made and followed");
} catch (error) {
  failed = true;
  console.error(`FAIL printed directory: ${error.stack ?? error}`);
}
await browser.close();
process.exit(failed ? 1 : 0);
