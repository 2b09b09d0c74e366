// gencraft studio: plain JavaScript against the server's own API (no build step).
"use strict";

const $ = (id) => document.getElementById(id);
const keyInput = $("api-key");
keyInput.value = localStorage.getItem("gencraft.key") || "";
keyInput.addEventListener("change", () => { localStorage.setItem("gencraft.key", keyInput.value.trim()); loadModels(); });

function authHeaders() {
  const key = keyInput.value.trim();
  return key ? { "Authorization": "Bearer " + key } : {};
}

function headers() {
  return { "Content-Type": "application/json", ...authHeaders() };
}

function status(text, error = false) {
  const s = $("status");
  s.textContent = text;
  s.className = error ? "error" : "";
}

async function api(method, path, body) {
  const r = await fetch(path, { method, headers: headers(), body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    const msg = (data.error && data.error.message) || r.statusText;
    status(msg, true);
    throw new Error(msg);
  }
  return data;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function seedOf(id) { const v = $(id).value; return v === "" ? undefined : Number(v); }
function anySeed() { return Math.floor(Math.random() * 2 ** 31); }

// ---- tabs: one <section id="tab-NAME" class="panel" data-title="Title"> in <main> each, in order; the
// nav is built from them. A tab's script (static/tabs/NAME.js) calls studio.onShow(NAME, fn) to refresh
// when it is shown. docs/architecture.md ("The web studio") has the recipe for a new tab.

const showHooks = {};
function onShow(name, fn) { (showHooks[name] = showHooks[name] || []).push(fn); }

function showTab(name) {
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.tab === name));
  document.querySelectorAll(".panel").forEach((p) => p.classList.toggle("active", p.id === "tab-" + name));
  for (const fn of showHooks[name] || []) fn();
}

for (const p of document.querySelectorAll("main > section.panel")) {
  const name = p.id.replace(/^tab-/, "");
  const b = el("button", { class: "tab" + (p.classList.contains("active") ? " active" : ""), "data-tab": name },
               p.dataset.title || name);
  b.addEventListener("click", () => showTab(name));
  $("tabs").append(b);
}
onShow("library", () => searchLibrary());

// ---- models

async function loadModels() {
  try {
    const data = await api("GET", "/v1/models");
    const text = $("text-model"), image = $("image-model");
    text.replaceChildren(); image.replaceChildren();
    for (const m of data.data) {
      const caps = m.capabilities || [];
      if (caps.includes("completions")) text.append(el("option", { value: m.id }, `${m.id} (${m.kind})`));
      if (caps.includes("images")) image.append(el("option", { value: m.id }, `${m.id} (${m.kind})`));
    }
    status(`${data.data.length} models`);
  } catch (e) { /* status shows it */ }
}

// ---- server-sent events over fetch (so the API key header can be sent)

async function streamSSE(path, body, onEvent, signal) {
  const r = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
  if (!r.ok) {
    const data = await r.json().catch(() => ({}));
    throw new Error((data.error && data.error.message) || r.statusText);
  }
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, i); buf = buf.slice(i + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const payload = line.slice(6);
        if (payload === "[DONE]") return;
        onEvent(JSON.parse(payload));
      }
    }
  }
}

// ---- a job's events (GET .../events, server-sent): replayed from the start, then followed live;
// reconnects where it stopped. Resolves with the job once it has ended.

