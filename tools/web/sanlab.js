// sanlab status pages: what both pages share (state colours, formatting, polling).
"use strict";

// One colour per pair state: green mirrored, blue copying, amber split, red suspended by an error.
const STATE_COLOURS = {
  PAIR: "#2e7d32", COPY: "#1565c0", RCPY: "#1565c0", PSUS: "#ef6c00", SSUS: "#ef6c00",
  PSUE: "#c62828", PFUS: "#c62828", PFUL: "#f9a825", SSWS: "#6a1b9a", SMPL: "#757575",
  up: "#2e7d32", down: "#c62828", unreachable: "#757575",
};

function stateColour(state) { return STATE_COLOURS[state] || "#757575"; }

function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(Math.round(n))) + " " + units[i];
}

function esc(s) {
  return String(s === null || s === undefined ? "" : s).replace(/[&<>"']/g,
    c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

function stateCell(state) {
  return `<td class="state" style="background:${stateColour(state)}">${esc(state)}</td>`;
}

function table(id, heads, rows) {
  const el = document.getElementById(id);
  if (!rows.length) { el.innerHTML = '<p class="muted">(none)</p>'; return; }
  el.innerHTML = "<table><tr>" + heads.map(h => `<th>${esc(h)}</th>`).join("") + "</tr>" +
    rows.join("") + "</table>";
}

// Fetch `url` as JSON every `ms` milliseconds and hand it to `show`; errors go to #error.
function poll(url, ms, show) {
  const err = document.getElementById("error");
  async function once() {
    try {
      const r = await fetch(url, {cache: "no-store"});
      if (!r.ok) throw new Error(url + ": HTTP " + r.status);
      show(await r.json());
      err.textContent = "";
    } catch (e) {
      err.textContent = "cannot read " + url + ": " + e.message;
    }
    setTimeout(once, ms);
  }
  once();
}
