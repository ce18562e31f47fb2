// Bundles the citizen pages' scripts and styles into one folder (argument 1) that the Rust
// build embeds in the binary. Each script is a self-contained IIFE: pages load only what they
// use, and the map (Leaflet) only when it is shown.
import { build } from "esbuild";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const out = process.argv[2] ?? "dist";
mkdirSync(out, { recursive: true });

const scripts = ["app", "map", "widget", "espace", "directory"];
await Promise.all(
  scripts.map((name) =>
    build({
      entryPoints: [join("src", `${name}.js`)],
      outfile: join(out, `${name}.js`),
      bundle: true,
      minify: true,
      format: "iife",
      target: ["es2019"],
      legalComments: "none",
      logLevel: "warning",
    }),
  ),
);
await Promise.all(
  ["site", "map"].map((name) =>
    build({
      entryPoints: [join("src", `${name}.css`)],
      outfile: join(out, `${name}.css`),
      bundle: true,
      minify: true,
      loader: { ".png": "dataurl", ".svg": "dataurl" },
      logLevel: "warning",
    }),
  ),
);