async function followJob(id, onEvent, signal) {
  let after = -1, failures = 0;
  for (;;) {
    try {
      const r = await fetch(`/v1/gencraft/jobs/${encodeURIComponent(id)}/events?after=${after}`, { headers: authHeaders(), signal });
      if (!r.ok) {
        const data = await r.json().catch(() => ({}));
        throw Object.assign(new Error((data.error && data.error.message) || r.statusText), { fatal: r.status < 500 });
      }
      const reader = r.body.getReader(), dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i); buf = buf.slice(i + 2);
          for (const line of block.split("\n")) {
            if (line.startsWith("id: ")) after = Number(line.slice(4));
            else if (line.startsWith("data: ")) {
              const payload = line.slice(6);
              if (payload === "[DONE]") return await api("GET", `/v1/gencraft/jobs/${encodeURIComponent(id)}`);
              onEvent(JSON.parse(payload));
            }
          }
        }
      }
      failures = 0;
    } catch (e) {
      if (e.name === "AbortError" || e.fatal || ++failures > 20) throw e;
    }
    await new Promise((ok) => setTimeout(ok, 1000));
  }
}

// A run's picture (curves.png, a sample grid) as an object URL: fetched with the API key.
const pictures = {};
async function runPicture(run, path) {
  const key = `${run}/${path}`;
  if (!pictures[key]) {
    pictures[key] = fetch(`/v1/gencraft/runs/${encodeURIComponent(run)}/files/${path}`, { headers: authHeaders() })
      .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(r.statusText)))).then((b) => URL.createObjectURL(b));
  }
  return pictures[key];
}

// ---- write

let writeAbort = null;
$("write-go").addEventListener("click", async () => {
  const draft = $("draft");
  const body = { model: $("text-model").value, text: draft.value, memory: $("memory").value, note: $("note").value,
                 tokens: Number($("write-tokens").value), temperature: Number($("write-temp").value),
                 seed: seedOf("write-seed"), stream: true };
  writeAbort = new AbortController();
  $("write-go").disabled = true; $("write-stop").disabled = false;
  status("writing...");
  try {
    await streamSSE("/v1/gencraft/write", body, (ev) => {
      if (ev.error) throw new Error(ev.error.message);
      if (ev.delta) draft.value += ev.delta;
      if (ev.done) {
        draft.value = ev.text;
        $("write-item").textContent = `saved to the library as item ${ev.id} · moderation: ${guardSummary(ev.guard)}`;
      }
    }, writeAbort.signal);
    status("done");
  } catch (e) {
    status(e.name === "AbortError" ? "stopped" : e.message, e.name !== "AbortError");
  } finally {
    $("write-go").disabled = false; $("write-stop").disabled = true;
  }
});
$("write-stop").addEventListener("click", () => writeAbort && writeAbort.abort());

function guardSummary(g) {
  if (!g) return "none";
  const m = g.moderation || {};
  return m.action || g.action || "recorded";
}

// ---- a kit's batch as a job (kits.write|game|ads): progress while it runs, then its files to download.
// Every piece is also in the Library tab (released one by one, like the buttons above).

async function batchJob(kind, params, box) {
  box.replaceChildren(el("span", {}, "queued..."));
  try {
    const job = await api("POST", "/v1/gencraft/jobs", { kind, params: { model: $("text-model").value, ...params } });
    box.dataset.job = job.id;
    const end = await followJob(job.id, (ev) => {
      if (ev.type === "progress") {
        const eta = ev.eta_s != null ? `, ${Math.round(ev.eta_s)} s left` : "";
        box.firstChild.textContent = `job ${job.id}: ${ev.step}/${ev.total}` + (ev.rate ? ` (${ev.rate} ${ev.unit}${eta})` : "");
      }
    });
    box.dataset.state = end.state;
    if (end.state !== "succeeded") { box.firstChild.textContent = `job ${job.id}: ${end.state} (${end.error || ""})`; return; }
    const files = (end.result.files || []).map((f) => {
      const a = el("a", { download: f, class: "batch-file" }, f);
      fetch(`/v1/gencraft/jobs/${encodeURIComponent(job.id)}/files/${encodeURIComponent(f)}`, { headers: authHeaders() })
        .then((r) => r.blob()).then((b) => { a.href = URL.createObjectURL(b); });
      return a;
    });
    box.replaceChildren(el("span", {}, `job ${job.id}: ${(end.result.library_ids || []).length} stored in the library · `), ...files);
  } catch (e) { box.firstChild.textContent = e.message; box.dataset.state = "failed"; }
}

