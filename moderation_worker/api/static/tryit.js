// The try-it page: a file (sent as a data: URL) or an s3:// URL, the chosen policies, POST /v1/moderate,
// then the decision and one bar per policy with its threshold marked. Vendored, no framework.
(function () {
  "use strict";
  const policies = JSON.parse(document.getElementById("policies").textContent);
  const $ = (id) => document.getElementById(id);

  function text(tag, value, className) {
    const node = document.createElement(tag);
    node.textContent = value;  // never innerHTML: everything shown is data
    if (className) node.className = className;
    return node;
  }

  function readFile(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  function showVerdict(result, preview) {
    $("decision").textContent = result.decision;
    $("decision").className = "decision " + result.decision;
    const image = result.image;
    $("facts").textContent = `${image.width}×${image.height} ${image.format}, ${image.byte_size} bytes · cache: verdict ${result.cache.verdict}, features ${result.cache.feature} · ${result.model.id} (${result.model.strategy})`;
    $("timings").textContent = "ms: " + Object.entries(result.timings_ms).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(", ");
    if (preview) $("preview").src = preview; else $("preview").removeAttribute("src");
    const body = document.querySelector("#bars tbody");
    body.replaceChildren();
    for (const p of result.policies) {
      const row = document.createElement("tr");
      row.dataset.policy = p.id;
      row.appendChild(text("td", p.id));
      const cell = document.createElement("td");
      const bar = document.createElement("div");
      bar.className = "bar";
      const fill = document.createElement("div");
      fill.className = "fill" + (p.triggered ? " triggered" : "");
      const scored = p.confidence !== null && p.confidence !== undefined;
      fill.style.width = (scored ? 100 * p.confidence : 0).toFixed(1) + "%";
      const mark = document.createElement("div");
      mark.className = "threshold";
      mark.style.left = (100 * p.threshold).toFixed(1) + "%";
      mark.title = "threshold " + p.threshold;
      bar.append(fill, mark);
      cell.appendChild(bar);
      row.appendChild(cell);
      const value = scored ? p.confidence.toFixed(3) : `not scored (${p.skipped_by})`;
      row.appendChild(text("td", `${value} / ${p.threshold}${p.triggered ? " · triggered" : ""}`));
      body.appendChild(row);
    }
    $("answer").hidden = false;
  }

  document.addEventListener("DOMContentLoaded", () => {
    const list = $("policy-list");
    for (const p of policies) {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.value = p.id;
      box.checked = true;
      label.append(box, document.createTextNode(" " + p.title));
      list.appendChild(label);
    }
    $("key").value = sessionStorage.getItem("moderation-api-key") || "";
    $("try").addEventListener("submit", async (event) => {
      event.preventDefault();
      $("error").hidden = true;
      const file = $("file").files[0];
      const url = file ? await readFile(file) : $("url").value.trim();
      if (!url) { $("error").textContent = "Choose a file or give an s3:// URL."; $("error").hidden = false; return; }
      const chosen = [...list.querySelectorAll("input:checked")].map((box) => box.value);
      const headers = { "Content-Type": "application/json" };
      const key = $("key").value.trim();
      if (key) { headers.Authorization = "Bearer " + key; sessionStorage.setItem("moderation-api-key", key); }
      const event_id = "try-" + Date.now() + "-" + Math.random().toString(36).slice(2, 8);
      const response = await fetch("/v1/moderate", {
        method: "POST", headers, body: JSON.stringify({ event_id, image_url: url, policies: chosen }),
      });
      const body = await response.json();
      if (!response.ok) {
        $("error").textContent = `${response.status} ${body.error.code}: ${body.error.message}`;
        $("error").hidden = false;
        return;
      }
      showVerdict(body, file ? url : null);
    });
  });
})();
