// The status page: follows /status/events and draws what it says. The key typed into the page
// lives in this closure only: never in the URL, a cookie, localStorage or sessionStorage, so it
// is gone when the tab is. Everything shown is written as text, never as HTML.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  let key = null;
  let role = null;
  let follower = null;
  let offset = 0; // server time − this browser's time, in ms
  let retry = 500;
  let notice = ""; // what the page last said of the key, shown while no key is signed in

  function say(text) {
    notice = text;
    $("viewer").textContent = text;
  }

  const serverNow = () => Date.now() + offset;

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function span(ms) {
    let s = Math.max(0, Math.round(ms / 1000));
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    const two = (n) => String(n).padStart(2, "0");
    if (d > 0) return `${d}d ${h}h ${two(m)}m`;
    if (h > 0) return `${h}h ${two(m)}m ${two(s)}s`;
    return `${m}m ${two(s)}s`;
  }

  // Times in this browser's zone, the zone always named: the API's times are UTC, and an
  // on-call engineer compares them with logs and with colleagues elsewhere.
  const stamp = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short",
  });
  function when(iso) {
    return stamp.format(new Date(iso));
  }

  // Countdowns: every element with data-until shows the time left and moves every second.
  function countdown(e, iso, prefix) {
    e.dataset.until = iso;
    e.dataset.prefix = prefix;
    tickOne(e);
    return e;
  }
  function tickOne(e) {
    const left = Date.parse(e.dataset.until) - serverNow();
    e.textContent = left > 0 ? `${e.dataset.prefix} ${span(left)}` : `${e.dataset.prefix} now`;
  }
  setInterval(() => document.querySelectorAll("[data-until]").forEach(tickOne), 1000);

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (key) h.Authorization = `Bearer ${key}`;
    return h;
  }

  // Server-sent events over fetch, so that the key travels in a header, not in the URL.
  async function follow() {
    if (follower) follower.abort();
    const mine = new AbortController();
    follower = mine;
    try {
      const response = await fetch("/status/events", { headers: headers(), cache: "no-store", signal: mine.signal });
      if (response.status === 401 && key) {
        say("That key is unknown or inactive; showing the public status.");
        forget(false);
        return;
      }
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      $("connection").textContent = "";
      retry = 500;
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let event = "message";
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          }
          if (event === "status" && data.length) render(JSON.parse(data.join("\n")));
        }
      }
      throw new Error("the stream ended");
    } catch (e) {
      if (mine.signal.aborted) return;
      $("connection").textContent = `Reconnecting… (${e.message})`;
      setTimeout(() => { if (follower === mine) follow(); }, retry);
      retry = Math.min(retry * 2, 8000);
    }
  }

  function render(doc) {
    offset = Date.parse(doc.now) - Date.now();
    const viewer = doc.viewer;
    // The stream follows its key: a demoted key loses its buttons with the next document.
    role = viewer ? viewer.role : null;
    const operator = role === "operator" || role === "admin";
    renderBanner(doc.mode, doc.overrides || [], operator);
    $("viewer").textContent = viewer ? `Signed in as ${viewer.name} (${viewer.role}); the key is kept in this tab only.` : notice;
    $("forget-key").hidden = !viewer;
    $("private").hidden = !viewer;
    if (!viewer) return;
    renderOverrides(doc.overrides || [], operator);
    renderWindows(doc.windows || []);
    renderRuns(doc.runs || []);
    renderLimiter(doc.limiter);
    renderSinks(doc.sinks || []);
    for (const id of ["overrides", "runs", "refused", "shadow", "sinks"]) label($(id));
  }

  // Each cell carries its column's name, which a narrow screen shows beside it when the table's
  // rows are stacked (a phone has no room for seven columns).
  function label(table) {
    const names = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
    for (const row of table.querySelectorAll("tbody tr")) {
      [...row.cells].forEach((cell, i) => {
        if (cell.colSpan === 1 && names[i] && !cell.classList.contains("act")) cell.dataset.label = names[i];
      });
    }
  }

  function renderBanner(mode, overrides, operator) {
    const banner = $("banner");
    banner.className = `banner ${mode.mode}`;
    $("mode").textContent = mode.mode;
    const from = { git: "Declared in git", override: "An emergency override", window: "A maintenance window" }[mode.source] || mode.source;
    const parts = [from];
    if (mode.actor) parts.push(`set by ${mode.actor}`);
    if (mode.reason) parts.push(`“${mode.reason}”`);
    $("mode-detail").textContent = parts.join(" · ");
    const until = $("mode-until");
    if (mode.until) countdown(until, mode.until, "Ends by itself in");
    else { delete until.dataset.until; until.textContent = mode.source === "git" ? "" : "Until lifted"; }
    // The freeze of changes (a window), not the platform's freeze (the mode) that #freeze sets.
    $("changes-frozen").hidden = !mode.freeze;
    if (mode.freeze) {
      $("changes-frozen-by").textContent = mode.freeze.window;
      countdown($("changes-frozen-until"), mode.freeze.until, "Ends in");
    }
    // The override that holds the mode, when the viewer may see it; a lockdown's is one of a
    // group, whose other members say what is locked.
    const held = mode.source === "override" ? overrides.find((o) => o.kind === "maintenance_mode") : undefined;
    const group = held && held.group_id ? overrides.filter((o) => o.group_id === held.group_id) : [];
    const lockdown = $("lockdown");
    lockdown.hidden = group.length === 0;
    if (group.length) {
      const clients = group.filter((o) => o.kind === "client").map((o) => o.key);
      const rule = group.find((o) => o.kind === "rate_limit_rule");
      const locked = [`Lockdown: ${clients.length} client${clients.length === 1 ? "" : "s"} turned off`];
      if (clients.length) locked[0] += ` (${clients.join(", ")})`;
      if (rule) {
        const which = rule.key === "*" ? "global" : rule.key;
        locked.push(`the ${which} rate limit replaced (git restores ${restoredText(rule.restores)})`);
      }
      lockdown.textContent = `${locked.join("; ")}.`;
    }
    // The way out while frozen; a freeze only when there is none.
    $("freeze-actions").hidden = !operator;
    $("freeze").hidden = !(mode.mode === "normal");
    const lift = $("lift");
    lift.hidden = !held;
    if (held) {
      lift.textContent = group.length ? "Lift the lockdown…" : "Lift the freeze…";
      lift.onclick = () => ask(liftAction(held, group.length > 0));
    }
  }

  // Lifting an override (and its group, for a lockdown's): git's values come back.
  function liftAction(o, group) {
    return {
      title: group ? "Lift the lockdown" : "Lift this override",
      text: group
        ? `Every override of group ${o.group_id} ends now, and git's values come back.`
        : `The override on ${o.kind} ${o.key} (by ${o.actor}: “${o.reason}”) ends now, and git's value comes back.`,
      freeze: false,
      run: (reason) => call("DELETE", `/system/overrides/${o.id}`, { reason, group }),
    };
  }

  function renderOverrides(overrides, operator) {
    const body = $("overrides").querySelector("tbody");
    body.replaceChildren();
    $("overrides-empty").hidden = overrides.length > 0;
    $("overrides").hidden = overrides.length === 0;
    // A lockdown's overrides are one group: one heading row, lifted together.
    const groups = new Map();
    for (const o of overrides) {
      const g = o.group_id || `#${o.id}`;
      if (!groups.has(g)) groups.set(g, []);
      groups.get(g).push(o);
    }
    for (const [group, members] of groups) {
      const grouped = members.length > 1 || members[0].group_id;
      if (grouped) {
        const row = el("tr", null, "group");
        const head = el("td", `Lockdown group ${group} (${members.length} overrides)`);
        head.colSpan = 6;
        row.append(head, actionCell(operator, members[0], `Lift group ${group}`, true));
        body.append(row);
      }
      for (const o of members) {
        const row = el("tr", null, grouped ? "member" : "");
        row.append(
          el("td", `${o.kind} ${o.key}`),
          el("td", o.actor),
          el("td", o.reason),
          el("td", when(o.created_at)),
          o.expires_at ? countdown(el("td", null, "ends"), o.expires_at, "in") : el("td", "until lifted", "ends"),
          restores(o.restores),
          grouped ? el("td") : actionCell(operator, o, `Lift ${o.kind} ${o.key}`, false),
        );
        body.append(row);
      }
    }
  }

  // What git restores, as people read it: `max_requests: 100, active: true`.
  function restoredText(value) {
    if (value === null || typeof value !== "object") return String(value);
    const fields = Object.entries(value).filter(([name]) => !["name", "scope", "key"].includes(name));
    if (!fields.length) return "git's defaults";
    return fields.map(([name, v]) => `${name}: ${v === "" ? "(empty)" : v}`).join(", ");
  }

  function restores(value) {
    const cell = el("td");
    if (value === null || value === undefined) cell.append(el("span", "nothing declared", "quiet"));
    else cell.textContent = restoredText(value);
    return cell;
  }

  function actionCell(operator, o, label, group) {
    const cell = el("td", null, "act");
    if (!operator) return cell;
    const button = el("button", group ? "Lift group…" : "Lift…");
    button.type = "button";
    button.dataset.action = "lift";
    button.dataset.override = o.id;
    button.setAttribute("aria-label", label);
    button.addEventListener("click", () => ask(liftAction(o, group)));
    cell.append(button);
    return cell;
  }

  function renderWindows(windows) {
    const list = $("windows");
    list.replaceChildren();
    $("windows-empty").hidden = windows.length > 0;
    const axis = $("axis");
    axis.replaceChildren();
    const start = serverNow();
    const width = 7 * 86400 * 1000;
    const at = (ms) => `${Math.max(0, Math.min(100, ((ms - start) / width) * 100))}%`;
    const midnight = new Date(start);
    midnight.setHours(24, 0, 0, 0);
    for (let d = midnight.getTime(); d < start + width; d += 86400 * 1000) {
      const day = el("div", new Date(d).toLocaleDateString(undefined, { weekday: "short", day: "numeric" }), "day");
      day.style.left = at(d);
      axis.append(day);
    }
    // Every occurrence is drawn on the axis; the list names each window once, at its next one.
    const listed = new Set();
    for (const w of windows) {
      const from = Date.parse(w.starts_at);
      const to = Date.parse(w.ends_at);
      const bar = el("div", null, `span ${w.mode}`);
      bar.style.left = at(from);
      bar.style.width = `calc(${at(to)} - ${at(from)} + 3px)`;
      bar.title = `${w.name}: ${w.mode}`;
      axis.append(bar);
      if (listed.has(w.name)) continue;
      listed.add(w.name);
      const item = el("li");
      item.append(el("strong", w.name), ` (${w.mode}) ${when(w.starts_at)} → ${when(w.ends_at)} `);
      item.append(w.open ? countdown(el("span"), w.ends_at, "· open now, ends in") : countdown(el("span"), w.starts_at, "· opens in"));
      if (w.rule) item.append(el("div", `every ${w.rule}`, "quiet rule"));
      if (w.description) item.append(el("div", w.description, "quiet"));
      list.append(item);
    }
    const now = el("div", null, "now");
    now.style.left = "0%";
    axis.append(now);
  }

  function renderRuns(runs) {
    const body = $("runs").querySelector("tbody");
    body.replaceChildren();
    for (const r of runs) {
      const changes = ["created", "updated", "deleted", "deactivated", "held"]
        .filter((k) => r[k] > 0)
        .map((k) => `${r[k]} ${k}`);
      let what = changes.join(", ") || "no change";
      if (r.count > 1) what = `${r.count} passes, no change, since ${when(r.since)}`;
      if (r.drift) what += " (drift corrected)";
      if (r.refusal) what = `refused: ${r.refusal}`;
      const row = el("tr", null, r.refusal ? "refused" : "");
      row.append(el("td", when(r.finished_at)), el("td", r.actor), el("td", r.source), el("td", what));
      body.append(row);
    }
  }

  // The sinks with deliveries not sent; a failing or given-up one is marked.
  function renderSinks(sinks) {
    const body = $("sinks").querySelector("tbody");
    body.replaceChildren();
    $("sinks-empty").hidden = sinks.length > 0;
    $("sinks").hidden = sinks.length === 0;
    for (const s of sinks) {
      const row = el("tr", null, s.retrying > 0 || s.dead > 0 ? "refused" : "");
      row.append(el("td", s.sink), el("td", s.pending, "count"), el("td", s.retrying, "count"),
        el("td", s.dead, "count"), el("td", s.last_error || ""));
      body.append(row);
    }
  }

  function renderLimiter(limiter) {
    if (!limiter) return;
    const c = limiter.counters;
    $("counters").textContent = c.store === "redis"
      ? (c.reachable ? "Counters: shared in Redis, reachable." : `Counters: Redis UNREACHABLE for ${c.unreachable_seconds}s; each rule follows its on_outage policy.`)
      : "Counters: in this replica's memory.";
    for (const [id, rows] of [["refused", limiter.refused], ["shadow", limiter.shadow]]) {
      const body = $(id).querySelector("tbody");
      body.replaceChildren();
      if (!rows.length) {
        const cell = el("td", `None in the last ${limiter.minutes} minutes.`, "quiet");
        cell.colSpan = 3;
        const row = el("tr");
        row.append(cell);
        body.append(row);
      }
      for (const r of rows) {
        const row = el("tr");
        row.append(el("td", `${r.scope} ${r.subject}`), el("td", r.rule), el("td", r.count, "count"));
        body.append(row);
      }
    }
  }

  async function call(method, path, body) {
    const init = { method, headers: headers({ "Content-Type": "application/json" }) };
    if (method === "DELETE") {
      const query = new URLSearchParams({ reason: body.reason });
      if (body.group) query.set("group", "true");
      path += `?${query}`;
    } else {
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (!response.ok) {
      let message = `HTTP ${response.status}`;
      try { message = (await response.json()).error.message; } catch (_) { /* keep the status */ }
      throw new Error(message);
    }
  }

  // One dialog for every action: a reason, an optional duration, and a confirmation.
  let pending = null;
  function ask(action) {
    pending = action;
    $("confirm-title").textContent = action.title;
    $("confirm-text").textContent = action.text;
    $("freeze-mode-row").hidden = !action.freeze;
    $("duration-row").hidden = !action.freeze;
    $("reason").value = "";
    $("duration").value = "";
    $("confirm-error").textContent = "";
    $("confirm").showModal();
    $(action.freeze ? "freeze-mode" : "reason").focus();
  }

  $("confirm-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const ok = $("confirm-ok");
    // One request per confirmation: a double click sends one freeze.
    if (ok.disabled) return;
    const reason = $("reason").value.trim();
    if (!reason) { $("confirm-error").textContent = "A reason is required."; $("reason").focus(); return; }
    const minutes = parseInt($("duration").value, 10);
    ok.disabled = true;
    try {
      await pending.run(reason, Number.isFinite(minutes) && minutes > 0 ? minutes : null);
      $("confirm").close();
    } catch (e) {
      $("confirm-error").textContent = e.message;
    } finally {
      ok.disabled = false;
    }
  });
  $("confirm-cancel").addEventListener("click", () => $("confirm").close());

  $("freeze").addEventListener("click", () => ask({
    title: "Freeze the platform",
    text: "Every replica enforces the new mode within a second. It holds until it ends by itself or is lifted here.",
    freeze: true,
    run: (reason, minutes) => {
      const body = { reason };
      if (minutes) body.ttl_seconds = minutes * 60;
      return call("POST", `/system/maintenance/state/${$("freeze-mode").value}`, body);
    },
  }));

  function forget(refollow) {
    key = null;
    role = null;
    $("key").value = "";
    $("forget-key").hidden = true;
    $("private").hidden = true;
    $("freeze-actions").hidden = true;
    $("lockdown").hidden = true;
    // Nothing the previous key could see stays in the page.
    for (const id of ["overrides", "runs", "refused", "shadow", "sinks"]) $(id).querySelector("tbody").replaceChildren();
    for (const id of ["windows", "axis"]) $(id).replaceChildren();
    $("counters").textContent = "";
    if (refollow !== false) say("");
    follow();
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const typed = $("key").value.trim();
    $("key").value = "";
    if (!typed) return;
    key = typed;
    say("Checking the key…");
    follow();
  });
  $("forget-key").addEventListener("click", () => forget());

  follow();
})();
