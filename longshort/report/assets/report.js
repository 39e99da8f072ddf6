// The episode browser of a longshort run report. Reads the JSON in #report-data; the page's address
// keeps what is open (#group=...&outcome=...&episode=ID~SAMPLE), so a link opens the same episode.
(function () {
  "use strict";
  const node = document.getElementById("report-data");
  if (!node) return;
  const data = JSON.parse(node.textContent);
  const groupSelect = document.getElementById("ep-group");
  const outcomeSelect = document.getElementById("ep-outcome");
  const list = document.getElementById("ep-list");
  const detail = document.getElementById("ep-detail");
  const count = document.getElementById("ep-count");
  const groups = new Map(data.groups.map((g) => [g.key, g]));
  const state = { group: data.groups[0].key, outcome: "all", episode: null };

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "style") e.style.cssText = v; else if (k === "onclick") e.onclick = v; else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }
  function outcomeLabel(c) {
    if (c.startsWith("format:")) return "format failure: " + c.slice(7);
    return { correct: "correct", wrong: "wrong answer", turn_cap: "turn cap", budget: "budget", error: "error" }[c] || c;
  }
  function badge(c) { return el("span", { class: "badge " + c.replace(":", "-") }, outcomeLabel(c)); }
  function episodeKey(e) { return e.id + "~" + e.sample; }
  function roleColour(role) { return data.roles[role] || "#555"; }
  function fmt(v) { return typeof v === "number" ? String(Number(v.toFixed(3))) : String(v); }
  function perRole(roles, values) {  // "36 / 12", each number in its agent's colour
    const cell = el("td", { class: "per-role" });
    roles.forEach((r, i) => cell.append(...(i ? [" / "] : []), el("span", { style: "color:" + roleColour(r) },
      r in values ? fmt(values[r]) : "-")));
    return cell;
  }

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    if (params.has("group") && groups.has(params.get("group"))) state.group = params.get("group");
    state.outcome = params.get("outcome") || "all";
    state.episode = params.get("episode");
  }
  function writeHash() {
    const params = new URLSearchParams({ group: state.group, outcome: state.outcome });
    if (state.episode) params.set("episode", state.episode);
    history.replaceState(null, "", "#" + params.toString());
  }

  function fillGroups() {
    const rl = el("optgroup", { label: "RL steps" }), ev = el("optgroup", { label: "Evaluation" });
    for (const g of data.groups) (g.kind === "rl" ? rl : ev).append(el("option", { value: g.key }, g.label + " (" + g.total + ")"));
    for (const og of [rl, ev]) if (og.children.length) groupSelect.append(og);
  }
  function fillOutcomes(group) {
    outcomeSelect.replaceChildren(el("option", { value: "all" }, "all (" + group.total + ")"));
    for (const [c, n] of Object.entries(group.counts)) outcomeSelect.append(el("option", { value: c }, outcomeLabel(c) + " (" + n + ")"));
    if (!(state.outcome in group.counts)) state.outcome = "all";
    outcomeSelect.value = state.outcome;
  }

  function showList() {
    const group = groups.get(state.group);
    groupSelect.value = group.key;
    fillOutcomes(group);
    const shown = group.episodes.filter((e) => state.outcome === "all" || e.class === state.outcome);
    const all = state.outcome === "all" ? group.total : group.counts[state.outcome];
    count.textContent = "showing " + shown.length + " of " + all + (shown.length < all ? " (sampled)" : "");
    const roles = Object.keys(data.roles);
    const rewarded = group.kind === "rl";
    const names = el("span", {}, ...roles.flatMap((r, i) => [...(i ? [" / "] : []),
      el("span", { style: "color:" + roleColour(r) }, r)]));
    const head = el("tr", {}, el("th", {}, "problem"), el("th", {}, "outcome"), el("th", {}, "turns"),
      el("th", {}, "tokens ", names.cloneNode(true)), ...(rewarded ? [el("th", {}, "reward ", names)] : []));
    const rows = shown.map((e) => {
      const row = el("tr", { class: "episode" + (episodeKey(e) === state.episode ? " open" : ""), "data-key": episodeKey(e),
        onclick: () => { state.episode = episodeKey(e); writeHash(); render(); } },
        el("td", {}, e.id + (e.sample ? " #" + e.sample : "")), el("td", {}, badge(e.class)),
        el("td", {}, String(e.turns.length)), perRole(roles, Object.fromEntries(roles.map((r) => [r, e.tokens[r] || 0]))),
        ...(rewarded ? [perRole(roles, e.totals)] : []));
      return row;
    });
    list.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
    return shown;
  }

  function rewardsTable(e) {
    const roles = Object.keys(e.rewards);
    if (!roles.length) return el("p", { class: "hint" }, "Evaluation records carry no reward terms.");
    const terms = [...new Set(roles.flatMap((r) => Object.keys(e.rewards[r])))].sort();
    return el("table", { class: "md rewards" },
      el("thead", {}, el("tr", {}, el("th", {}, "agent"), ...terms.map((t) => el("th", {}, t)), el("th", {}, "total"))),
      el("tbody", {}, ...roles.map((r) => el("tr", {}, el("td", { style: "color:" + roleColour(r) }, r),
        ...terms.map((t) => el("td", {}, t in e.rewards[r] ? fmt(e.rewards[r][t]) : "")),
        el("td", {}, r in e.totals ? fmt(e.totals[r]) : "")))));
  }

  function showEpisode(e) {
    const verdict = e.class === "correct" ? "correct" : (e.outcome === "answered" ? "wrong" : "not graded");
    const facts = el("dl", { class: "facts" },
      el("dt", {}, "outcome"), el("dd", {}, badge(e.class)),
      el("dt", {}, "grader"), el("dd", { class: "grader" }, verdict + (e.verdict ? " (reason: " + e.verdict + ")" : "")),
      el("dt", {}, "gold answer"), el("dd", {}, String(e.gold ?? "")),
      el("dt", {}, "extracted"), el("dd", {}, e.extracted ?? "none"),
      ...(e.answer_role ? [el("dt", {}, "answered by"), el("dd", {}, e.answer_role)] : []),
      ...(e.error ? [el("dt", {}, "error"), el("dd", {}, e.error)] : []));
    const turns = e.turns.map((t, i) => el("div", { class: "turn", style: "border-color:" + roleColour(t.role) },
      el("div", { class: "turn-head" }, "turn " + (i + 1) + " ",
        el("span", { class: "role", style: "background:" + roleColour(t.role) }, t.role),
        " · " + t.tokens + " tokens · finish: " + t.finish + " · format: ",
        el("span", { class: t.format_ok ? "ok" : "bad" }, t.format_ok ? "ok" : "failed (" + t.format + ")")),
      el("pre", {}, t.text)));
    const problem = e.prompt ? [el("details", { open: "" }, el("summary", {}, "problem"), el("pre", { class: "prompt" }, e.prompt))] : [];
    detail.replaceChildren(el("h3", {}, "Episode " + e.id + ", sample " + e.sample), ...problem,
      facts, el("h4", {}, "Reward terms"), rewardsTable(e), el("h4", {}, "Turns (" + e.turns.length + ")"), ...turns);
  }

  function render() {
    const shown = showList();
    const open = shown.find((e) => episodeKey(e) === state.episode)
      || groups.get(state.group).episodes.find((e) => episodeKey(e) === state.episode);
    if (open) showEpisode(open);
    else detail.replaceChildren(el("p", { class: "hint" }, state.episode
      ? "Episode " + state.episode.replace("~", ", sample ") + " is not among the episodes this page embeds (see the rule above)."
      : "Open an episode from the list."));
  }

  fillGroups();
  readHash();
  groupSelect.onchange = () => { state.group = groupSelect.value; state.outcome = "all"; state.episode = null; writeHash(); render(); };
  outcomeSelect.onchange = () => { state.outcome = outcomeSelect.value; writeHash(); render(); };
  window.addEventListener("hashchange", () => { readHash(); render(); });
  render();
  if (state.episode) document.getElementById("episodes").scrollIntoView();
})();
