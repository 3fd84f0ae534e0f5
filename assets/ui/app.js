// vpcbox status page: reads /v1/events/stream (server-sent events) and draws
// each update. Plain JavaScript, no libraries, nothing fetched from elsewhere.
// The admin token (asked for once, kept in sessionStorage, never in a cookie)
// is sent as a bearer header: it shows client identities and lets the page
// isolate and release clients through /v1/isolations.
"use strict";

const STREAM = "/v1/events/stream";
const TOKEN_KEY = "vpcbox.token";
const RECONNECT_MS = 2000;
const POINTS = 300;

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  abort: null,
  last: null,
  series: { n: -1, dhcp: [], api: [], drops: [] },
  sort: "rate_10s",
  filter: "",
  rows: new Map(), // client → <tr>, kept across updates so buttons stay put
};

// ---- formatting -----------------------------------------------------------

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24;
  const m = Math.floor(s / 60) % 60, sec = s % 60;
  if (d > 0) return d + "d " + h + "h";
  if (h > 0) return h + "h " + m + "m";
  return m + "m " + sec + "s";
}

function rate(x) { return x >= 100 ? x.toFixed(0) : x.toFixed(1); }

function text(id, value) { $(id).textContent = value; }

function cell(tr, i, value, cls) {
  while (tr.cells.length <= i) tr.insertCell();
  const td = tr.cells[i];
  if (td.textContent !== String(value)) td.textContent = value;
  if (cls !== undefined) td.className = cls;
  return td;
}

// ---- the stream -----------------------------------------------------------

// fetch rather than EventSource: EventSource cannot send the token header.
async function connect() {
  if (state.abort) state.abort.abort();
  const abort = new AbortController();
  state.abort = abort;
  const headers = state.token ? { Authorization: "Bearer " + state.token } : {};
  try {
    const res = await fetch(STREAM, { headers, cache: "no-store", signal: abort.signal });
    if (!res.ok) throw new Error("stream: HTTP " + res.status);
    setConn(true);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        dispatch(buf.slice(0, end));
        buf = buf.slice(end + 2);
      }
    }
  } catch (e) {
    if (abort.signal.aborted) return;
    say(String(e.message || e));
  }
  if (state.abort !== abort) return;
  setConn(false);
  setTimeout(() => { if (state.abort === abort) connect(); }, RECONNECT_MS);
}

function dispatch(block) {
  let event = "message", data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event: ")) event = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  if (!data) return;
  const msg = JSON.parse(data);
  if (event === "history") setHistory(msg);
  else if (event === "update") update(msg);
}

function setConn(on) {
  const c = $("conn");
  c.textContent = on ? "live" : "disconnected";
  c.className = "badge " + (on ? "on" : "off");
}

// ---- drawing --------------------------------------------------------------

function setHistory(h) {
  state.series = { n: h.n, dhcp: h.dhcp.slice(), api: h.api.slice(), drops: h.drops.slice() };
}

function update(u) {
  state.last = u;
  header(u);
  charts(u);
  clients(u);
  routes(u.routes);
  subnets(u.subnets);
  events(u.events);
  memory(u.memory);
  cluster(u.cluster);
}

function header(u) {
  const h = u.header;
  text("uptime", duration(u.uptime_s));
  const o = $("overload");
  o.textContent = h.overload;
  o.className = "badge overload-" + h.overload;
  text("rss", bytes(h.rss_bytes));
  text("budget", bytes(h.budget_bytes));
  $("rss-meter").value = h.budget_bytes ? Math.min(1, h.rss_bytes / h.budget_bytes) : 0;
  text("heap-allocated", bytes(h.heap_allocated));
  text("heap-resident", bytes(h.heap_resident));
  text("heap-retained", bytes(h.heap_retained));
  text("heap-shrinks", h.heap_shrinks);
  text("connections", h.connections);
  text("streams", h.streams + " + " + h.event_streams + " live");
  text("isolated", h.isolated);
}

