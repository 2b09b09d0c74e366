// The Train tab: pick a dataset, family and preset, start a training job; watch it live (loss chart,
// FID-proxy for image runs, text samples at each evaluation, the sample grid over time); stop, resume.
"use strict";
(function () {
  const { $, api, el, status, onShow, followJob, lineChart, runPicture } = window.studio;
  const FAMILIES = { text: ["gpt", "lstm", "text_vae"], music: ["gpt", "lstm"], images: ["dcgan", "stylegan", "vae"],
                     speech: ["tts"] };
  let datasets = [];
  let watching = null;  // {id, abort, series: {name: [[x, y]]}}
  let poller = null;

  async function loadDatasets() {
    datasets = (await api("GET", "/v1/gencraft/datasets")).data;
    const sel = $("train-dataset"), keep = sel.value;
    sel.replaceChildren(...datasets.map((d) => el("option", { value: d.name }, `${d.name} (${d.kind})`)));
    if (datasets.some((d) => d.name === keep)) sel.value = keep;
    families();
  }

  function kindOf(name) { const d = datasets.find((x) => x.name === name); return d ? d.kind : "text"; }

  function families() {
    const kind = kindOf($("train-dataset").value), fam = $("train-family"), keep = fam.value;
    fam.replaceChildren(...FAMILIES[kind].map((f) => el("option", { value: f }, f)));
    if (FAMILIES[kind].includes(keep)) fam.value = keep;
    $("train-steps").placeholder = kind === "images" ? "preset default" : "preset default";
  }
  $("train-dataset").addEventListener("change", families);

  function overrides() {
    const out = {};
    for (const line of $("train-set").value.split(/[\n,]/)) {
      const s = line.trim();
      if (!s) continue;
      const i = s.indexOf("=");
      if (i < 1) throw new Error(`settings: '${s}' is not key=value`);
      const v = s.slice(i + 1).trim();
      out[s.slice(0, i).trim()] = v !== "" && !isNaN(Number(v)) ? Number(v) : v;
    }
    return out;
  }

  $("train-go").addEventListener("click", async () => {
    const dataset = $("train-dataset").value, image = kindOf(dataset) === "images";
    let set;
    try { set = overrides(); } catch (e) { status(e.message, true); return; }
    const params = { dataset, model: $("train-family").value, preset: $("train-preset").value, set };
    const steps = $("train-steps").value, maxTime = $("train-time").value, out = $("train-out").value.trim();
    if (steps) { if (image) params.steps = Number(steps); else set.max_iters = Number(steps); }
    if (maxTime) params.max_time = Number(maxTime);
    if (out) params.out = out;
    try {
      const job = await api("POST", "/v1/gencraft/jobs", { kind: image ? "train.image" : "train", params });
      status(`job ${job.id} ${job.state}: training ${job.run}`);
      await listJobs();
      watch(job.id);
    } catch (e) { /* shown */ }
  });

  // ---- the jobs list

  function progressText(j) {
    const p = j.progress;
    if (!p) return j.state === "queued" ? `queued (#${j.queue_position})` : "";
    let s = `step ${p.step}/${p.total}`;
    if (typeof p.loss === "number") s += ` · loss ${p.loss.toFixed(4)}`;
    if (typeof p.rate === "number") s += ` · ${Math.round(p.rate).toLocaleString()} ${p.unit}`;
    if (j.state === "running" && p.eta_s != null) s += ` · ETA ${Math.floor(p.eta_s / 60)}m${String(Math.round(p.eta_s % 60)).padStart(2, "0")}s`;
    return s;
  }

  async function listJobs() {
    const jobs = (await api("GET", "/v1/gencraft/jobs")).data;
    const body = $("train-jobs");
    body.replaceChildren();
    for (const j of jobs.slice(0, 30)) {
      const bar = el("progress", { max: j.progress ? j.progress.total : 1, value: j.progress ? j.progress.step : 0 });
      const tr = el("tr", { "data-id": j.id, class: watching && watching.id === j.id ? "selected" : "" },
        el("td", {}, j.id), el("td", {}, j.kind), el("td", { class: "state-" + j.state }, j.state_detail || j.state),
        el("td", {}, j.run || j.dataset || ""), el("td", {}, bar, " ", progressText(j)),
        el("td", { class: "meta" }, j.error || ""));
      tr.addEventListener("click", () => watch(j.id));
      body.append(tr);
    }
    if (watching) buttons(jobs.find((j) => j.id === watching.id));
    return jobs;
  }

  function buttons(job) {
    $("train-stop").disabled = !job || !["queued", "running"].includes(job.state);
    $("train-resume").disabled = !job || !job.resumable;
  }

  $("train-stop").addEventListener("click", async () => {
    if (!watching) return;
    const j = await api("DELETE", `/v1/gencraft/jobs/${watching.id}`);
    status(`job ${j.id}: ${j.state_detail || j.state}`);
    listJobs();
  });
  $("train-resume").addEventListener("click", async () => {
    if (!watching) return;
    const j = await api("POST", `/v1/gencraft/jobs/${watching.id}/resume`);
    status(`job ${j.id} queued again (attempt ${j.attempt})`);
    await listJobs();
    watch(j.id);
  });

  // ---- watching one job: its events, replayed from the start and followed live

  function addPoint(series, name, step, value) {
    const pts = series[name] || (series[name] = []);
    while (pts.length && pts[pts.length - 1][0] >= step) pts.pop();  // a resume replaces what came after its checkpoint
    pts.push([step, value]);
  }

  let drawPending = false;
  function draw() {
    if (drawPending || !watching) return;
    drawPending = true;
    requestAnimationFrame(() => {
      drawPending = false;
      const s = watching.series;
      const loss = Object.keys(s).filter((k) => k !== "FID-proxy").map((k) => ({ name: k, points: s[k], dots: !k.startsWith("train") }));
      lineChart($("train-chart"), loss, { title: "loss", yLabel: "loss" });
      const fid = $("train-fid");
      fid.hidden = !s["FID-proxy"];
      if (s["FID-proxy"]) lineChart(fid, [{ name: "FID-proxy (held-out)", points: s["FID-proxy"], dots: true, color: "#d62728" }], { title: "FID-proxy" });
    });
  }

  async function watch(id) {
    if (watching) watching.abort.abort();
    watching = { id, abort: new AbortController(), series: {}, run: null };
    const me = watching;
    document.querySelectorAll("#train-jobs tr").forEach((tr) => tr.classList.toggle("selected", tr.dataset.id === id));
    $("train-watch").hidden = false;
    $("train-title").textContent = `job ${id}`;
    $("train-progress").textContent = "";
    $("train-samples").replaceChildren();
    $("train-grids").replaceChildren();
    $("train-log").replaceChildren();
    draw();
    try {
      const end = await followJob(id, (ev) => {
        if (me !== watching) return;
        if (ev.type === "run") { me.run = ev.name; $("train-title").textContent = `job ${id} · run ${ev.name}`; }
        else if (ev.type === "metrics") {
          const r = ev.record;
          for (const k of ["loss", "loss_d", "loss_g"]) {
            if (typeof r[k] === "number") addPoint(me.series, `${r.split} ${k}`, r.step, r[k]);
          }
          if (typeof r.fid === "number") addPoint(me.series, "FID-proxy", r.step, r.fid);
          draw();
        } else if (ev.type === "progress") {
          $("train-progress").textContent = progressText({ state: "running", progress: ev });
        } else if (ev.type === "sample" && ev.music && me.run) {
          // music runs: a piano roll to look at and the synthesized sample to hear; the events on request
          const pieces = ev.music.map((m, i) => {
            const img = el("img", { alt: `piano roll, step ${ev.step}`, class: "roll" });
            const audio = el("audio", { controls: "", preload: "none" });
            runPicture(me.run, m.roll).then((url) => { img.src = url; });
            if (m.audio) runPicture(me.run, m.audio).then((url) => { audio.src = url; }); else audio.hidden = true;
            return el("figure", { class: "music" }, img, audio, el("figcaption", { class: "meta" }, m.summary),
                      el("details", {}, el("summary", {}, "events"), el("pre", {}, ev.texts[i] || "(empty)")));
          });
          $("train-samples").prepend(el("div", { class: "card sample" }, el("div", { class: "meta" }, `step ${ev.step}`), ...pieces));
        } else if (ev.type === "sample" && ev.texts) {
          $("train-samples").prepend(el("div", { class: "card sample" }, el("div", { class: "meta" }, `step ${ev.step}`),
                                        ...ev.texts.map((t) => el("pre", {}, t || "(empty)"))));
        } else if (ev.type === "sample" && ev.image && me.run) {
          const img = el("img", { alt: `samples at step ${ev.step}`, title: `step ${ev.step}`, class: "grid-shot" });
          runPicture(me.run, ev.image).then((url) => { img.src = url; });
          $("train-grids").prepend(el("figure", {}, img, el("figcaption", { class: "meta" }, `step ${ev.step}`)));
        } else if (ev.type === "log") {
          $("train-log").append(el("div", {}, ev.text));
        } else if (ev.type === "state") {
          $("train-progress").dataset.state = ev.state;
          if (ev.error && ["failed", "cancelled", "interrupted"].includes(ev.state)) $("train-log").append(el("div", { class: "bad" }, `${ev.state}: ${ev.error}`));
          listJobs().catch(() => {});
        }
      }, me.abort.signal);
      if (me === watching) {
        status(`job ${id}: ${end.state}${end.error ? " (" + end.error + ")" : ""}`, end.state === "failed");
        if (end.state === "succeeded") studio.loadModels();
      }
    } catch (e) {
      if (e.name !== "AbortError") status(e.message, true);
    }
  }

  onShow("train", async () => {
    await loadDatasets().catch(() => {});
    const jobs = await listJobs().catch(() => []);
    if (!watching) {
      const live = jobs.find((j) => j.state === "running" && j.slot === "train");
      if (live) watch(live.id);
    }
    clearInterval(poller);
    poller = setInterval(() => { if ($("tab-train").classList.contains("active")) listJobs().catch(() => {}); }, 2000);
  });
})();
