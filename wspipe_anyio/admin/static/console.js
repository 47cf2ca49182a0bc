// The wspipe console: polls GET /summary with the admin token and renders it.
//
// The token is pasted once and kept in this tab's sessionStorage; it goes only in an
// Authorization header to this origin, never in a URL, a cookie or the page itself.
// Everything shown is set with textContent (client ids and paths come from clients).
"use strict";
(() => {
  const KEY = "wspipe-admin-token";
  const POLL_MS = 1000;
  const MAX_POLL_MS = 5000;
  const WINDOW_S = 60;   // failovers per minute are counted over the last minute
  const RATE_S = 5;      // messages per second over the last few seconds
  const PAGE = 100;

  let token = sessionStorage.getItem(KEY);
  let timer = null;
  let delay = POLL_MS;
  let offset = 0;
  let last = null;
  const samples = [];          // {t, mi, mo, fo}, bounded by WINDOW_S
  const seen = new Map();      // backends seen in the pool: id -> {url, weight}
  const removed = new Map();   // backends that left the pool while this page watched

  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  async function api(method, path, body) {
    const headers = { "Authorization": "Bearer " + token, "Accept": "application/json" };
    const init = { method, headers, cache: "no-store", credentials: "omit",
                   redirect: "error", referrerPolicy: "no-referrer" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    if (!response.ok) {
      const err = new Error((data && data.detail) || ("HTTP " + response.status));
      err.status = response.status;
      throw err;
    }
    return data;
  }

  // Formatting.
  function bytes(n) {
    if (n == null) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }
  function secs(s) {
    if (s == null) return "–";
    if (s < 10) return s.toFixed(1) + " s";
    if (s < 120) return Math.round(s) + " s";
    if (s < 7200) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }
  const num = (n, d) => (n == null || !isFinite(n) ? "–" : n.toFixed(d));

  // Showing and hiding.
  function showLogin(message) {
    $("login").hidden = false;
    $("console").hidden = true;
    $("signout").hidden = true;
    const error = $("login-error");
    error.hidden = !message;
    error.textContent = message || "";
    $("token").focus();
  }
  function banner(message) {
    $("banner").hidden = !message;
    $("banner").textContent = message || "";
  }
  function say(message) { $("action-result").textContent = message; }

  // Polling.
  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(poll, ms);
  }
  function query() {
    const q = new URLSearchParams({ offset: String(offset), limit: String(PAGE) });
    const state = $("pipe-state").value;
    if (state) q.set("state", state);
    return "/summary?" + q.toString();
  }
  async function poll() {
    if (!token) return;
    try {
      const data = await api("GET", query());
      delay = POLL_MS;
      banner("");
      render(data);
      schedule(POLL_MS);
    } catch (err) {
      if (err.status === 401 || err.status === 403) {
        forget();
        showLogin("The proxy refused the token: " + err.message);
        return;
      }
      delay = Math.min(MAX_POLL_MS, delay * 2);
      banner("Cannot reach the proxy (" + err.message + "); retrying in " + delay / 1000 + " s");
      schedule(delay);
    }
  }
  function forget() {
    token = null;
    sessionStorage.removeItem(KEY);
    clearTimeout(timer);
  }

  // Rendering.
  function render(data) {
    last = data;
    $("login").hidden = true;
    $("console").hidden = false;
    $("signout").hidden = false;
    const ready = $("ready");
    ready.textContent = data.stopping ? "shutting down" : data.ready ? "ready" : "not ready";
    ready.className = "pill " + (data.ready ? "ready" : "not-ready");
    $("updated").textContent = "updated " + new Date(data.time * 1000).toLocaleTimeString();
    $("footer").textContent = "wspipe " + data.version + " · refreshes every second";
    renderTotals(data);
    renderBackends(data.backends);
    renderPipes(data.pipes, data.pipe_states);
  }

  function renderTotals(data) {
    const t = data.totals;
    const now = performance.now() / 1000;
    samples.push({ t: now, mi: t.messages_in, mo: t.messages_out, fo: t.failovers });
    while (samples.length > 2 && now - samples[0].t > WINDOW_S) samples.shift();
    const recent = samples.find((s) => now - s.t <= RATE_S) || samples[0];
    const span = now - recent.t;
    const rateIn = span > 0.5 ? (t.messages_in - recent.mi) / span : null;
    const rateOut = span > 0.5 ? (t.messages_out - recent.mo) / span : null;
    const first = samples[0];
    const windowS = now - first.t;
    const failovers = windowS > 0.5 ? (t.failovers - first.fo) * 60 / Math.max(windowS, 1) : null;
    $("t-clients").textContent = t.connections;
    $("t-clients-max").textContent = "of " + data.limits.max_connections + " max";
    $("t-pipes").textContent = t.pipes;
    $("t-pipe-states").textContent = Object.entries(data.pipe_states)
      .filter(([, n]) => n).map(([s, n]) => n + " " + s).join(", ") || "none";
    if (t.parked) $("t-pipe-states").textContent += " · " + t.parked + " parked";
    $("t-rate").textContent = rateIn == null ? "–" : num(rateIn + rateOut, 1);
    $("t-rate-dirs").textContent = "in " + num(rateIn, 1) + " · out " + num(rateOut, 1);
    $("t-failovers").textContent = num(failovers, 1);
    $("t-failovers-total").textContent = t.failovers + " in all, " + t.interruptions +
      " interruptions";
    $("t-buffered").textContent = bytes(t.buffered_bytes);
    const share = data.limits.memory_budget ? t.buffered_bytes / data.limits.memory_budget : 0;
    $("t-buffered-bar").style.width = Math.min(100, share * 100).toFixed(1) + "%";
    $("t-budget").textContent = (share * 100).toFixed(1) + "% of " +
      bytes(data.limits.memory_budget) + " budget";
    $("t-migrated").textContent = t.pipes_migrated;
    $("t-outbox").textContent = "outbox " + bytes(t.outbox_bytes);
  }

  function healthCell(b) {
    const h = b.health;
    if (b.state === "ejected") {
      const back = h && h.ejected_for != null ? "back in " + secs(h.ejected_for) : "";
      return el("td", {}, el("span", { class: "bad" }, "ejected" + (back ? ", " + back : "")),
                h && h.last_result ? el("div", { class: "muted" }, h.last_result) : "");
    }
    if (b.state === "draining") {
      return el("td", { class: "muted" }, "not checked while draining");
    }
    if (!h || !h.checks) {
      return el("td", { class: "muted" },
                b.consecutive_failures ? b.consecutive_failures + " failures in a row"
                                       : "passive only");
    }
    const when = h.last_check_ago == null ? "" : " " + secs(h.last_check_ago) + " ago";
    return el("td", {}, (h.last_ok ? "ok " : "failed ") + h.last_result + when,
              el("div", { class: "muted" },
                 h.checks + " checks, " + h.check_failures + " failed" +
                 (h.next_check_in != null ? ", next in " + secs(h.next_check_in) : "")));
  }

  function drainCell(b) {
    const m = b.migration;
    if (m) {
      const bar = el("div", { class: "bar" });
      const fill = el("div");
      fill.style.width = (m.total ? (100 * m.moved / m.total) : 100).toFixed(0) + "%";
      bar.append(fill);
      return el("td", {}, "moved " + m.moved + "/" + m.total + ", " + m.remaining + " left",
                bar, m.waiting ? el("div", { class: "bad" }, "waiting: no other backend up") : "");
    }
    if (b.state === "draining") return el("td", {}, b.pipes + " pipe(s) until it leaves");
    return el("td", { class: "muted" }, "–");
  }

  function renderBackends(backends) {
    const body = $("backends").tBodies[0];
    const rows = backends.map((b) => {
      seen.set(b.id, { url: b.url, weight: b.weight });
      removed.delete(b.id);
      const draining = b.state === "draining";
      const actions = el("td", { class: "actions" },
        el("button", { type: "button", disabled: draining, "data-action": "drain",
                       "data-id": b.id, title: "no new pipes; it leaves the pool once empty" },
           "Drain"),
        el("button", { type: "button", class: "danger", disabled: draining && !!b.migration,
                       "data-action": "migrate", "data-id": b.id,
                       title: "move its pipes to other backends now" }, "Drain + migrate"));
      return el("tr", { "data-backend": b.id },
        el("td", {}, b.id), el("td", { class: "url", title: b.url }, b.url),
        el("td", {}, el("span", { class: "pill " + b.state }, b.state)),
        el("td", {}, b.weight), el("td", {}, b.pipes), el("td", {}, b.errors),
        healthCell(b), drainCell(b), actions);
    });
    body.replaceChildren(...rows);
    label($("backends"));
    const present = new Set(backends.map((b) => b.id));
    for (const [id, info] of seen) {
      if (!present.has(id)) { removed.set(id, info); seen.delete(id); }
    }
    const list = $("removed");
    list.replaceChildren(...[...removed].map(([id, info]) => el("li", { "data-removed": id },
      id + " " + info.url + " ",
      el("button", { type: "button", "data-action": "readd", "data-id": id }, "Re-add"))));
    $("removed-wrap").hidden = removed.size === 0;
  }

  // Each cell carries its column's name, for the one-column layout of small screens.
  function label(table) {
    const names = [...table.tHead.rows[0].cells].map((c) => c.textContent);
    for (const row of table.tBodies[0].rows) {
      [...row.cells].forEach((c, i) => c.setAttribute("data-label", names[i] || ""));
    }
  }

  function renderPipes(pipes, states) {
    const body = $("pipes").tBodies[0];
    const rows = pipes.items.map((p) => el("tr", { "data-pipe": p.id },
      el("td", {}, p.id), el("td", {}, p.client_id), el("td", {}, p.backend_id || "–"),
      el("td", {}, p.parked ? p.state + " · parked, " + secs(p.resume_window_left_seconds) +
        " left, " + p.held_for_client + " held" : p.state), el("td", {}, bytes(p.buffered_bytes)),
      el("td", {}, p.interruptions), el("td", {}, secs(p.age_seconds))));
    body.replaceChildren(...rows);
    label($("pipes"));
    const end = Math.min(pipes.total, pipes.offset + pipes.items.length);
    $("pipes-count").textContent = "(" + pipes.total + (pipes.state ? " " + pipes.state : "") + ")";
    $("page").textContent = pipes.total ? (pipes.offset + 1) + "–" + end + " of " + pipes.total
                                        : "none";
    $("prev").disabled = pipes.offset === 0;
    $("next").disabled = end >= pipes.total;
    if (pipes.offset > 0 && pipes.offset >= pipes.total) {  // the last page emptied
      offset = Math.max(0, pipes.total - PAGE);
    }
  }

  // Actions.
  async function act(action, id) {
    try {
      if (action === "drain" || action === "migrate") {
        const migrate = action === "migrate";
        const what = migrate ? "Drain " + id + " and move its pipes to other backends now?"
                             : "Drain " + id + "? It takes no new pipes and leaves once empty.";
        if (!window.confirm(what)) return;
        const r = await api("DELETE", "/backends/" + encodeURIComponent(id) +
                                      "?migrate=" + migrate);
        say(r.removed ? id + " left the pool" :
            id + " draining" + (migrate ? ", migrating at " + r.migrate_rate + " pipes/s" : ""));
      } else if (action === "readd") {
        const info = removed.get(id);
        if (!info) return;
        if (info.url.includes("***")) {  // masked by the API: the operator types it
          $("add-url").value = info.url;
          $("add-weight").value = info.weight;
          $("add-url").focus();
          say("The URL of " + id + " was masked: type its real query or credentials, then Add.");
          return;
        }
        const r = await api("POST", "/backends", { url: info.url, weight: info.weight });
        removed.delete(id);
        say(info.url + " registered again as " + r.id);
      }
    } catch (err) {
      say(action + " " + id + " failed: " + err.message);
    }
    schedule(0);
  }

  async function add(event) {
    event.preventDefault();
    const url = $("add-url").value.trim();
    const weight = Number($("add-weight").value || "1");
    try {
      const r = await api("POST", "/backends", { url, weight });
      $("add-url").value = "";
      say("registered " + r.url + " as " + r.id);
    } catch (err) {
      say("add failed: " + err.message);
    }
    schedule(0);
  }

  async function login(event) {
    event.preventDefault();
    const input = $("token");
    const given = input.value.trim();
    input.value = "";
    if (!given) return;
    token = given;
    try {
      render(await api("GET", query()));
      sessionStorage.setItem(KEY, token);
      schedule(POLL_MS);
    } catch (err) {
      token = null;
      showLogin(err.status === 401 || err.status === 403 ? "Token refused: " + err.message
                                                         : "Cannot reach the proxy: " + err.message);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", login);
    $("add-form").addEventListener("submit", add);
    $("signout").addEventListener("click", () => { forget(); showLogin(""); });
    document.body.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      if (button && !button.disabled) act(button.dataset.action, button.dataset.id);
    });
    $("pipe-state").addEventListener("change", () => { offset = 0; schedule(0); });
    $("prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); schedule(0); });
    $("next").addEventListener("click", () => {
      if (last && offset + PAGE < last.pipes.total) offset += PAGE;
      schedule(0);
    });
    if (token) poll(); else showLogin("");
  });
})();
