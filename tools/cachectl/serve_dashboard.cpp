// The dashboard `cachectl serve` answers GET / with: one self-contained page (no external
// assets), which polls /api/v1/stats every 2 s and the entry lists every 10 s with the token from
// the URL fragment (#token=...) or its login field. Everything from the cache is put on the page
// as text (textContent), never as markup.
#include <string_view>

namespace cachectl::serve {

std::string_view dashboard_html() {
  static constexpr std::string_view kPage = R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>larder cache</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1d2330; }
  header { background: #1d2330; color: #fff; padding: 10px 18px; display: flex; gap: 16px;
           align-items: center; }
  header h1 { font-size: 17px; margin: 0; }
  header .dir { opacity: .75; font-family: monospace; }
  header .state { margin-left: auto; }
  main { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 14px;
         padding: 14px; }
  section { background: #fff; border-radius: 6px; padding: 12px 14px;
            box-shadow: 0 1px 2px rgba(0,0,0,.08); }
  h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .04em; color: #5a6275;
       margin: 0 0 8px; }
  .big { font-size: 26px; font-weight: 600; }
  .bar { height: 8px; background: #e4e7ed; border-radius: 4px; overflow: hidden; margin: 6px 0; }
  .bar div { height: 100%; background: #3b7ddd; width: 0; }
  table { border-collapse: collapse; width: 100%; }
  td, th { text-align: left; padding: 3px 6px; border-bottom: 1px solid #eef0f3;
           font-variant-numeric: tabular-nums; }
  td.num, th.num { text-align: right; }
  td.key { font-family: monospace; word-break: break-all; }
  .fresh { color: #1e8a3a; } .stale { color: #b07d00; } .expired { color: #c0392b; }
  .invalid { color: #8e44ad; }
  #login { display: none; padding: 14px; }
  #error { color: #c0392b; }
  input[type=text], input[type=password] { padding: 5px 8px; width: 60%; }
  svg { width: 100%; height: 120px; background: #fbfbfc; }
</style>
</head>
<body>
<header>
  <h1>larder cache</h1><span class="dir" id="directory"></span>
  <span class="state" id="state">connecting…</span>
</header>
<div id="login">
  <form id="login-form">Token: <input type="password" id="token" autocomplete="off">
  <button>Use</button></form>
</div>
<div id="error"></div>
<main>
  <section>
    <h2>Entries</h2>
    <div class="big" id="entries-count">–</div>
    <div class="bar"><div id="entries-bar"></div></div>
    <div id="entries-limit"></div>
  </section>
  <section>
    <h2>Size</h2>
    <div class="big" id="size">–</div>
    <div class="bar"><div id="size-bar"></div></div>
    <div id="size-limit"></div>
  </section>
  <section>
    <h2>Hit rate</h2>
    <div class="big" id="hit-rate">–</div>
    <div id="hits"></div>
    <svg id="hit-chart" viewBox="0 0 600 120" preserveAspectRatio="none"
         aria-label="hit rate over the last minutes">
      <line x1="0" y1="60" x2="600" y2="60" stroke="#e4e7ed"/>
      <text x="4" y="14" font-size="11" fill="#8a91a0">100 %</text>
      <text x="4" y="57" font-size="11" fill="#8a91a0">50 %</text>
      <polyline id="hit-line" fill="none" stroke="#3b7ddd" stroke-width="2" points=""/>
    </svg>
    <div id="chart-caption">per 2 s poll, last 10 minutes</div>
  </section>
  <section>
    <h2>Status</h2>
    <table id="status-table"><tbody></tbody></table>
    <h2 style="margin-top:12px">Categories</h2>
    <table id="category-table"><tbody></tbody></table>
  </section>
  <section>
    <h2>Largest entries</h2>
    <table id="largest"><tbody></tbody></table>
  </section>
  <section>
    <h2>Most read entries</h2>
    <table id="most-read"><tbody></tbody></table>
  </section>
  <section style="grid-column: 1 / -1">
    <h2>Search keys</h2>
    <input type="text" id="search" placeholder="part of a key, or a glob such as user:*">
    <table id="search-results"><tbody></tbody></table>
  </section>
</main>
<script>
"use strict";
let token = "";
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("token")) token = fragment.get("token");
const samples = [];  // [hits, misses] at each poll
const $ = (id) => document.getElementById(id);

function human(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

async function api(path) {
  const headers = token ? { "Authorization": "Bearer " + token } : {};
  const r = await fetch(path, { headers, cache: "no-store" });
  if (r.status === 401) { $("login").style.display = "block"; throw new Error("a token is needed"); }
  if (!r.ok) {
    let msg = "HTTP " + r.status;
    try { msg = (await r.json()).error || msg; } catch (e) {}
    throw new Error(msg);
  }
  return r.json();
}

function rows(table, list) {
  const body = $(table).tBodies[0];
  body.replaceChildren();
  for (const cells of list) {
    const tr = document.createElement("tr");
    for (const [text, cls] of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}

function bar(id, value, limit) {
  $(id).style.width = limit ? Math.min(100, 100 * value / limit).toFixed(1) + "%" : "0";
}

// The hit rate of each interval between polls; an interval without reads keeps the rate before
// it, and the line starts from the rate so far.
function drawChart() {
  if (!samples.length) return;
  const rate = (h, m, before) => (h + m > 0 ? h / (h + m) : before);
  const pts = [rate(samples[0][0], samples[0][1], 0)];
  for (let i = 1; i < samples.length; i++)
    pts.push(rate(samples[i][0] - samples[i - 1][0], samples[i][1] - samples[i - 1][1],
                  pts[pts.length - 1]));
  if (pts.length === 1) pts.push(pts[0]);
  const step = 600 / (pts.length - 1);
  $("hit-line").setAttribute("points",
    pts.map((r, i) => (i * step).toFixed(1) + "," + (115 - r * 110).toFixed(1)).join(" "));
}

async function refreshStats() {
  const s = await api("/api/v1/stats");
  $("directory").textContent = s.directory;
  $("entries-count").textContent = s.total_entries.toLocaleString("en");
  $("entries-limit").textContent = s.max_entries ? "of " + s.max_entries.toLocaleString("en")
                                                  : "no entry limit";
  bar("entries-bar", s.total_entries, s.max_entries);
  $("size").textContent = human(s.total_size_bytes);
  $("size-limit").textContent = s.max_size_bytes ? "of " + human(s.max_size_bytes)
                                                  : "no size limit";
  bar("size-bar", s.total_size_bytes, s.max_size_bytes);
  $("hit-rate").textContent = s.hit_rate.toFixed(1) + " %";
  $("hits").textContent = s.hit_count + " hits, " + s.miss_count + " misses";
  samples.push([s.hit_count, s.miss_count]);
  if (samples.length > 301) samples.shift();
  drawChart();
  rows("status-table", ["fresh", "stale", "expired", "invalid"].map(
    (k) => [[k, k], [String(s[k + "_entries"]), "num"]]));
  rows("category-table", Object.entries(s.categories).map(([c, n]) => [[c], [String(n), "num"]]));
}

function entryRows(list, value) {
  return list.entries.map((e) => [[e.key, "key"], [value(e), "num"], [e.status, e.status]]);
}

async function refreshLists() {
  const big = await api("/api/v1/entries?sort=size&limit=10");
  rows("largest", entryRows(big, (e) => human(e.size_bytes)));
  const read = await api("/api/v1/entries?sort=hits&limit=10");
  rows("most-read", entryRows(read, (e) => e.access_count + " reads"));
}

async function search() {
  const q = $("search").value;
  if (!q) { rows("search-results", []); return; }
  const pattern = /[*?[]/.test(q) ? q : "*" + q.replace(/[\\*?[]/g, "\\$&") + "*";
  const r = await api("/api/v1/entries?limit=50&pattern=" + encodeURIComponent(pattern));
  rows("search-results", entryRows(r, (e) => human(e.size_bytes)));
}

async function tick(lists) {
  try {
    await refreshStats();
    if (lists) await refreshLists();
    $("error").textContent = "";
    $("state").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.ready = "true";
  } catch (e) {
    $("error").textContent = e.message;
    $("state").textContent = "not updated";
  }
}

let n = 0;
async function loop() {
  await tick(n % 5 === 0);
  n++;
  setTimeout(loop, 2000);
}
$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("token").value;
  $("login").style.display = "none";
  n = 0;
});
$("search").addEventListener("input", () => search().catch((e) => {
  $("error").textContent = e.message;
}));
loop();
</script>
</body>
</html>
)HTML";
  return kPage;
}

}  // namespace cachectl::serve