$("write-batch").addEventListener("click", () => batchJob("kits.write", {
  titles: $("write-titles").value.split("\n").map((t) => t.trim()).filter(Boolean), kind: $("write-kind").value,
  memory: $("memory").value, note: $("note").value, temperature: Number($("write-temp").value),
  seed: seedOf("write-seed") ?? anySeed() }, $("write-batch-out")));

// ---- game

$("game-go").addEventListener("click", async () => {
  const kind = $("game-kind").value;
  status("generating " + kind + "...");
  const out = $("game-out");
  out.replaceChildren();
  try {
    const data = await api("POST", "/v1/gencraft/game/" + kind,
                           { model: $("text-model").value, n: Number($("game-n").value), seed: seedOf("game-seed") });
    for (const r of data.data) {
      const v = r.validation;
      out.append(el("div", { class: "card game-record" },
        el("div", {}, el("span", { class: v.valid ? "ok" : "bad" }, v.valid ? "✓ valid " + v.schema : "✗ invalid"),
           ` · item ${r.id}`, v.notes && v.notes.length ? " · " + v.notes.join("; ") : ""),
        el("pre", {}, JSON.stringify(r.record, null, 2))));
    }
    status(`${data.data.length} ${kind} records`);
  } catch (e) { /* shown */ }
});

$("game-batch").addEventListener("click", () => batchJob("kits.game", {
  record: $("game-kind").value, n: Number($("game-batch-n").value), seed: seedOf("game-seed") ?? anySeed(),
  format: $("game-batch-format").value }, $("game-batch-out")));

// ---- ads

$("ads-go").addEventListener("click", async () => {
  const out = $("ads-out");
  out.replaceChildren();
  status("writing ads...");
  const brief = { product: $("ads-product").value, channel: $("ads-channel").value,
                  features: $("ads-features").value.split(",").map((s) => s.trim()).filter(Boolean) };
  try {
    const data = await api("POST", "/v1/gencraft/ads", { model: $("text-model").value, brief, n: Number($("ads-n").value) });
    for (const d of data.data) {
      const v = d.variant, c = d.validation;
      out.append(el("div", { class: "card ad-variant" },
        el("strong", {}, v.headline), el("div", {}, v.description), el("div", {}, el("em", {}, v.cta)),
        el("div", { class: "meta" }, el("span", { class: c.valid ? "ok" : "bad" }, c.valid ? "✓ fits " + v.channel : "✗"),
           ` headline ${c.headline} · description ${c.description} · cta ${c.cta} · preference ${d.preference}`),
        rater(d.id, 0, "")));
    }
    status(`${data.data.length} variants`);
  } catch (e) { /* shown */ }
});

$("ads-batch").addEventListener("click", () => batchJob("kits.ads", {
  product: $("ads-product").value, channel: $("ads-channel").value, n: Number($("ads-batch-n").value), seed: anySeed(),
  features: $("ads-features").value.split(",").map((s) => s.trim()).filter(Boolean) }, $("ads-batch-out")));

// ---- images

$("img-go").addEventListener("click", async () => {
  const out = $("img-out");
  out.replaceChildren();
  status("drawing...");
  try {
    const data = await api("POST", "/v1/images/generations", {
      model: $("image-model").value, prompt: $("img-prompt").value, n: Number($("img-n").value),
      size: $("img-size").value || undefined, seed: seedOf("img-seed"), response_format: "b64_json" });
    for (const d of data.data) {
      out.append(el("img", { src: "data:image/png;base64," + d.b64_json, alt: "item " + d.gencraft_id, class: "generated" }));
    }
    status(`${data.data.length} images`);
  } catch (e) { /* shown */ }
});

// ---- library

