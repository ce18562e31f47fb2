// Browser tests of the citizen pages and the widget, in Debian's Chromium driven by
// playwright-core: journeys by commune name, by geolocation, by keyboard and without
// JavaScript; axe-core (WCAG 2.1 A and AA) in every state; no request off the origin, no
// cookie; the widget embedded in a page of another origin. Usage: node citizen.mjs BASE_URL
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { chromium } from "playwright-core";

const base = process.argv[2];
assert.ok(base, "usage: node citizen.mjs http://127.0.0.1:PORT");
const origin = new URL(base).origin;
const axeSource = readFileSync(new URL("../node_modules/axe-core/axe.min.js", import.meta.url), "utf8");
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";

const browser = await chromium.launch({
  executablePath: chromiumPath,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

// The page of "another site" that embeds the widget, on a second loopback origin.
const host = createServer((request, response) => {
  response.writeHead(200, { "content-type": "text/html; charset=utf-8" });
  response.end(`<!DOCTYPE html><html lang="fr"><head><meta charset="utf-8"><title>Commune de test</title></head>
<body><main><h1>Site de la commune</h1>
<script src="${origin}/widget.js" data-territory="epci:200070753" data-title="Services de Riom Limagne et Volcans" data-color="#8a2be2" data-map="1" async></script>
</main></body></html>`);
});
await new Promise((resolve) => host.listen(0, "127.0.0.1", resolve));
const hostOrigin = `http://127.0.0.1:${host.address().port}`;

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

/** A context that records every request leaving the allowed origins. */
async function newContext(options = {}, allowed = [origin]) {
  const context = await browser.newContext({ locale: "fr-FR", ...options });
  context.foreign = [];
  context.on("request", (request) => {
    const url = new URL(request.url());
    if (["data:", "blob:", "about:"].includes(url.protocol)) return;
    if (!allowed.includes(url.origin)) context.foreign.push(request.url());
  });
  return context;
}

const tags = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];

/** axe-core in `frame` (a page or frame): zero violations, or the list of them. */
async function axe(frame, state) {
  await frame.evaluate(axeSource);
  const violations = await frame.evaluate(
    async (tags) => (await window.axe.run(document, { runOnly: { type: "tag", values: tags } })).violations,
    tags,
  );
  const described = violations.map(
    (v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).slice(0, 3).join(" | ")}`,
  );
  assert.deepEqual(described, [], `axe violations in state « ${state} »`);
}

async function noHorizontalScroll(page, state) {
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `horizontal scroll of ${overflow}px at 320px in « ${state} »`);
}

const countText = (page) => page.locator("#compte").textContent();

await check("search by commune name, with suggestions, then the map", async () => {
  const context = await newContext();
  const page = await context.newPage();
  await page.goto(`${base}/recherche`);
  await axe(page, "empty");
  await page.fill("#f-q", "mairie");
  await page.locator("#f-lieu").pressSequentially("Rio", { delay: 30 });
  await page.waitForFunction(() => document.querySelectorAll("#f-lieu-suggestions option").length > 0);
  const suggestion = await page.locator("#f-lieu-suggestions option").first().getAttribute("value");
  assert.match(suggestion, /^Rio/);
  await page.fill("#f-lieu", "Riom");
  await page.press("#f-lieu", "Enter");
  await page.waitForFunction(() => /trouvé/.test(document.querySelector("#compte").textContent));
  assert.match(page.url(), /lieu=Riom/, "the URL is shareable");
  assert.match(await countText(page), /services? trouvés?/);
  assert.equal(await page.locator("ol.results li.result h3 a").first().textContent(), "Mairie de Riom");
  assert.match(await page.locator("ol.results li.result .open-state").first().textContent(), /(ouvert maintenant|fermé) · (ferme|ouvre)/);
  assert.match(await page.locator("ol.results li.result a[href^='tel:']").first().getAttribute("href"), /^tel:\+33/);
  await axe(page, "results");

  await page.click("[data-map-toggle]");
  await page.waitForSelector("#carte .leaflet-container, #carte.leaflet-container");
  await page.waitForFunction(() => document.querySelectorAll("#carte .pin, #carte .cluster").length > 0);
  await page.waitForFunction(() => document.querySelectorAll("#carte path.leaflet-interactive, #carte svg path").length > 0);
  assert.equal(await page.getAttribute("[data-map-toggle]", "aria-expanded"), "true");
  assert.equal(await page.getAttribute(".leaflet-control-zoom-in", "title"), "Zoom avant");
  const unnamed = await page.evaluate(() =>
    Array.from(document.querySelectorAll("#carte .leaflet-marker-icon")).filter((m) => !m.textContent.trim() && !m.getAttribute("title")).length,
  );
  assert.equal(unnamed, 0, "every marker is named");
  await axe(page, "map shown");
  assert.deepEqual(context.foreign, [], "no request leaves the origin");
  assert.deepEqual(await context.cookies(), [], "no cookie");
  await context.close();
});

await check("around me (geolocation granted)", async () => {
  const context = await newContext({
    geolocation: { longitude: 3.11519, latitude: 45.893902 },
    permissions: ["geolocation"],
  });
  const page = await context.newPage();
  await page.goto(`${base}/recherche?typology=mairie`);
  await page.click("[data-locate]");
  await page.waitForURL(/near=3\.11519/);
  await page.waitForFunction(() => /trouvé/.test(document.querySelector("#compte").textContent));
  assert.equal(await page.locator("ol.results li.result h3 a").first().textContent(), "Mairie de Riom");
  assert.match(await page.locator("ol.results li.result .distance").first().textContent(), /^0 m$|^\d+ m$/);
  await context.close();
});

await check("no result, error, entry, life event, generator, home: axe and 320 px", async () => {
  const context = await newContext({ viewport: { width: 320, height: 640 } });
  const page = await context.newPage();
  await page.goto(`${base}/recherche?q=zzqxwv`);
  assert.match(await countText(page), /Aucun service/);
  await axe(page, "no result");
  await noHorizontalScroll(page, "no result");

  const response = await page.goto(`${base}/recherche?lieu=Nullepartville`);
  assert.equal(response.status(), 400);
  assert.equal(await page.getAttribute("#f-lieu", "aria-invalid"), "true");
  await axe(page, "error");
  await noHorizontalScroll(page, "error");

  await page.goto(`${base}/recherche?q=mairie&lieu=Riom`);
  await noHorizontalScroll(page, "results");
  await page.locator("ol.results li.result h3 a").first().click();
  await page.waitForSelector("table.hours");
  const jsonLd = JSON.parse(await page.locator("script[type='application/ld+json']").textContent());
  assert.equal(jsonLd["@type"], "GovernmentOffice");
  assert.ok(jsonLd.openingHoursSpecification.length > 0);
  await axe(page, "entry page");
  await noHorizontalScroll(page, "entry page");

  await page.goto(`${base}/evenements-de-vie`);
  assert.equal(await page.locator("ol.events li").count(), 12);
  await axe(page, "life events");
  await page.goto(`${base}/evenements-de-vie/mariage?lieu=Riom`);
  assert.ok((await page.locator("ol.results li.result").count()) > 0);
  await axe(page, "life-event page");
  await noHorizontalScroll(page, "life-event page");

  await page.goto(`${base}/integrer?territoire=Riom&couleur=%23ffcc00`);
  assert.match(await page.locator("#g-couleur-contraste").textContent(), /insuffisant/);
  assert.match(await page.locator("#g-script").inputValue(), /widget\.js/);
  await axe(page, "generator");
  await noHorizontalScroll(page, "generator");

  await page.goto(`${base}/?lang=en`);
  assert.equal(await page.getAttribute("html", "lang"), "en");
  await axe(page, "home (English)");
  await noHorizontalScroll(page, "home");
  assert.deepEqual(context.foreign, []);
  await context.close();
});

await check("keyboard only: skip link, visible focus, no trap in the map", async () => {
  const context = await newContext();
  const page = await context.newPage();
  await page.goto(`${base}/recherche?q=mairie&lieu=Riom`);
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.className), "skip");
  const seen = [];
  for (let i = 0; i < 40; i++) {
    await page.keyboard.press("Tab");
    const focus = await page.evaluate(() => {
      const el = document.activeElement;
      const style = getComputedStyle(el);
      return {
        tag: el.tagName,
        text: (el.textContent || el.name || el.id || "").trim().slice(0, 30),
        visible: style.outlineStyle !== "none" || style.boxShadow !== "none",
      };
    });
    seen.push(focus);
    assert.ok(focus.visible, `focus not visible on ${focus.tag} « ${focus.text} »`);
  }
  // Show the map with the keyboard, go into it, and out again with Tab.
  await page.focus("[data-map-toggle]");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.querySelectorAll("#carte .pin, #carte .cluster").length > 0);
  await page.keyboard.press("Tab");
  let left = false;
  for (let i = 0; i < 200 && !left; i++) {
    await page.keyboard.press("Tab");
    left = await page.evaluate(() => !document.querySelector("#carte").contains(document.activeElement));
  }
  assert.ok(left, "Tab leaves the map");
  await context.close();
});

await check("without JavaScript the form submits and lists results", async () => {
  const context = await newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  await page.goto(`${base}/recherche`);
  await page.fill("#f-q", "mairie");
  await page.fill("#f-lieu", "Clermont-Ferrand");
  await Promise.all([page.waitForNavigation(), page.click("form.search-form button[type=submit]")]);
  assert.ok((await page.locator("ol.results li.result").count()) > 0);
  assert.match(await countText(page), /trouvés/);
  await context.close();
});

await check("the widget in another origin's page loads, resizes itself and searches", async () => {
  const context = await newContext({}, [origin, hostOrigin]);
  const page = await context.newPage();
  await page.goto(`${hostOrigin}/`);
  const frameElement = page.locator("iframe");
  await frameElement.waitFor();
  assert.equal(await frameElement.getAttribute("title"), "Services de Riom Limagne et Volcans");
  assert.equal(await frameElement.getAttribute("allow"), "geolocation");
  const frame = page.frameLocator("iframe");
  await frame.locator("#compte").waitFor();
  await page.waitForFunction(() => document.querySelector("iframe").style.height !== "480px");
  const height = await frameElement.evaluate((el) => parseInt(el.style.height, 10));
  assert.ok(height > 300, `the iframe took its content's height (${height}px)`);
  await frame.locator("#f-q").fill("mairie");
  await frame.locator("#f-q").press("Enter");
  const inner = page.frames().find((f) => f.url().includes("/embed"));
  await inner.waitForFunction(() => window.location.search.includes("q=mairie"));
  await frame.locator("ol.results li.result").first().waitFor();
  const address = await inner.evaluate(() => window.location.href);
  assert.match(address, /q=mairie/);
  assert.match(address, /territory=epci%3A200070753/);
  await inner.waitForFunction(() => /trouvés?/.test(document.querySelector("#compte").textContent));
  await axe(inner, "widget");
  assert.deepEqual(context.foreign, [], "the widget calls no third party");
  assert.deepEqual(await context.cookies(), [], "no cookie");
  await context.close();
});

await browser.close();
host.close();
console.log(results.join("\n"));
if (failures.length) {
  console.error(failures.join("\n\n"));
  process.exit(1);
}
