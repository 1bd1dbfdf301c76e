"""The page ``osctl fleet serve`` serves: one HTML document, its CSS and JS inline.

No build step, nothing loaded from elsewhere (the server's Content-Security-Policy forbids it),
so it works on a machine with no internet access. The data comes from ``events`` (Server-Sent
Events; ``EventSource`` reconnects by itself) as the summary ``osctl.operations.fleetview``
builds, the same one ``fleet status --watch`` draws.

Everything shown that comes from etcd (host ids, versions, reasons) is untrusted text: the
script puts it in the page with ``textContent`` and attributes through ``dataset`` only, never
as markup, so a reason like ``<img onerror=...>`` shows as those characters.
(tests/unit/test_fleet_live.py checks the script never uses ``innerHTML``.)

Element ids are stable for tests and scrapers: ``on-target``, ``hosts-total``, ``by-version``
and ``by-phase`` (rows with ``data-key`` and ``data-count``), ``wave``, ``budget``,
``failures``, ``slots``, ``conn``, ``updated``.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>osctl fleet</title>
<style>
  :root { color-scheme: light dark; --ok: #2e7d32; --bad: #c62828; --warn: #b26a00; --dim: #888; }
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 60em; padding: 0 1em; }
  h1 { font-size: 1.3em; margin: 0 0 .2em; }
  h2 { font-size: 1em; margin: 1.2em 0 .3em; text-transform: uppercase; letter-spacing: .05em; color: var(--dim); }
  .grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(16em, 1fr)); gap: 0 2em; }
  table { border-collapse: collapse; width: 100%; }
  td { padding: .1em .4em; border-bottom: 1px solid rgba(128,128,128,.2); vertical-align: top; }
  td.n { text-align: right; font-variant-numeric: tabular-nums; width: 4em; }
  td.bar { width: 40%; } .bar span { display: block; height: .8em; background: #5c8ddb; min-width: 1px; }
  .big { font-size: 2em; font-weight: 600; font-variant-numeric: tabular-nums; }
  .dim { color: var(--dim); } .bad { color: var(--bad); } .ok { color: var(--ok); } .warn { color: var(--warn); }
  #conn { float: right; font-size: .9em; } ul { margin: 0; padding-left: 1.2em; }
  code, .mono { font-family: ui-monospace, monospace; word-break: break-all; }
</style>
</head>
<body>
<span id="conn" class="dim">connecting...</span>
<h1>osctl fleet: group <span id="group" class="mono">?</span></h1>
<div id="rollout" class="dim">waiting for data...</div>
<div class="grid">
  <section><h2>On target</h2>
    <div class="big"><span id="on-target">0</span> / <span id="hosts-total">0</span></div>
    <div id="target" class="dim"></div></section>
  <section><h2>Wave</h2><div id="wave" class="dim">-</div></section>
  <section><h2>Failure budget</h2><div id="budget" class="dim">-</div></section>
  <section><h2>Slots</h2><div id="slots" class="dim">-</div><ul id="holders"></ul></section>
</div>
<div class="grid">
  <section><h2>Hosts by version</h2><table><tbody id="by-version"></tbody></table></section>
  <section><h2>Hosts by phase</h2><table><tbody id="by-phase"></tbody></table></section>
</div>
<h2>Last failures</h2><ul id="failures"><li class="dim">none</li></ul>
<p id="updated" class="dim"></p>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let last = null;
let skew = 0;  // server clock minus ours, from the last event: countdowns use the server's time
let connected = false;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function setText(id, text, cls) {
  const e = $(id);
  e.textContent = String(text);
  if (cls !== undefined) e.className = cls;
}

function duration(seconds) {
  let s = Math.max(0, Math.round(seconds));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return d + "d " + h + "h";
  if (h) return h + "h " + m + "m";
  if (m) return m + "m " + s + "s";
  return s + "s";
}

function pct(share) { return (Math.round(share * 1000) / 10) + "%"; }

function counts(id, data, total) {
  const rows = Object.entries(data || {}).map(([key, n]) => {
    const tr = el("tr");
    tr.dataset.key = key;
    tr.dataset.count = String(n);
    const bar = el("td", "bar"), fill = el("span");
    fill.style.width = (total ? Math.round(100 * n / total) : 0) + "%";
    bar.append(fill);
    tr.append(el("td", "mono", key), el("td", "n", n), bar);
    return tr;
  });
  if (!rows.length) { const tr = el("tr"); tr.append(el("td", "dim", "none")); rows.push(tr); }
  $(id).replaceChildren(...rows);
}

function waveText(d) {
  const w = d.wave;
  if (!w) return "-";
  let text = w.number ? "wave " + w.number + " of " + w.of + " open: " + pct(w.share) + " of the group ("
      + w.hosts_open + " of " + d.hosts + " hosts)" : "no wave open yet";
  if (w.next) {
    const left = (Date.parse(w.next.opens_at) - (Date.now() + skew)) / 1000;
    text += "; wave " + w.next.number + " (" + pct(w.next.share) + ") opens " + (left > 0 ? "in " + duration(left) : "now");
  } else if (w.number) {
    text += "; the last wave";
  }
  return text;
}

function render(d) {
  setText("group", d.group);
  const r = d.rollout;
  if (r) {
    const progress = r.state === "staging" ? "; " + r.staged + " of " + d.hosts + " hosts done downloading"
                   : (r.queued ? "; " + r.queued + " waiting for a slot" : "");
    setText("rollout", "rollout of " + r.target + ": " + r.state + (r.reason ? " (" + r.reason + ")" : "") + progress,
            r.state === "active" || r.state === "staging" ? "ok" : (r.state === "done" ? "dim" : "warn"));
    setText("target", "hosts running " + r.target);
  } else {
    setText("rollout", "no rollout", "dim");
    setText("target", "");
  }
  setText("on-target", d.on_target);
  setText("hosts-total", d.hosts);
  counts("by-version", d.by_version, d.hosts);
  counts("by-phase", d.by_phase, d.hosts);
  setText("wave", waveText(d), r ? "" : "dim");
  const b = d.budget;
  setText("budget", b ? b.used + " / " + b.budget + " failures used" + (b.spent ? ": spent" : ", " + b.left + " left") : "-",
          b ? (b.spent ? "bad" : (b.used ? "warn" : "ok")) : "dim");
  const s = d.slots;
  setText("slots", s.taken + " / " + (s.max === null ? "-" : s.max) + " taken", s.taken ? "" : "dim");
  $("holders").replaceChildren(...s.holders.map((h) => {
    const li = el("li");
    li.dataset.key = h.host_id;
    li.append(el("span", "mono", h.host_id), document.createTextNode(" to " + h.version + " since "
      + new Date(h.since).toLocaleTimeString()));
    return li;
  }));
  const fails = d.last_failures.map((f) => {
    const li = el("li");
    li.dataset.key = f.host_id;
    li.append(el("span", "mono", f.host_id), document.createTextNode(" on " + f.version + " at "
      + new Date(f.at).toLocaleTimeString() + ": "), el("span", "bad", f.reason));
    return li;
  });
  $("failures").replaceChildren(...(fails.length ? fails : [el("li", "dim", "none")]));
  const read = d.read_at ? new Date(d.read_at).toLocaleTimeString() : "never";
  setText("updated", "etcd revision " + d.revision + ", read at " + read + (d.error ? "; etcd: " + d.error : ""),
          d.error ? "bad" : "dim");
  showConn();
}

function showConn() {
  if (!connected) setText("conn", "disconnected from osctl fleet serve: retrying", "bad");
  else if (last && last.error) setText("conn", "etcd unreachable: retrying (the data shown is older)", "bad");
  else setText("conn", "live", "ok");
}

const events = new EventSource("events");
events.addEventListener("status", (e) => {
  last = JSON.parse(e.data);
  skew = Date.parse(last.as_of) - Date.now();
  connected = true;
  render(last);
});
events.addEventListener("open", () => { connected = true; showConn(); });
events.addEventListener("error", () => { connected = false; showConn(); });
setInterval(() => { if (last) setText("wave", waveText(last)); }, 1000);
</script>
</body>
</html>
"""
