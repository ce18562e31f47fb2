-- HTTP load for query (a) of the search benchmark: the 10 nearest `pharmacie` at a new random
-- point of metropolitan France (lon -1.5..7.5, lat 43.5..49.5) on every request.
--
--   wrk -t2 -c64 -d20s --latency -s benches/wrk-nearest.lua http://127.0.0.1:8080
--
-- WRK_SEED (default 1) seeds the points; each thread gets its own sequence derived from it, so
-- two runs with the same seed, threads and connections send the same points (in an order that
-- depends on the timing). done() prints one JSON line on stdout:
--   {"requests":…,"duration_s":…,"rps":…,"p50_ms":…,"p99_ms":…,"max_ms":…,"errors":…}
-- where errors counts connect, read, write and timeout errors and non-2xx/3xx answers.

local seed = tonumber(os.getenv("WRK_SEED") or "1")
local threads = 0

-- setup() runs in the main Lua state once per thread, before it starts: number the threads so
-- each seeds its own generator differently (wrk gives every thread a separate Lua state).
function setup(thread)
   threads = threads + 1
   thread:set("thread_number", threads)
end

function init(args)
   math.randomseed(seed * 1000 + (thread_number or 0))
end

-- A new point for every request; wrk calls request() each time since it is defined.
function request()
   local lon = -1.5 + math.random() * 9.0
   local lat = 43.5 + math.random() * 6.0
   return wrk.format("GET", string.format(
      "/api/v1/services?near=%.6f,%.6f&typology=pharmacie&limit=10", lon, lat))
end

-- latency is in microseconds; summary.duration too.
function done(summary, latency, requests)
   local e = summary.errors
   local seconds = summary.duration / 1e6
   io.write(string.format(
      '{"requests":%d,"duration_s":%.3f,"rps":%.1f,"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,'
         .. '"max_ms":%.3f,"mean_ms":%.3f,"errors":%d,"non_2xx_3xx":%d}\n',
      summary.requests, seconds, summary.requests / seconds,
      latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
      latency.max / 1000, latency.mean / 1000,
      e.connect + e.read + e.write + e.timeout + e.status, e.status))
end