function rater(id, rating, note) {
  const box = el("div", { class: "rate" });
  const noteInput = el("input", { placeholder: "note", value: note || "", size: "16" });
  const send = async (r) => {
    const res = await api("POST", `/v1/gencraft/library/${id}/rating`, { rating: r, note: noteInput.value });
    up.classList.toggle("on", res.rating === 1); down.classList.toggle("on", res.rating === -1);
    status(`rated item ${id}`);
  };
  const up = el("button", { class: "ghost up" + (rating === 1 ? " on" : ""), title: "thumbs up", onclick: () => send(1) }, "▲ up");
  const down = el("button", { class: "ghost down" + (rating === -1 ? " on" : ""), title: "thumbs down", onclick: () => send(-1) }, "▼ down");
  box.append(up, down, noteInput);
  return box;
}

// a stored output by its media type: pictures shown, speech played, other files (MIDI) downloaded. The
// listing has no bytes: each item's content is fetched (with the key) once its card scrolls into view.
function libMedia(it) {
  const type = it.media_type || "image/png";
  const said = el("pre", {}, (it.prompt || "").slice(0, 400));
  let box, fill;
  if (type.startsWith("image/")) {
    box = el("img", { alt: "item " + it.id, class: "lib-content" });
    fill = (url) => { box.src = url; };
  } else if (["audio/wav", "audio/flac", "audio/ogg"].includes(type)) {
    const player = el("audio", { controls: "", preload: "metadata", class: "lib-content" });
    box = el("div", { class: "media" }, player, said);
    fill = (url) => { player.src = url; };
  } else {
    const link = el("a", { download: `item-${it.id}`, class: "lib-content" }, `download (${type}, ${it.content_bytes} bytes)`);
    box = el("div", { class: "media" }, link, said);
    fill = (url) => { link.href = url; };
  }
  box.dataset.contentUrl = it.content_url;
  libContent.pending.set(box, fill);
  libContent.observer ? libContent.observer.observe(box) : libContent.load(box);
  return box;
}

const libContent = {
  pending: new Map(),  // element -> how to show its content's object URL
  urls: [],  // object URLs of the shown listing (released when it is replaced)
  async load(box) {
    const fill = this.pending.get(box);
    if (!fill) return;
    this.pending.delete(box);
    if (this.observer) this.observer.unobserve(box);
    try {
      const r = await fetch(box.dataset.contentUrl, { headers: authHeaders() });
      if (!r.ok) throw new Error(r.statusText);
      const url = URL.createObjectURL(await r.blob());
      this.urls.push(url);
      fill(url);
    } catch (e) { status(`item content: ${e.message}`, true); }
  },
  reset() {
    for (const u of this.urls) URL.revokeObjectURL(u);
    this.urls = [];
    this.pending.clear();
    if (this.observer) this.observer.disconnect();
  },
};
if ("IntersectionObserver" in window) {
  libContent.observer = new IntersectionObserver((entries) => {
    for (const e of entries) if (e.isIntersecting) libContent.load(e.target);
  }, { rootMargin: "200px" });
}

async function searchLibrary() {
  const params = new URLSearchParams();
  const q = $("lib-q").value.trim(), kind = $("lib-kind").value, model = $("lib-model").value.trim(), since = $("lib-since").value;
  if (q) params.set("q", q);
  if (kind) params.set("kind", kind);
  if (model) params.set("model", model);
  if (since) params.set("since", since);
  try {
    const data = await api("GET", "/v1/gencraft/library?" + params);
    $("lib-count").textContent = `${data.total} items`;
    const out = $("lib-out");
    out.replaceChildren();
    libContent.reset();
    for (const it of data.data) {
      const body = it.content_url ? libMedia(it) : el("pre", {}, (it.text || "").slice(0, 400));
      const card = el("div", { class: "card lib-item", "data-id": it.id },
        el("div", { class: "meta" }, `#${it.id} · ${it.kind} · ${it.model} · ${new Date(it.created).toLocaleString()}`),
        body, rater(it.id, it.rating, it.note));
      card.addEventListener("click", (e) => { if (!["BUTTON", "INPUT", "AUDIO", "A"].includes(e.target.tagName)) showItem(it, card); });
      out.append(card);
    }
  } catch (e) { /* shown */ }
}
$("lib-go").addEventListener("click", searchLibrary);
$("lib-q").addEventListener("keydown", (e) => { if (e.key === "Enter") searchLibrary(); });

