// The Speech tab: say a text with espeak-ng or a trained voice (a tts run) through POST /v1/audio/speech,
// so every clip passes the server's release step (moderated, watermarked, signed, stored in the library),
// and play it here. Each clip shows its length, engine, whether it is watermarked and signed, and its
// library item.
"use strict";
(function () {
  const { $, el, status, headers, onShow } = window.studio;
  // OpenAI's voice names (mapped to espeak-ng variants by the server) and a few espeak-ng voices of our own
  const ESPEAK_VOICES = ["nova", "shimmer", "alloy", "echo", "fable", "onyx", "en-us", "en+f4", "cmn"];

  async function loadVoices() {
    const r = await fetch("/v1/models", { headers: headers() });
    const data = r.ok ? await r.json() : { data: [] };
    const model = $("speech-model");
    const current = model.value;
    model.replaceChildren(el("option", { value: "espeak" }, "espeak-ng (no training)"));
    for (const m of data.data) {
      if ((m.capabilities || []).includes("audio.speech")) model.append(el("option", { value: m.id }, `${m.id} (trained voice)`));
    }
    if ([...model.options].some((o) => o.value === current)) model.value = current;
    voices();
  }

  function voices() {
    const voice = $("speech-voice");
    const names = $("speech-model").value === "espeak" ? ESPEAK_VOICES : ["default"];
    voice.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  }

  function manifestOf(r) {
    const h = r.headers.get("x-gencraft-manifest");
    try { return h ? JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(h), (c) => c.charCodeAt(0)))) : {}; }
    catch (e) { return {}; }
  }

  async function speak() {
    const body = { model: $("speech-model").value, voice: $("speech-voice").value, input: $("speech-text").value,
                   response_format: "wav", speed: Number($("speech-speed").value || 1) };
    const seed = $("speech-seed").value;
    if (seed !== "") body.seed = Number(seed);
    $("speech-go").disabled = true;
    status("speaking...");
    try {
      const r = await fetch("/v1/audio/speech", { method: "POST", headers: headers(), body: JSON.stringify(body) });
      if (!r.ok) {
        const err = await r.json().catch(() => ({}));
        status((err.error && err.error.message) || r.statusText, true);
        return;
      }
      const m = manifestOf(r);
      const url = URL.createObjectURL(await r.blob());
      const player = el("audio", { controls: "", src: url, class: "clip" });
      const item = r.headers.get("x-gencraft-item-id");
      const seconds = Number(r.headers.get("x-gencraft-seconds") || 0);
      const facts = [`${seconds.toFixed(1)} s`, r.headers.get("x-gencraft-engine") || body.model,
        m.watermark ? "watermarked" : "not watermarked", m.signature ? `signed (key ${m.signature.key_id})` : "unsigned",
        item ? `library item ${item}` : "not stored"];
      $("speech-out").prepend(el("div", { class: "card speech-clip" },
        el("div", { class: "meta" }, `${body.model} · ${body.voice} · ${facts.join(" · ")}`),
        el("p", {}, body.input.length > 300 ? body.input.slice(0, 300) + "…" : body.input),
        player, el("a", { href: url, download: `speech-${item || Date.now()}.wav` }, "download WAV")));
      player.play().catch(() => { /* the browser wants a click on the player first */ });
      status(`spoke ${seconds.toFixed(1)} s`);
    } catch (e) {
      status(String(e), true);
    } finally {
      $("speech-go").disabled = false;
    }
  }

  $("speech-model").addEventListener("change", voices);
  $("speech-go").addEventListener("click", speak);
  onShow("speech", loadVoices);
})();
