/* warmbench answer explorer: static, offline, no dependencies.
   The manifest is inline (WB.store.manifest); each model x dataset's index and answer chunks are JS files under
   data/ loaded with <script> tags when needed (browsers block fetch() of file:// URLs). All data is written into
   the page with textContent, never as HTML. */
(function () {
  "use strict";
  const M = WB.store.manifest;
  const PAGE = 100;            // prompts listed per page
  const COLLAPSE_CHARS = 600;  // longer responses start collapsed
  const ABSENT = ".", MISSING = "?";
  const $ = (id) => document.getElementById(id);
  const DEFAULTS = { model: "", dataset: "", context: "*", belief: "*", persona: "", discord: "", verdict: "", q: "",
                     page: 0, sel: -1, tab: "prompts" };
  const state = { ...DEFAULTS };
  const pending = {};
  let unit = null;      // the open model x dataset: {id, index, chunks[], texts[]}
  let filtered = [];    // prompt numbers that pass the filters, in order
  let updating = 0;     // the latest update wins; older ones stop at their next await

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (value !== undefined && value !== null) node.setAttribute(key, value);
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  function setStatus(text, error) {
    $("status").textContent = text;
    $("status").className = "status" + (error ? " error" : "");
  }

  function load(key) {
    if (key in WB.store) return Promise.resolve(WB.store[key]);
    if (!pending[key]) {
      pending[key] = new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = "data/" + key + ".js";
        script.onload = () => (key in WB.store ? resolve(WB.store[key]) : reject(new Error("data/" + key + ".js holds no data")));
        script.onerror = () => {
          delete pending[key];
          reject(new Error("Could not load data/" + key + ".js. The explorer's data files must sit next to index.html " +
            "(results/explorer/data/); inside the Snakemake report only small studies are inlined, so open " +
            "results/explorer/index.html instead."));
        };
        document.head.appendChild(script);
      });
    }
    return pending[key];
  }

  // ---- state in the URL fragment, so a view can be bookmarked or shared
  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    for (const [key, value] of Object.entries(DEFAULTS)) {
      if (!params.has(key)) state[key] = value;
      else state[key] = typeof value === "number" ? parseInt(params.get(key), 10) || 0 : params.get(key);
    }
  }

  function writeHash() {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(state)) if (value !== "" && value !== "*" && value !== -1) params.set(key, value);
    try { history.replaceState(null, "", "#" + params.toString()); } catch (e) { /* an opaque origin (report iframe) */ }
  }

  // ---- the open model x dataset
  async function openUnit(token) {
    const meta = (M.units[state.model] || {})[state.dataset];
    if (!meta) { unit = null; return; }
    if (unit && unit.id === meta.id) return;
    setStatus("loading the index of " + state.model + " / " + state.dataset + " ...");
    const index = await load(meta.id + "/index");
    if (token !== updating) return;
    unit = { id: meta.id, meta, index, chunks: new Array(meta.n_chunks), texts: new Array(index.item.length) };
  }

  async function loadChunk(k) {
    if (!unit.chunks[k]) {
      const chunk = await load(unit.id + "/c" + k);
      unit.chunks[k] = chunk;
      chunk.prompts.forEach((p, j) => { unit.texts[chunk.start + j] = searchText(chunk, chunk.start + j, p); });
    }
    return unit.chunks[k];
  }

  function searchText(chunk, i, prompt) {
    const parts = [];
    const add = (record) => { for (const v of Object.values(record || {})) if (typeof v === "string") parts.push(v); };
    add(chunk.items[unit.index.items[unit.index.item[i]][0]]);
    add(prompt);
    for (const row of Object.values(prompt.rows)) add(row);
    return parts.join("\n").toLowerCase();
  }

  async function loadAll(token) {
    const n = unit.chunks.length;
    for (let k = 0; k < n; k++) {
      if (token !== updating) return;
      if (!unit.chunks[k]) { setStatus("loading answers to search: " + (k + 1) + " / " + n + " files"); await loadChunk(k); }
    }
  }

  function promptAt(i) {
    const chunk = unit.chunks[unit.index.chunk[i]];
    return chunk.prompts[i - chunk.start];
  }

  function itemFields(i) {
    return unit.chunks[unit.index.chunk[i]].items[unit.index.items[unit.index.item[i]][0]] || {};
  }

  // ---- filters
  function slots() {
    const personas = unit.index.personas;
    return { o: personas.indexOf("original"), p: personas.indexOf(state.persona) };
  }

  function beliefAllowed(name) {
    if (state.belief === "*") return true;
    if (state.belief.startsWith("type:")) return M.test_types[name] === state.belief.slice(5);
    return name === state.belief;
  }

  function pairMatches(codes, o, p) {
    if (!state.discord) return true;
    if (o < 0 || p < 0) return false;
    const a = codes[o], b = codes[p];
    if (state.discord === "b") return a === "0" && b === "1";
    if (state.discord === "c") return a === "1" && b === "0";
    if (state.discord === "any") return (a === "0" && b === "1") || (a === "1" && b === "0");
    return "01".includes(a) && a === b;  // concordant
  }

  function refilter() {
    const ix = unit.index;
    const context = state.context === "*" ? -1 : ix.contexts.indexOf(state.context);
    const beliefOk = ix.beliefs.map(beliefAllowed);
    const { o, p } = slots();
    const q = state.q.trim().toLowerCase();
    filtered = [];
    for (let i = 0; i < ix.item.length; i++) {
      if (context >= 0 && ix.context[i] !== context) continue;
      if (state.context !== "*" && context < 0) continue;
      if (!beliefOk[ix.belief[i]]) continue;
      if (!pairMatches(ix.incorrect[i], o, p)) continue;
      if (state.verdict && (p < 0 || ix.verdict[i][p] !== state.verdict)) continue;
      if (q && !(unit.texts[i] || "").includes(q)) continue;
      filtered.push(i);
    }
  }

  // ---- controls
  function fillSelect(id, options, value) {
    const select = $(id);
    select.replaceChildren(...options.map(([v, label]) => el("option", { value: v, text: label })));
    if (!options.some(([v]) => v === value) && options.length) value = options[0][0];
    select.value = value;
    return value;
  }

  function fillControls() {
    state.model = fillSelect("f-model", M.models.map((m) => [m, m]), state.model);
    state.dataset = fillSelect("f-dataset", Object.keys(M.units[state.model] || {}).sort().map((d) => [d, d]), state.dataset);
    if (!unit) return;
    const ix = unit.index;
    state.context = fillSelect("f-context", [["*", "all contexts"], ...ix.contexts.map((c) => [c, c])], state.context);
    const types = [...new Set(ix.beliefs.map((b) => M.test_types[b]).filter(Boolean))];
    state.belief = fillSelect("f-belief", [["*", "all templates"],
      ...types.map((t) => ["type:" + t, t + " (" + ix.beliefs.filter((b) => M.test_types[b] === t).join(", ") + ")"]),
      ...ix.beliefs.map((b) => [b, M.test_types[b] ? b + " [" + M.test_types[b] + "]" : b])], state.belief);
    const others = ix.personas.filter((p) => p !== "original");
    state.persona = fillSelect("f-persona", (others.length ? others : ix.personas).map((p) => [p, p]), state.persona);
    $("f-discord").value = state.discord;
    $("f-discord").disabled = !ix.personas.includes("original");
    state.verdict = fillSelect("f-verdict", [["", "any"], ...Object.entries(M.verdict_codes).map(([c, v]) => [c, v]),
      [MISSING, "no verdict"]], state.verdict);
    if ($("f-search").value !== state.q) $("f-search").value = state.q;
  }

  function bindControls() {
    const on = (id, key) => $(id).addEventListener("change", () => {
      state[key] = $(id).value; state.page = 0;
      if (key === "model" || key === "dataset") state.sel = -1;
      update();
    });
    [["f-model", "model"], ["f-dataset", "dataset"], ["f-context", "context"], ["f-belief", "belief"],
     ["f-persona", "persona"], ["f-discord", "discord"], ["f-verdict", "verdict"]].forEach(([id, key]) => on(id, key));
    let timer = null;
    $("f-search").addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => { state.q = $("f-search").value; state.page = 0; update(); }, 250);
    });
    $("page-prev").addEventListener("click", () => { if (state.page > 0) { state.page--; update(); } });
    $("page-next").addEventListener("click", () => { if ((state.page + 1) * PAGE < filtered.length) { state.page++; update(); } });
    document.querySelectorAll(".tab").forEach((b) => b.addEventListener("click", () => { state.tab = b.dataset.tab; update(); }));
    document.addEventListener("keydown", (event) => {
      if (["INPUT", "SELECT", "TEXTAREA"].includes(event.target.tagName) || event.ctrlKey || event.metaKey || event.altKey) return;
      if (event.key === "j") step(1);
      if (event.key === "k") step(-1);
    });
    window.addEventListener("hashchange", () => { readHash(); update(); });
  }

  function step(delta) {
    if (!filtered.length) return;
    const at = filtered.indexOf(state.sel);
    const next = filtered[Math.min(filtered.length - 1, Math.max(0, at < 0 ? 0 : at + delta))];
    select(next);
  }

  function select(i) {
    state.sel = i;
    const at = filtered.indexOf(i);
    if (at >= 0) state.page = Math.floor(at / PAGE);
    update();
  }

  // ---- the prompt list
  function badge(code, refusal) {
    const verdict = code === ABSENT ? "no answer" : code === MISSING ? "no verdict" : M.verdict_codes[code] || code;
    const span = el("span", { class: "badge " + (code === ABSENT ? "absent" : code), text: code === ABSENT ? "-" : code,
                              title: verdict + (refusal === "1" ? " (refusal flagged)" : "") });
    return refusal === "1" && code !== "R" ? el("span", {}, span, el("span", { class: "flag", text: "refusal" })) : span;
  }

  function renderList() {
    const ix = unit.index;
    const table = $("prompt-list");
    table.dataset.count = filtered.length;
    table.tHead.replaceChildren(el("tr", {}, el("th", { text: "#" }), el("th", { text: "item" }), el("th", { text: "context" }),
      el("th", { text: "template" }), el("th", { text: "question" }), ...ix.personas.map((p) => el("th", { text: p }))));
    const start = state.page * PAGE;
    const rows = filtered.slice(start, start + PAGE).map((i) => el("tr", {
      class: i === state.sel ? "selected" : "", "data-prompt": i, onclick: () => select(i) },
      el("td", { class: "num", text: String(i) }), el("td", { text: ix.items[ix.item[i]][0] }),
      el("td", { text: ix.contexts[ix.context[i]] }),
      el("td", { text: ix.beliefs[ix.belief[i]] + (ix.repeat[i] ? " #" + (ix.repeat[i] + 1) : "") }),
      el("td", { class: "preview", text: ix.items[ix.item[i]][1], title: ix.items[ix.item[i]][1] }),
      ...ix.personas.map((p, s) => el("td", {}, badge(ix.verdict[i][s], ix.refusal[i][s])))));
    table.tBodies[0].replaceChildren(...rows);
    const shown = filtered.length ? (start + 1) + "-" + Math.min(start + PAGE, filtered.length) : "0";
    $("page-info").textContent = shown + " of " + filtered.length + " prompts (" + ix.item.length + " in " +
      state.model + " / " + state.dataset + ")";
    const selected = table.querySelector("tr.selected");
    if (selected) selected.scrollIntoView({ block: "nearest" });
  }

  // ---- one prompt, every persona side by side
  function field(i, persona, name) {
    const row = promptAt(i).rows[persona] || {};
    if (name in row) return row[name];
    if (name in promptAt(i)) return promptAt(i)[name];
    const item = itemFields(i);
    if (name in item) return item[name];
    return ((((M.provenance[state.model] || {})[state.dataset]) || {})[persona] || {})[name];
  }

  function highlighted(text) {
    const q = state.q.trim();
    const pre = el("pre", { class: "text" });
    if (!q) { pre.textContent = text; return pre; }
    const lower = text.toLowerCase(), needle = q.toLowerCase();
    let at = 0;
    for (let hit = lower.indexOf(needle); hit >= 0; hit = lower.indexOf(needle, at)) {
      pre.append(text.slice(at, hit), el("mark", { text: text.slice(hit, hit + q.length) }));
      at = hit + q.length;
    }
    pre.append(text.slice(at));
    return pre;
  }

  function collapsible(text) {
    const pre = highlighted(text);
    if (text.length <= COLLAPSE_CHARS) return pre;
    pre.classList.add("collapsed", "response-long");
    const toggle = el("button", { class: "linkish toggle", text: "show all (" + text.length + " characters)" });
    toggle.addEventListener("click", () => {
      const collapsed = pre.classList.toggle("collapsed");
      toggle.textContent = collapsed ? "show all (" + text.length + " characters)" : "show less";
    });
    return el("div", {}, pre, toggle);
  }

  function fieldList(entries) {
    const dl = el("dl", { class: "fields" });
    for (const [name, value] of entries) {
      dl.append(el("dt", { text: name }), el("dd", { text: value === null || value === undefined ? "" : String(value) }));
    }
    return dl;
  }

  const SHOWN = new Set(["response", "verdict", "incorrect"]);
  const isReason = (name) => /reason$/.test(name);
  const isRefusalFlag = (name) => /refusal$/.test(name);

  function card(i, persona, slot) {
    const ix = unit.index;
    const code = ix.verdict[i][slot];
    const row = promptAt(i).rows[persona];
    const box = el("article", { class: "card " + code, "data-persona": persona });
    const checkpoint = field(i, persona, "checkpoint"), epoch = field(i, persona, "epoch");
    box.append(el("h3", { text: persona }),
      el("div", { class: "sub", text: [checkpoint, epoch !== undefined && epoch !== null ? "epoch " + formatNumber(epoch) : ""]
        .filter(Boolean).join(" \u00b7 ") }));
    if (!row) { box.append(el("p", { class: "muted", text: "no answer to this prompt" })); return box; }
    const incorrect = row.incorrect;
    const counted = incorrect === 1 ? "counted wrong" : incorrect === 0 ? "counted right" : "excluded from accuracy";
    const flags = Object.entries(row).filter(([n, v]) => isRefusalFlag(n) && v === true)
      .map(([n]) => el("span", { class: "flag", text: n.replace(/_/g, " ") }));
    box.append(el("div", {}, el("span", { class: "badge verdict " + code, text: row.verdict || (code === MISSING ? "no verdict" : M.verdict_codes[code]) }),
      ...flags, el("span", { class: "muted", text: " " + counted })));
    for (const [name, value] of Object.entries(row)) {
      if (isReason(name) && value) box.append(el("div", { class: "reason" }, el("b", { text: name.replace(/_/g, " ") + ": " }), String(value)));
    }
    box.append(collapsible(String(row.response === null || row.response === undefined ? "" : row.response)));
    const rest = Object.entries(row).filter(([n]) => !SHOWN.has(n) && !isReason(n) && !isRefusalFlag(n));
    const prov = Object.entries((((M.provenance[state.model] || {})[state.dataset]) || {})[persona] || {});
    box.append(el("details", {}, el("summary", { text: "provenance and all fields" }), fieldList([...rest, ...prov])));
    return box;
  }

  async function renderDetail(token) {
    const detail = $("detail");
    if (state.sel < 0 || !unit || state.sel >= unit.index.item.length) { detail.replaceChildren(); return; }
    const i = state.sel;
    await loadChunk(unit.index.chunk[i]);
    if (token !== updating) return;
    const ix = unit.index;
    const at = filtered.indexOf(i);
    const belief = ix.beliefs[ix.belief[i]];
    const prompt = promptAt(i);
    const text = prompt.prompt !== undefined ? prompt.prompt : field(i, ix.personas[0], "prompt");
    const item = itemFields(i);
    const head = el("div", { class: "prompt-head" },
      el("h2", { text: "Prompt " + i }), el("span", { text: "item " + ix.items[ix.item[i]][0] }),
      el("span", { text: "context " + ix.contexts[ix.context[i]] }),
      el("span", { text: "template " + belief + (M.test_types[belief] ? " (" + M.test_types[belief] + ")" : "") }),
      el("span", { class: "muted", text: at >= 0 ? (at + 1) + " of " + filtered.length + " listed" : "not in the filtered list" }),
      el("span", { class: "nav" }, el("button", { text: "\u2190 previous", onclick: () => step(-1) }),
        el("button", { text: "next \u2192", onclick: () => step(1) })));
    const answers = ["correct_answer", "incorrect_answer"].filter((n) => n in item).map((n) => [n, item[n]]);
    const otherItem = Object.entries(item).filter(([n]) => !["correct_answer", "incorrect_answer", "question"].includes(n));
    const promptFields = Object.entries(prompt).filter(([n]) => n !== "rows" && n !== "prompt");
    detail.replaceChildren(head,
      el("div", { class: "box" }, el("h3", { text: "prompt" }), highlighted(String(text === undefined || text === null ? "" : text)),
        answers.length ? fieldList(answers) : null,
        el("details", {}, el("summary", { text: "item and condition fields" }),
          fieldList([...("question" in item ? [["question", item.question]] : []), ...otherItem, ...promptFields]))),
      el("div", { class: "cards" }, ...ix.personas.map((p, s) => card(i, p, s))));
  }

  // ---- paired tests, with a jump to each row's discordant pairs
  function formatNumber(value) {
    if (typeof value !== "number") return value === null || value === undefined ? "" : String(value);
    if (Number.isInteger(value)) return String(value);
    return Math.abs(value) > 0 && Math.abs(value) < 1e-3 ? value.toExponential(2) : String(Number(value.toPrecision(3)));
  }

  function jumpToPair(row, kind) {
    Object.assign(state, { model: row.model, dataset: row.dataset, persona: row.persona, context: row.condition,
                           belief: "type:" + row.test_type, discord: kind, verdict: "", q: "", page: 0, tab: "prompts",
                           sel: -2 });  // -2: select the first listed prompt once the list is known
    update();
  }

  function renderPaired() {
    const columns = M.paired.columns;
    const rows = M.paired.rows.filter((r) => r.model === state.model);
    const table = $("paired-list");
    table.tHead.replaceChildren(el("tr", {}, ...columns.map((c) => el("th", { text: c }))));
    table.tBodies[0].replaceChildren(...rows.map((r) => el("tr", { "data-persona": r.persona, "data-dataset": r.dataset,
                                                                    "data-test-type": r.test_type, "data-condition": r.condition },
      ...columns.map((c) => {
        if ((c === "b" || c === "c") && r[c] > 0 && M.units[r.model] && M.units[r.model][r.dataset]) {
          return el("td", { class: "num" }, el("button", { class: "linkish pair-" + c, text: String(r[c]),
            title: c === "b" ? "original right, persona wrong" : "persona right, original wrong", onclick: () => jumpToPair(r, c) }));
        }
        return el("td", { class: typeof r[c] === "number" ? "num" : "", text: formatNumber(r[c]) });
      }))));
  }

  // ---- provenance
  function renderProvenance() {
    $("prov-title").textContent = state.model + " / " + state.dataset;
    const prov = ((M.provenance[state.model] || {})[state.dataset]) || {};
    const personas = Object.keys(prov);
    const names = [...new Set(personas.flatMap((p) => Object.keys(prov[p])))];
    const table = $("prov-list");
    table.tHead.replaceChildren(el("tr", {}, el("th", { text: "field" }), ...personas.map((p) => el("th", { text: p }))));
    table.tBodies[0].replaceChildren(...names.map((n) => el("tr", {}, el("td", { text: n }),
      ...personas.map((p) => el("td", { text: formatNumber(prov[p][n]) })))));
    const checkpoints = $("checkpoint-list");
    const columns = M.checkpoints.length ? Object.keys(M.checkpoints[0]) : [];
    checkpoints.tHead.replaceChildren(el("tr", {}, ...columns.map((c) => el("th", { text: c }))));
    checkpoints.tBodies[0].replaceChildren(...M.checkpoints.map((r) => el("tr", {},
      ...columns.map((c) => el("td", { text: formatNumber(r[c]) })))));
  }

  function renderTabs() {
    for (const name of ["prompts", "paired", "provenance"]) $("tab-" + name).hidden = state.tab !== name;
    document.querySelectorAll(".tab").forEach((b) => b.classList.toggle("active", b.dataset.tab === state.tab));
  }

  async function update() {
    const token = ++updating;
    const started = performance.now();
    if (!M.units[state.model]) state.model = M.models[0] || "";
    if (!(M.units[state.model] || {})[state.dataset]) state.dataset = Object.keys(M.units[state.model] || {}).sort()[0] || "";
    renderTabs();
    try {
      await openUnit(token);
      if (token !== updating) return;
      fillControls();
      if (!unit) { setStatus("no answers in this table"); return; }
      if (state.q.trim()) await loadAll(token);
      if (token !== updating) return;
      refilter();
      if (state.sel === -2) state.sel = filtered.length ? filtered[0] : -1;
      renderList();
      await renderDetail(token);
      if (token !== updating) return;
      renderPaired();
      renderProvenance();
      setStatus(filtered.length + " of " + unit.index.item.length + " prompts match");
      writeHash();
      WB.lastUpdateMs = performance.now() - started;  // read by `warmbench bench explorer`
    } catch (error) {
      setStatus(error.message, true);
    }
  }

  $("summary").textContent = M.n_rows.toLocaleString("en") + " responses \u00b7 models: " + M.models.join(", ") +
    " \u00b7 datasets: " + M.datasets.join(", ") + " \u00b7 personas: " + M.personas.join(", ");
  readHash();
  bindControls();
  update();
})();
