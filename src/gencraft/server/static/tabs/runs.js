// The Runs tab: every run with its figures, model card and pictures; select two or more to overlay
// their curves and to compare their samples on the same prompt and seed (through the server's
// generation endpoints, so every sample passes the release step like any other output).
"use strict";
(function () {
  const { $, api, el, status, onShow, lineChart, runPicture, COLORS } = window.studio;
  let runs = [];

  const fmt = (v, d = 4) => v == null ? "–" : typeof v === "number" ? +v.toPrecision(d) : v;

  async function listRuns() {
    runs = (await api("GET", "/v1/gencraft/runs")).data;
    const checked = new Set([...document.querySelectorAll(".run-pick:checked")].map((c) => c.value));
    const body = $("runs-list");
    body.replaceChildren();
    for (const r of runs) {
      const pick = el("input", { type: "checkbox", class: "run-pick", value: r.name });
      pick.checked = checked.has(r.name);
      pick.addEventListener("change", picked);
      const name = el("a", { href: "#", class: "run-name" }, r.name);
      name.addEventListener("click", (e) => { e.preventDefault(); showRun(r.name); });
      body.append(el("tr", { "data-name": r.name }, el("td", {}, pick), el("td", {}, name), el("td", {}, r.kind),
        el("td", {}, r.dataset || ""), el("td", {}, fmt(r.step)),
        el("td", {}, r.best == null ? "–" : `${fmt(r.best)} ${r.best_metric === "fid" ? "FID-proxy" : "val loss"}`),
        el("td", {}, fmt(r.val_bpc)), el("td", {}, fmt(r.train_time_s, 3)),
        el("td", {}, r.params ? r.params.toLocaleString() : "–"), el("td", {}, (r.size_bytes / 1e6).toFixed(2) + " MB"),
        el("td", { class: "meta" }, runNote(r))));
    }
    picked();
  }

  // where a run stands (runs.run_status): training, stopped, interrupted (killed) or failed, with its last checkpoint
  function runNote(r) {
    const st = r.status || { state: "finished" };
    const at = st.checkpoint_step != null ? ` at step ${st.checkpoint_step}` : ", no checkpoint yet";
    if (st.state !== "finished") return st.state + at;
    return r.complete ? (r.stopped || "") : (r.resumable ? "resumable" : "incomplete");
  }

  function selected() { return [...document.querySelectorAll(".run-pick:checked")].map((c) => c.value); }
  function picked() {
    const n = selected().length;
    $("runs-compare").disabled = n < 2;
    $("runs-sample").disabled = n < 1;
  }

  async function showRun(name) {
    document.querySelectorAll("#runs-list tr").forEach((tr) => tr.classList.toggle("selected", tr.dataset.name === name));
    const r = await api("GET", `/v1/gencraft/runs/${encodeURIComponent(name)}`);
    const parts = [el("h3", {}, `${r.name} (${r.kind})`)];
    const pics = el("div", { class: "pictures" });
    if (r.curves) {
      const img = el("img", { alt: `loss curves of ${r.name}`, class: "curves" });
      runPicture(r.name, "curves.png").then((u) => { img.src = u; });
      pics.append(img);
    }
    if (r.sample_grid) {
      const img = el("img", { alt: `last sample grid of ${r.name}`, class: "grid-shot" });
      runPicture(r.name, r.sample_grid).then((u) => { img.src = u; });
      pics.append(img);
    }
    parts.push(pics, el("h4", {}, "Model card"), el("pre", { class: "model-card" }, r.model_card || "(no model card yet)"));
    $("runs-detail").replaceChildren(...parts);
  }

  $("runs-compare").addEventListener("click", async () => {
    const names = selected();
    const metrics = await Promise.all(names.map((n) => api("GET", `/v1/gencraft/runs/${encodeURIComponent(n)}/metrics`)));
    const loss = [], fid = [];
    names.forEach((n, i) => {
      const color = COLORS[i % COLORS.length], recs = metrics[i].data;
      const pts = (split, key) => recs.filter((r) => r.split === split && typeof r[key] === "number").map((r) => [r.step, r[key]]);
      const val = pts("val", "loss").concat(pts("heldout", "loss"));
      const train = pts("train", "loss");
      if (train.length) loss.push({ name: `${n} train`, points: train, color });
      if (val.length) loss.push({ name: `${n} val`, points: val, color, dots: true });
      const f = pts("heldout", "fid");
      if (f.length) fid.push({ name: n, points: f, color, dots: true });
    });
    $("runs-overlay").hidden = false;
    lineChart($("runs-chart"), loss, { title: "loss (thin: train, dots: validation)", yLabel: "loss" });
    $("runs-fid").hidden = !fid.length;
    if (fid.length) lineChart($("runs-fid"), fid, { title: "FID-proxy (lower is better)" });
    status(`compared ${names.length} runs`);
  });

  $("runs-sample").addEventListener("click", async () => {
    const names = selected(), prompt = $("runs-prompt").value, seed = Number($("runs-seed").value || 0);
    const tokens = Number($("runs-tokens").value || 60);
    const out = $("runs-samples");
    out.replaceChildren();
    status("sampling…");
    await Promise.all(names.map(async (name) => {
      const r = runs.find((x) => x.name === name);
      const col = el("div", { class: "card compare-col", "data-run": name }, el("strong", {}, name),
                     el("div", { class: "meta" }, `${r.kind} · seed ${seed}`));
      out.append(col);
      try {
        if (["vae", "dcgan", "stylegan"].includes(r.kind)) {
          const data = await api("POST", "/v1/images/generations", { model: name, prompt, n: 4, seed, response_format: "b64_json" });
          col.append(el("div", { class: "grid" }, ...data.data.map((d) => el("img", { src: "data:image/png;base64," + d.b64_json, class: "generated" }))));
        } else {
          const data = await api("POST", "/v1/completions", { model: name, prompt, max_tokens: tokens, seed, temperature: 0.8 });
          col.append(el("pre", { class: "sample-text" }, prompt, el("b", {}, data.choices[0].text)));
        }
      } catch (e) {
        col.append(el("div", { class: "bad" }, e.message));
      }
    }));
    status(`samples of ${names.length} runs with seed ${seed}`);
  });

  onShow("runs", () => listRuns().catch(() => {}));
})();
