// The Ratchet dashboard: renders a snapshot of the swarm (GET /ui/state, pushed again over the
// SSE stream /ui/events whenever it changes) and the loop's progress lines. No library, no
// external asset: the chart is SVG drawn here.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  // h("td", {class: "x"}, "text", node, ...): an element with attributes and children (text is
  // always set as text, never parsed as HTML).
  function h(tag, attrs, ...kids) {
    const el = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) el.setAttribute(k, v);
    for (const k of kids.flat()) if (k !== undefined && k !== null) el.append(k instanceof Node ? k : String(k));
    return el;
  }
  const short = (c) => (c || "").slice(0, 12);
  const num = (x) => (x === null || x === undefined || !isFinite(x) ? "-" : Math.abs(x) >= 100 ? x.toFixed(1) : Math.abs(x) >= 1 ? x.toFixed(2) : x.toPrecision(3));
  const pill = (text, cls) => h("span", { class: "pill " + cls }, text);
  const branchLink = (b) => h("a", { href: "/ui/branch/" + encodeURIComponent(b) }, b);
  let snap = null;
  let clockSkew = 0; // server time - browser time, from the last snapshot

  function render(s) {
    snap = s;
    clockSkew = s.at_ms - Date.now();
    header(s);
    banner(s);
    chart(s);
    current(s);
    leases(s);
    members(s);
    lineage(s);
    governance(s);
    cycles(s);
    $("problems").textContent = (s.problems || []).join("; ");
    $("updated").textContent = "updated " + new Date(s.at_ms).toLocaleTimeString();
  }

  function header(s) {
    const r = s.run;
    const m = s.metric;
    const el = $("summary");
    el.replaceChildren(
      h("span", {}, "run ", h("code", {}, r ? r.run_id : "-")),
      h("span", { id: "cycles-done" }, r ? r.cycles_done + " cycle(s) done" : "no loop yet"),
      h("span", { class: "metric" }, m.name + " (" + m.direction + " is better): ", h("b", {}, num(m.baseline)), " \u2192 ", h("b", { id: "metric-now" }, num(m.current))),
      h("span", {}, (r ? r.promotions : 0) + " promotion(s)"),
      h("span", {}, "promotion: " + s.promotion_mode),
      h("span", { id: "run-state" }, r && r.stopped ? "stopped: " + r.stopped + " (" + r.stop_detail + ")" : s.current ? "running cycle " + s.current.cycle : "idle"),
    );
  }

  function token() {
    const t = $("token").value.trim() || sessionStorage.getItem("ratchet-token") || "";
    if (t) sessionStorage.setItem("ratchet-token", t);
    return t;
  }

  async function act(what, branch) {
    const t = token();
    const out = $("action-result");
    if (!t) {
      out.textContent = "paste the swarm token first (worktrees/.swarm/token, or the ?token= of the address `ratchet up` printed)";
      return;
    }
    out.textContent = what + " " + branch + "\u2026";
    const r = await fetch("/ui/" + what + "/" + encodeURIComponent(branch), { method: "POST", headers: { Authorization: "Bearer " + t } });
    out.textContent = await r.text();
  }

  function banner(s) {
    const b = $("banner");
    const list = $("approvals");
    b.classList.toggle("on", s.approvals.length > 0);
    list.replaceChildren(
      ...s.approvals.map((w) =>
        h("div", { class: "item", "data-branch": w.branch },
          pill("AWAITING", "v-AWAITING"), branchLink(w.branch), h("span", {}, "\u201c" + w.summary + "\u201d"),
          h("span", { class: "line" }, w.detail),
          (() => { const a = h("button", { class: "approve" }, "Approve"); a.onclick = () => act("approve", w.branch); return a; })(),
          (() => { const a = h("button", { class: "reject" }, "Reject"); a.onclick = () => act("reject", w.branch); return a; })(),
          h("code", { class: "dim" }, "ratchet approve " + w.branch)),
      ),
    );
  }

  const COLORS = { PROMOTED: "var(--promoted)", AWAITING: "var(--awaiting)", PROMOTE: "var(--promote)", HOLD: "var(--hold)", REJECT: "var(--reject)", FAILED: "var(--failed)", INFRA: "var(--infra)" };

  function chart(s) {
    const box = $("chart-svg");
    const W = 860, H = 300, L = 64, R = 16, T = 14, B = 34;
    const pts = s.points, steps = s.steps;
    const lastCycle = Math.max(1, s.run ? s.run.cycles_done : 1, s.current ? s.current.cycle : 1, ...pts.map((p) => p.cycle));
    const firstCycle = Math.min(1, ...pts.map((p) => p.cycle), ...steps.map((p) => p.cycle));
    const vals = [].concat(...pts.map((p) => [p.value, p.lo, p.hi]), steps.map((p) => p.value)).filter((v) => v !== null && v !== undefined && isFinite(v));
    const svg = h("svg:svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "the metric over the cycles" });
    if (!vals.length) {
      svg.append(h("svg:text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#667085" }, "no measurement yet"));
      box.replaceChildren(svg);
      return;
    }
    let lo = Math.min(...vals), hi = Math.max(...vals);
    const pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.1 || 1;
    lo -= pad; hi += pad;
    const x = (c) => L + ((c - (firstCycle - 0.6)) / (lastCycle - firstCycle + 1.2)) * (W - L - R);
    const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
    const axis = h("svg:g", { class: "axis" });
    for (let i = 0; i <= 4; i++) {
      const v = lo + ((hi - lo) * i) / 4;
      axis.append(h("svg:line", { x1: L, x2: W - R, y1: y(v), y2: y(v) }), h("svg:text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, num(v)));
    }
    const every = Math.max(1, Math.ceil((lastCycle - firstCycle + 1) / 20));
    for (let c = firstCycle; c <= lastCycle; c += every) axis.append(h("svg:text", { x: x(c), y: H - B + 16, "text-anchor": "middle" }, c));
    axis.append(h("svg:text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, "cycle"));
    axis.append(h("svg:text", { x: 12, y: T + (H - T - B) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${T + (H - T - B) / 2})` }, s.metric.name + (s.metric.direction === "lower" ? " (lower is better)" : " (higher is better)")));
    svg.append(axis);
    // main's value: the baseline, then a step at each promotion (from the next cycle on).
    if (steps.length) {
      let d = `M ${x(steps[0].cycle - 0.5)} ${y(steps[0].value)}`;
      for (let i = 1; i < steps.length; i++) d += ` H ${x(steps[i].cycle + 0.5)} V ${y(steps[i].value)}`;
      d += ` H ${W - R}`;
      svg.append(h("svg:path", { class: "step", d }));
      for (const st of steps.slice(1)) {
        const m = h("svg:g", { class: "promotion", "data-commit": st.commit, "data-branch": st.branch || "" },
          h("svg:line", { x1: x(st.cycle + 0.5), x2: x(st.cycle + 0.5), y1: T, y2: H - B, stroke: "var(--promoted)", "stroke-dasharray": "3 3" }),
          h("svg:text", { x: x(st.cycle + 0.5) + 3, y: T + 10, fill: "var(--promoted)", "font-size": "11" }, "\u25B2 " + short(st.commit)),
          h("svg:title", {}, "main \u2192 " + short(st.commit) + " (" + st.branch + ", by " + st.by + "): " + num(st.value)));
        svg.append(m);
      }
    }
    for (const p of pts) {
      const cx = x(p.cycle + (p.of > 1 ? (p.index - (p.of - 1) / 2) * Math.min(0.5 / p.of, 0.18) : 0));
      const color = COLORS[p.verdict] || "var(--dim)";
      const g = h("svg:g", { class: "pt", "data-verdict": p.verdict, "data-branch": p.branch, "data-cycle": p.cycle });
      if (p.lo !== null || p.hi !== null) {
        const a = y(p.lo !== null ? p.lo : p.value), b = y(p.hi !== null ? p.hi : p.value);
        g.append(h("svg:line", { class: "bar", x1: cx, x2: cx, y1: a, y2: b, stroke: color }));
        for (const yy of [a, b]) g.append(h("svg:line", { class: "bar", x1: cx - 3, x2: cx + 3, y1: yy, y2: yy, stroke: color }));
      }
      g.append(h("svg:circle", { cx, cy: y(p.value), r: p.verdict === "PROMOTED" ? 6 : 4.5, fill: color, stroke: p.verdict === "PROMOTED" ? "#0b3d1a" : "#fff", "stroke-width": 1.5 }));
      g.append(h("svg:title", {}, p.line));
      svg.append(g);
    }
    box.replaceChildren(svg);
  }

  const STAGES = ["executing", "critiquing", "evaluating", "decided"];
  function stageBar(stage) {
    const i = STAGES.indexOf(stage);
    return h("span", { class: "stages" }, ...STAGES.map((s, j) => h("span", { class: "stage " + (j < i ? "done" : j === i ? "now" : "") }, s)));
  }

  function candidateRow(c) {
    const v = c.state === "awaiting-approval" ? "AWAITING" : c.state === "promoted" ? "PROMOTED" : c.verdict;
    return h("tr", { "data-branch": c.branch },
      h("td", {}, v ? pill(v, "v-" + v) : pill(c.stage, "s-" + c.stage)),
      h("td", {}, branchLink(c.branch), " ", h("span", {}, c.summary), h("div", { class: "line" }, c.detail),
        c.progress ? h("div", { class: "progress" }, c.progress) : ""),
      h("td", {}, c.artifacts.map((a) => h("div", {}, h("a", { class: "mono", href: "/ui/branch/" + encodeURIComponent(c.branch) + "/artifact/" + a.path.split("/").map(encodeURIComponent).join("/") }, a.path)))));
  }

  function current(s) {
    const el = $("current");
    const c = s.current;
    if (!c) {
      el.replaceChildren(h("p", { class: "dim" }, s.run && s.run.stopped ? "the loop stopped: " + s.run.stopped : "no cycle in flight"));
      return;
    }
    el.replaceChildren(
      h("p", { "data-cycle": c.cycle, id: "current-cycle" }, h("b", {}, "cycle " + c.cycle), " \u00b7 " + c.phase + " \u00b7 baseline ", h("code", {}, short(c.baseline))),
      h("table", {}, ...c.candidates.map((x) => h("tbody", {}, h("tr", {}, h("td", { colspan: 3 }, stageBar(x.stage))), candidateRow(x)))),
    );
  }

  function leases(s) {
    const rows = s.leases.map((l) => {
      const age = l.heartbeat_age_ms === null ? null : l.heartbeat_age_ms + (Date.now() + clockSkew - s.at_ms);
      return h("tr", {},
        h("td", {}, l.agent_id), h("td", {}, l.task), h("td", {}, branchLink(l.branch)),
        h("td", { class: "where", "data-holder": l.agent_id, "data-host": l.host, "data-engine": l.engine }, where(l.host, l.engine, l.jobs, l.remote)),
        h("td", { class: "age", "data-age": l.heartbeat_age_ms, "data-at": s.at_ms }, age === null ? "-" : (age / 1000).toFixed(1) + " s ago"),
        h("td", {}, "token " + l.token), h("td", { class: "dim" }, "ttl " + l.ttl_ms / 1000 + " s, pid " + l.pid));
    });
    $("leases").replaceChildren(rows.length ? h("table", {}, h("tr", {}, ...["holder", "task", "branch", "where", "heartbeat", "fencing", ""].map((t) => h("th", {}, t))), ...rows) : h("p", { class: "dim" }, "no lease held"));
  }

  // Where something runs: its host, its engine and the engine's running job.
  function where(host, engine, jobs, remote) {
    const job = (jobs || []).find((j) => j.state === "RUNNING") || (jobs || [])[0];
    return [h("b", {}, host), remote ? " (remote)" : "", " \u00b7 " + engine,
      job ? h("span", { class: "job", "data-job": job.id }, " \u00b7 job " + job.id + (job.node ? " on " + job.node : "") + " " + job.state.toLowerCase()) : null];
  }

  // Every member: where it runs (host, engine, jobs), as `ratchet status` shows it.
  function members(s) {
    const rows = (s.members || []).map((m) => h("tr", { "data-member": m.name },
      h("td", {}, m.name), h("td", {}, m.role),
      h("td", { class: "where", "data-host": m.host, "data-engine": m.engine }, where(m.host, m.engine, m.jobs, m.remote)),
      h("td", { class: "dim" }, m.state + (m.task ? " \u00b7 holds " + m.task : ""))));
    $("members").replaceChildren(rows.length ? h("table", {}, h("tr", {}, ...["member", "role", "where", "state"].map((t) => h("th", {}, t))), ...rows) : h("p", { class: "dim" }, "no member recorded"));
  }

  function tickAges() {
    for (const td of document.querySelectorAll("#leases td.age[data-age]")) {
      const age = Number(td.dataset.age) + (Date.now() + clockSkew - Number(td.dataset.at));
      td.textContent = (age / 1000).toFixed(1) + " s ago";
    }
  }

  function lineage(s) {
    $("lineage").replaceChildren(h("table", {}, ...s.lineage.map((c) =>
      h("tr", { "data-commit": c.commit },
        h("td", {}, h("code", {}, short(c.commit))),
        h("td", {}, c.subject, c.promotion ? h("div", { class: "line" }, "promoted in cycle " + c.promotion.cycle + " from ", branchLink(c.promotion.branch), " by " + c.promotion.by + ": " + num(c.promotion.before) + " \u2192 " + num(c.promotion.after) + (c.promotion.summary ? " \u00b7 " + c.promotion.summary : "")) : null),
        h("td", { class: "dim" }, c.promotion ? pill("ratchet", "v-PROMOTED") : "")))));
  }

  function diff(text) {
    return h("pre", { class: "diff" }, ...text.split("\n").map((l) => h("div", { class: l.startsWith("+") && !l.startsWith("+++") ? "add" : l.startsWith("-") && !l.startsWith("---") ? "del" : l.startsWith("@@") ? "hunk" : "" }, l || " ")));
  }

  function governance(s) {
    const g = s.governance;
    if (!g) {
      $("governance").replaceChildren(h("p", { class: "dim" }, "governance cannot be read"));
      return;
    }
    const docs = g.docs.map((d) => h("tr", {},
      h("td", {}, d.doc),
      h("td", {}, d.approved ? h("code", {}, short(d.approved.sha256)) : "never approved"),
      h("td", { class: "dim" }, d.approved ? d.approved.approved_by + ", " + d.approved.approved_at : ""),
      h("td", {}, d.state === "in-force" ? pill("in force", "v-PROMOTED") : pill(d.state === "modified" ? "pending edit" : d.state, "v-HOLD"))));
    const pending = g.docs.filter((d) => d.diff).map((d) => h("div", { class: "pending", "data-doc": d.doc }, h("p", {}, h("b", {}, d.doc + ": pending edit"), d.valid === false ? " (does not validate: " + d.error + ")" : "", " \u2014 ", h("code", {}, "ratchet approve " + d.doc)), diff(d.diff)));
    const props = g.proposals.map((p) => h("div", { class: "proposal" }, h("p", {}, h("b", {}, "proposal " + p.id), " (" + p.doc + "): " + p.summary + " \u2014 ", h("code", {}, "ratchet approve " + p.id)), diff(p.diff)));
    $("governance").replaceChildren(h("table", {}, ...docs), ...pending, ...props, g.in_force_error ? h("p", { class: "problem" }, g.in_force_error) : "");
  }

  function cycles(s) {
    $("cycles").replaceChildren(...s.cycles.map((c) =>
      h("div", { class: "cycle", "data-cycle": c.cycle },
        h("p", {}, h("b", {}, "cycle " + c.cycle), " \u00b7 baseline ", h("code", {}, short(c.baseline)), c.promoted ? h("span", {}, " \u00b7 promoted ", branchLink(c.promoted)) : "", c.candidates.length ? "" : " \u00b7 no candidates"),
        h("table", {}, ...c.candidates.map(candidateRow)))));
  }

  function log(line) {
    const el = $("log");
    const stick = el.scrollTop + el.clientHeight >= el.scrollHeight - 4;
    el.append(line + "\n");
    while (el.childNodes.length > 400) el.firstChild.remove();
    if (stick) el.scrollTop = el.scrollHeight;
  }

  function connect() {
    const es = new EventSource("/ui/events");
    es.addEventListener("snapshot", (e) => render(JSON.parse(e.data)));
    es.addEventListener("line", (e) => log(e.data));
    es.addEventListener("log-reset", () => $("log").replaceChildren());
    es.onopen = () => { $("conn").className = "live"; $("conn").textContent = "live"; };
    es.onerror = () => { $("conn").className = "down"; $("conn").textContent = "reconnecting"; };
  }

  $("token").value = sessionStorage.getItem("ratchet-token") || "";
  render(JSON.parse($("initial").textContent));
  setInterval(tickAges, 1000);
  connect();
})();
