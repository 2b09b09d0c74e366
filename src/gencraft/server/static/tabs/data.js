// The Data tab: upload files or folders (drag and drop), choose tokenizer, license and options,
// prepare the dataset as a job, see its manifest (counts per cleaning step, sources, licenses).
"use strict";
(function () {
  const { $, api, el, status, onShow, followJob } = window.studio;
  let upload = null;  // {id, files: []}

  // ---- collecting files: a file input, a folder input, or a drop of files and folders

  async function entries(item, prefix, out) {
    if (item.isFile) {
      const file = await new Promise((ok, bad) => item.file(ok, bad));
      out.push([prefix + file.name, file]);
    } else if (item.isDirectory) {
      const reader = item.createReader();
      for (;;) {
        const batch = await new Promise((ok, bad) => reader.readEntries(ok, bad));
        if (!batch.length) break;
        for (const e of batch) await entries(e, prefix + item.name + "/", out);
      }
    }
  }

  async function send(pairs) {
    if (!pairs.length) return;
    if (!upload) upload = await api("POST", "/v1/gencraft/uploads");
    const list = $("data-files");
    let ok = 0;
    for (const [path, file] of pairs) {
      const row = el("li", {}, `${path} · ${(file.size / 1024).toFixed(1)} kB · uploading…`);
      list.append(row);
      try {
        const r = await fetch(`/v1/gencraft/uploads/${upload.id}/files/${path.split("/").map(encodeURIComponent).join("/")}`,
                              { method: "PUT", headers: studio.authHeaders(), body: file });
        const data = await r.json().catch(() => ({}));
        if (!r.ok) throw new Error((data.error && data.error.message) || r.statusText);
        const n = data.files ? ` (${data.files.length} files unpacked)` : "";
        row.replaceChildren(el("span", { class: "ok" }, "✓ "), `${path}${n}`);
        row.className = "uploaded";
        ok += 1;
      } catch (e) {
        row.replaceChildren(el("span", { class: "bad" }, "✗ "), `${path}: ${e.message}`);
        row.className = "rejected";
      }
    }
    status(`${ok} of ${pairs.length} files uploaded`, ok < pairs.length);
    $("data-go").disabled = !list.querySelector(".uploaded") && !builtin();
  }

  const drop = $("data-drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const pairs = [];
    const items = [...(e.dataTransfer.items || [])].map((i) => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
    if (items.length) for (const it of items) await entries(it, "", pairs);
    else for (const f of e.dataTransfer.files) pairs.push([f.name, f]);
    await send(pairs);
  });
  for (const id of ["data-pick", "data-pick-folder"]) {
    $(id).addEventListener("change", async (e) => {
      await send([...e.target.files].map((f) => [f.webkitRelativePath || f.name, f]));
      e.target.value = "";
    });
  }
  $("data-clear").addEventListener("click", () => { upload = null; $("data-files").replaceChildren(); $("data-go").disabled = !builtin(); });

  // ---- options per kind of dataset

  function builtin() { return $("data-kind").value !== "text" && $("data-builtin").checked; }
  function showKind() {
    const kind = $("data-kind").value;
    document.querySelectorAll("#tab-data [data-for]").forEach((n) => { n.hidden = !n.dataset.for.split(" ").includes(kind); });
    $("data-builtin-name").textContent = { images: "sklearn:digits", music: "music21:bach" }[kind] || "";
    $("data-go").disabled = !$("data-files").querySelector(".uploaded") && !builtin();
  }
  $("data-kind").addEventListener("change", showKind);
  $("data-builtin").addEventListener("change", showKind);

  $("data-go").addEventListener("click", async () => {
    const kind = $("data-kind").value, out = $("data-name").value.trim();
    const params = { out };
    if (builtin()) params.source = $("data-builtin-name").textContent; else params.upload = upload && upload.id;
    const license = $("data-license").value.trim();
    if (license) params.license = license;
    if (kind === "text") {
      Object.assign(params, { tokenizer: $("data-tokenizer").value, unit: $("data-unit").value,
                              val_fraction: Number($("data-val").value), dedupe: $("data-dedupe").checked });
    } else if (kind === "images") {
      Object.assign(params, { size: Number($("data-size").value), fit: $("data-fit").value });
    } else if (kind === "speech") {
      Object.assign(params, { speaker: $("data-speaker").value.trim(), language: $("data-language").value });
    } else {
      Object.assign(params, { transpose: Number($("data-transpose").value) });
    }
    const log = $("data-log");
    log.replaceChildren();
    $("data-go").disabled = true;
    try {
      const job = await api("POST", "/v1/gencraft/jobs", { kind: "data." + kind, params });
      status(`preparing ${out} (job ${job.id})`);
      const end = await followJob(job.id, (ev) => {
        if (ev.type === "log") log.append(el("div", {}, ev.text));
        if (ev.type === "error") log.append(el("div", { class: "bad" }, ev.message));
      });
      if (end.state === "succeeded") {
        status(`dataset ${out} prepared`);
        upload = null;
        $("data-files").replaceChildren();
        await listDatasets();
        await showDataset(out);
      } else {
        status(`${out}: ${end.error || end.state}`, true);
      }
    } catch (e) { /* shown */ } finally { showKind(); }
  });

  // ---- datasets and their manifests

  async function listDatasets() {
    const data = await api("GET", "/v1/gencraft/datasets");
    const body = $("data-list");
    body.replaceChildren();
    for (const d of data.data) {
      const size = d.kind === "images" ? `${d.images} images`
        : d.kind === "speech" ? `${d.utterances || 0} recordings · ${Math.round(d.seconds || 0)} s`
        : `${(d.documents || 0).toLocaleString()} docs · ${(d.tokens || 0).toLocaleString()} tokens`;
      const tr = el("tr", { "data-name": d.name }, el("td", {}, d.name), el("td", {}, d.kind), el("td", {}, size),
                    el("td", {}, (d.licenses || []).join(", ")));
      tr.addEventListener("click", () => showDataset(d.name));
      body.append(tr);
    }
    return data.data;
  }

  function table(header, rows) {
    return el("table", { class: "table" }, el("thead", {}, el("tr", {}, ...header.map((h) => el("th", {}, h)))),
              el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", {}, c ?? ""))))));
  }

  async function showDataset(name) {
    const d = await api("GET", `/v1/gencraft/datasets/${encodeURIComponent(name)}`);
    const m = d.manifest;
    document.querySelectorAll("#data-list tr").forEach((tr) => tr.classList.toggle("selected", tr.dataset.name === name));
    const parts = [el("h3", {}, `${name} (${d.kind})`)];
    if (m.tokenizer) parts.push(el("div", { class: "meta" }, `tokenizer ${m.tokenizer.kind}, ${m.tokenizer.vocab_size} tokens`));
    if (m.splits) parts.push(el("div", { class: "meta" }, Object.entries(m.splits).map(([k, s]) => (d.kind === "speech"
      ? `${k}: ${s.utterances} recordings, ${Math.round(s.seconds || 0)} s`
      : `${k}: ${s.documents} documents, ${(s.tokens || 0).toLocaleString()} tokens`)).join(" · ")));
    if (m.counts) parts.push(el("h4", {}, "Recordings"), table(["found", "kept", "dropped"],
      [[m.counts.found, m.counts.kept, Object.entries(m.counts.dropped || {}).map(([r, n]) => `${r}: ${n}`).join(", ") || "none"]]));
    if (m.steps) parts.push(el("h4", {}, "Cleaning steps"), table(["step", "documents", "removed", "chars"],
      m.steps.map((s) => [s.step, s.documents, s.removed ?? s.added ?? "", s.chars]) ));
    if (m.classes && m.classes.length) parts.push(el("div", { class: "meta" }, `classes: ${m.classes.join(", ")}`));
    parts.push(el("h4", {}, "Sources and licenses"), table(["source", "license", "documents", "bytes"],
      (m.sources || []).slice(0, 200).map((s) => [s.path, s.license || "unknown", s.documents ?? s.images ?? "", s.bytes])));
    if (m.skipped && m.skipped.length) parts.push(el("h4", {}, "Skipped"), table(["file", "reason"], m.skipped.map((s) => [s.path, s.reason])));
    const del = el("button", { class: "ghost", id: "data-delete" }, "Delete dataset");
    del.addEventListener("click", async () => {
      if (!confirm(`Delete dataset ${name}?`)) return;
      await api("DELETE", `/v1/gencraft/datasets/${encodeURIComponent(name)}`);
      $("data-manifest").replaceChildren();
      listDatasets();
    });
    parts.push(el("div", { class: "row" }, del));
    $("data-manifest").replaceChildren(...parts);
  }

  onShow("data", () => { showKind(); listDatasets().catch(() => {}); });
  studio.listDatasets = listDatasets;
})();
