// Measures the citizen pages' budgets in Debian's Chromium: the loader's and the scripts' sizes
// gzipped, and when the first results are painted after navigation (server-rendered, so the
// first contentful paint holds them). Usage: node budgets.mjs BASE_URL [RUNS]
import { gzipSync } from "node:zlib";
import { chromium } from "playwright-core";

const base = process.argv[2];
const runs = Number(process.argv[3] ?? 20);
const gz = async (path) => gzipSync(Buffer.from(await (await fetch(base + path)).arrayBuffer()), { level: 9 }).length;
const scriptOf = async (path, name) => {
  const html = await (await fetch(base + path)).text();
  return html.match(new RegExp(`/assets/${name}\\?v=[0-9a-f]+`))?.[0];
};

const embed = "/embed?territory=epci%3A200070753&q=mairie";
const search = "/recherche?q=mairie&lieu=Riom";
const appUrl = await scriptOf(search, "app.js");
const mapUrl = (await (await fetch(base + search)).text()).match(/\/assets\/map\.js\?v=[0-9a-f]+/)?.[0];
const sizes = {
  "widget.js (loader)": await gz("/widget.js"),
  "app.js (pages and widget without the map)": await gz(appUrl),
  "map.js (Leaflet and clustering, loaded on demand)": await gz(mapUrl),
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
});
const page = await browser.newPage();
async function paints(path) {
  const times = [];
  for (let i = 0; i < runs; i++) {
    await page.goto(base + path, { waitUntil: "load" });
    const fcp = await page.evaluate(
      () =>
        new Promise((resolve) => {
          new PerformanceObserver((list) => {
            const entry = list.getEntriesByName("first-contentful-paint")[0];
            if (entry) resolve(entry.startTime);
          }).observe({ type: "paint", buffered: true });
          setTimeout(() => resolve(NaN), 5000);
        }),
    );
    const listed = await page.locator("ol.results li.result").count();
    if (!listed) throw new Error(`${path}: no results in the page`);
    times.push(fcp);
  }
  times.sort((a, b) => a - b);
  return { median: times[Math.floor(times.length / 2)], max: times[times.length - 1] };
}
const searchPaint = await paints(search);
const embedPaint = await paints(embed);
await browser.close();

console.log("| measure | figure | budget |");
console.log("|---|---|---|");
console.log(`| widget.js (loader), gzipped | ${sizes["widget.js (loader)"]} B | ≤ 2,048 B |`);
console.log(`| embed page JavaScript without the map (app.js), gzipped | ${sizes["app.js (pages and widget without the map)"]} B | ≤ 30 KB |`);
console.log(`| map.js (Leaflet + clustering, loaded when the map is shown), gzipped | ${sizes["map.js (Leaflet and clustering, loaded on demand)"]} B | — |`);
console.log(`| first results painted, /recherche (median / max of ${runs}) | ${searchPaint.median.toFixed(0)} / ${searchPaint.max.toFixed(0)} ms | ≤ 300 ms |`);
console.log(`| first results painted, /embed (median / max of ${runs}) | ${embedPaint.median.toFixed(0)} / ${embedPaint.max.toFixed(0)} ms | ≤ 300 ms |`);