function charts(u) {
  const s = state.series;
  if (u.rate.n !== s.n && s.n >= 0) {
    for (const k of ["dhcp", "api", "drops"]) {
      s[k].push(u.rate[k]);
      if (s[k].length > POINTS) s[k].shift();
    }
  }
  s.n = u.rate.n;
  text("rate-dhcp", u.rate.dhcp);
  text("rate-api", u.rate.api);
  text("rate-drops", u.rate.drops);
  text("drop-reasons", u.drops_by_reason.map(([r, n]) => r + " " + n).join(", "));
  plot("chart-dhcp", s.dhcp, "#2456c7");
  plot("chart-api", s.api, "#1b7f3b");
  plot("chart-drops", s.drops, "#b3261e");
}

function plot(id, points, color) {
  const c = $(id), g = c.getContext("2d");
  const w = c.width, h = c.height, top = Math.max(1, ...points);
  g.clearRect(0, 0, w, h);
  g.fillStyle = "#6b7385";
  g.font = "10px sans-serif";
  g.fillText(String(top), 2, 10);
  if (points.length < 2) return;
  // A minute wide at first, up to POINTS seconds as history accumulates.
  const span = Math.max(60, points.length);
  const dx = w / (span - 1), x0 = w - (points.length - 1) * dx;
  g.beginPath();
  points.forEach((v, i) => {
    const x = x0 + i * dx, y = h - 2 - (v / top) * (h - 14);
    if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
  });
  g.strokeStyle = color;
  g.lineWidth = 1.5;
  g.stroke();
}

const SORTS = {
  rate_10s: (a, b) => b.rate_10s - a.rate_10s,
  rate_1s: (a, b) => b.rate_1s - a.rate_1s,
  drops: (a, b) => b.drops - a.drops,
  pending: (a, b) => b.pending - a.pending,
  client: (a, b) => (a.client < b.client ? -1 : a.client > b.client ? 1 : 0),
};

// As the dashboard: a substring of the client, or its state; "others" last.
function visible(rows) {
  const f = state.filter.toLowerCase();
  const named = rows.filter((r) => r.client !== null &&
    (!f || r.client.toLowerCase().includes(f) || r.state === f));
  named.sort((a, b) => SORTS[state.sort](a, b) || (a.client < b.client ? -1 : 1));
  return named.concat(rows.filter((r) => r.client === null));
}

function clients(u) {
  const body = $("clients").tBodies[0];
  if (u.clients === null) {
    state.rows.clear();
    body.replaceChildren();
    text("clients-note", "— enter the admin token to see clients");
    return;
  }
  text("clients-note", "— " + u.clients_tracked + " tracked, busiest " + (u.clients.length - 1) + " sent");
  const keep = new Set();
  for (const r of visible(u.clients)) {
    const key = r.client === null ? "" : r.client;
    keep.add(key);
    let tr = state.rows.get(key);
    if (!tr) {
      tr = document.createElement("tr");
      state.rows.set(key, tr);
    }
    row(tr, r);
    body.appendChild(tr); // moves an existing row into sorted place
  }
  for (const [key, tr] of state.rows) {
    if (!keep.has(key)) { tr.remove(); state.rows.delete(key); }
  }
  document.querySelectorAll("#clients th").forEach((th) =>
    th.classList.toggle("sorted", th.dataset.sort === state.sort));
}

function row(tr, r) {
  const others = r.client === null;
  tr.className = others ? "others" : "";
  tr.dataset.client = others ? "" : r.client;
  tr.dataset.state = r.state;
  cell(tr, 0, others ? "others" : r.client);
  cell(tr, 1, rate(r.rate_1s));
  cell(tr, 2, rate(r.rate_10s));
  cell(tr, 3, rate(r.served_rate_1s));
  cell(tr, 4, r.served);
  cell(tr, 5, r.drops);
  cell(tr, 6, r.pending);
  cell(tr, 7, others ? "" : r.state, "state state-" + r.state);
  const td = cell(tr, 8, "");
  if (others) { td.replaceChildren(); return; }
  let b = td.querySelector("button");
  if (!b) {
    b = document.createElement("button");
    b.className = "act";
    b.addEventListener("click", () => act(tr.dataset.client, tr.dataset.state));
    td.appendChild(b);
  }
  const label = r.state === "isolated" ? "release" : "isolate";
  if (b.textContent !== label) b.textContent = label;
}

