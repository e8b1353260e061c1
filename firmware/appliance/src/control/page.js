// Refreshes the dashboard's numbers every 5 seconds from /api/v1/status (same origin,
// the session cookie authenticates); reloads the page when the state changes.
"use strict";
(function () {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  function fmt(n) {
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return i === 0 ? n + " B" : n.toFixed(1) + " " + units[i];
  }
  function set(id, text) {
    const e = document.getElementById(id);
    if (e) e.textContent = text;
  }
  async function tick() {
    try {
      const r = await fetch("/api/v1/status", { cache: "no-store" });
      if (!r.ok) return;
      const s = await r.json();
      if (s.state !== document.body.dataset.state ||
          String(s.signed_in) !== document.body.dataset.signedIn) {
        location.reload();
        return;
      }
      const st = s.store;
      if (!st) return;
      set("used", fmt(st.capacity_bytes - st.free_bytes));
      set("free", fmt(st.free_bytes));
      set("dead", fmt(st.dead_bytes));
      set("journal-used", fmt(st.journal_used_bytes));
      set("journal-size", fmt(st.journal_bytes));
      set("journal-pct", st.journal_bytes > 0 ? Math.floor(100 * st.journal_used_bytes / st.journal_bytes) + " %" : "-");
      set("files", String(st.files));
      set("logical", fmt(st.logical_bytes));
      set("on-device", fmt(st.stored_bytes));
      set("gain", st.stored_bytes > 0 ? (st.logical_bytes / st.stored_bytes).toFixed(2) + "x" : "-");
      set("rate", fmt(st.write_rate_bytes_per_sec) + "/s");
    } catch (e) {
      // The appliance may be restarting: try again at the next tick.
    }
  }
  setInterval(tick, 5000);
})();
