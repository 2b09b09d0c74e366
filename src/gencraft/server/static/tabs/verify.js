// The Verify tab: a file (and, for text or audio, its sidecar manifest) goes to POST /v1/gencraft/verify,
// which runs the same check as `gencraft verify`: the answer shown is the server's, word for word.
"use strict";
(function () {
  const { $, api, el, status } = window.studio;
  const LABEL = { valid: "valid", unknown_key: "unknown key", tampered: "tampered", unsigned: "unsigned" };

  function base64(buf) {
    const bytes = new Uint8Array(buf);
    let s = "";
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(s);
  }

  async function verify() {
    const file = $("verify-file").files[0];
    if (!file) { status("choose a file to verify", true); return; }
    const body = { filename: file.name, content_b64: base64(await file.arrayBuffer()) };
    const side = $("verify-manifest").files[0];
    if (side) {
      try { body.manifest = JSON.parse(await side.text()); } catch (e) { status(`${side.name}: not JSON`, true); return; }
    }
    const r = await api("POST", "/v1/gencraft/verify", body);
    const out = $("verify-out");
    out.className = "verdict " + r.status;
    out.replaceChildren(el("b", {}, LABEL[r.status] || r.status), ": " + r.reason,
      ...(r.key_id ? [el("div", { class: "meta" }, "key id " + r.key_id + (r.trusted ? " (trusted)" : ""))] : []),
      ...(r.c2pa ? [el("div", { class: "meta" }, "C2PA manifest: " + r.c2pa.validation_state)] : []));
    status("");
  }

  $("verify-go").addEventListener("click", () => verify().catch((e) => status(String(e.message || e), true)));
})();