function table(id, items, fill) {
  const body = $(id).tBodies[0];
  body.replaceChildren(...items.map((it) => {
    const tr = document.createElement("tr");
    fill(it).forEach((v, i) => {
      const td = cell(tr, i, "");
      if (v instanceof Node) td.appendChild(v); else td.textContent = v;
    });
    return tr;
  }));
}

function routes(rs) {
  table("routes", rs, (r) => [r.name, r.pending, r.max_pending || "–", r.total]);
}

function subnets(ss) {
  table("subnets", ss, (s) => {
    const frac = s.usage.size ? s.usage.used / s.usage.size : 0;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = Math.round(frac * 100) + "px"; // CSSOM, allowed by the page's CSP
    const pct = document.createElement("span");
    pct.append(bar, " " + (frac * 100).toFixed(0) + "%");
    return [s.id, s.cidr, s.usage.used, s.usage.size, pct];
  });
}

function events(es) {
  const ol = $("events");
  text("events-note", es === null ? "— enter the admin token to see events" : "");
  if (es === null) { ol.replaceChildren(); return; }
  const newest = es.slice().reverse();
  ol.replaceChildren(...newest.map((e) => {
    const li = document.createElement("li");
    li.textContent = new Date(e.at_ms).toLocaleTimeString() + "  " + e.kind + "  " + e.message;
    return li;
  }));
}

// Memory by owner, when the update carries it: { owner: bytes, … } or
// [{ owner, bytes }, …].
function memory(m) {
  const section = $("memory-section");
  section.hidden = m === undefined || m === null;
  if (section.hidden) return;
  const entries = Array.isArray(m) ? m.map((x) => [x.owner, x.bytes]) : Object.entries(m);
  table("memory", entries, ([owner, n]) => [owner, typeof n === "number" ? bytes(n) : JSON.stringify(n)]);
}

// Cluster mode: the live nodes (this one's health is its fence), each
// with its blocks and the rates it last published; hidden alone.
function cluster(c) {
  const section = $("cluster-section");
  section.hidden = c === undefined || c === null;
  if (section.hidden) return;
  text("cluster-note", c.fenced ? "— this node is fenced: " + c.fenced : "");
  const num = (x) => (x === null || x === undefined ? "–" : rate(x));
  table("cluster", c.nodes, (n) => [
    n.this ? n.name + " (this node)" : n.name,
    n.this && c.fenced ? "fenced" : "live",
    n.blocks,
    num(n.dhcp_acks_per_s),
    num(n.api_requests_per_s),
  ]);
}

// ---- actions --------------------------------------------------------------

function say(msg) { text("status", msg); }

async function act(client, current) {
  if (!state.token) {
    say("enter the admin token first");
    $("token").focus();
    return;
  }
  const isolate = current !== "isolated";
  const res = await fetch(isolate ? "/v1/isolations" : "/v1/isolations/" + encodeURIComponent(client), {
    method: isolate ? "POST" : "DELETE",
    headers: { Authorization: "Bearer " + state.token, "Content-Type": "application/json" },
    body: isolate ? JSON.stringify({ client }) : undefined,
  }).catch((e) => ({ ok: false, status: String(e) }));
  if (res.ok) {
    say((isolate ? "isolated " : "released ") + client);
  } else if (res.status === 401) {
    forget();
    say("the token was refused");
  } else {
    say((isolate ? "isolating " : "releasing ") + client + " failed: " + res.status);
  }
}

function useToken(token) {
  state.token = token;
  if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
  $("token").value = "";
  $("token").hidden = $("token-save").hidden = Boolean(token);
  $("token-forget").hidden = !token;
  connect();
}

function forget() { useToken(""); }

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    useToken($("token").value.trim());
  });
  $("token-forget").addEventListener("click", forget);
  $("filter").addEventListener("input", (e) => {
    state.filter = e.target.value;
    if (state.last) clients(state.last);
  });
  const sort = (key) => {
    state.sort = key;
    $("sort").value = key;
    if (state.last) clients(state.last);
  };
  $("sort").addEventListener("change", (e) => sort(e.target.value));
  document.querySelectorAll("#clients th[data-sort]").forEach((th) =>
    th.addEventListener("click", () => sort(th.dataset.sort)));
  useToken(state.token);
});