function showItem(it, card) {
  document.querySelectorAll(".lib-item").forEach((c) => c.classList.toggle("selected", c === card));
  const m = it.manifest || {};
  const signed = m.signature ? `signed (${m.signature.alg}, key ${m.signature.key_id})` : "unsigned";
  $("lib-detail").replaceChildren(
    el("h3", {}, `Item ${it.id}`),
    el("div", { class: "meta" }, `prompt: ${it.prompt || "(none)"}`),
    el("h4", {}, "Provenance"),
    el("div", { class: "meta provenance" }, `${m.generator || "?"} · run ${m.run_id || "?"} · ${signed} · sha256 ${(m.content_sha256 || "").slice(0, 16)}…`),
    el("pre", {}, JSON.stringify(m, null, 2)),
    el("h4", {}, "Guard results"),
    el("pre", { class: "guard" }, JSON.stringify(it.guard, null, 2)),
    el("h4", {}, "Parameters"),
    el("pre", {}, JSON.stringify(it.parameters, null, 2)));
}

// ---- learn from my ratings: a tune job (a DPO adapter NAME+prefs), then samples before/after side by side

async function fillLearnRuns() {
  try {
    const data = await api("GET", "/v1/models");
    const sel = $("learn-run");
    sel.replaceChildren();
    for (const m of data.data) {
      if (["gpt", "lstm", "hf"].includes(m.kind) && !m.id.startsWith("hf:") && !m.id.endsWith("+prefs")) {
        sel.append(el("option", { value: m.id }, m.id));
      }
    }
  } catch (e) { /* shown */ }
}

function showComparison(samples) {
  const body = $("learn-compare").querySelector("tbody");
  body.replaceChildren(...samples.map((s) => el("tr", {}, el("td", {}, s.prompt || "(start)"),
    el("td", { class: "before" }, s.before), el("td", { class: "after" }, s.after))));
  $("learn-compare").hidden = false;
}

$("learn-go").addEventListener("click", async () => {
  const run = $("learn-run").value, kind = $("lib-kind").value;
  if (!run) { status("no model to personalize: train one first", true); return; }
  $("learn-go").disabled = true;
  try {
    let job = await api("POST", "/v1/gencraft/jobs", { kind: "tune", params: { run, kind: kind && kind !== "image" ? kind : null } });
    while (job.state === "queued" || job.state === "running") {
      const p = job.progress || {};
      $("learn-status").textContent = job.state === "queued" ? "queued" :
        `learning: step ${p.step ?? 0}${p.total ? " of " + p.total : ""}${p.loss != null ? ", pair loss " + Number(p.loss).toFixed(3) : ""}`;
      await new Promise((r) => setTimeout(r, 1000));
      job = await api("GET", `/v1/gencraft/jobs/${job.id}`);
    }
    if (job.state !== "succeeded") { status(job.error || `tune ${job.state}`, true); $("learn-status").textContent = job.state; return; }
    $("learn-status").textContent = `${job.result.run} is ready: use it as the model (before = ${run}, after = ${job.result.run})`;
    showComparison(job.result.samples || []);
    loadModels();
  } catch (e) { /* shown */ } finally { $("learn-go").disabled = false; }
});

window.studio = Object.assign(window.studio || {}, {
  $, api, el, status, headers, authHeaders, streamSSE, followJob, runPicture, onShow, showTab, loadModels });

loadModels();
fillLearnRuns();
