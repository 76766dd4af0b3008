// distill's only script: small progressive enhancements; every page works without it.
"use strict";
(function () {
  const csrf = () => (document.querySelector("input[name=csrf]") || {}).value || "";

  // Submit page: "Check" runs the server's checks in place (the chosen archive stays selected).
  const form = document.getElementById("submit-form");
  if (form) {
    document.getElementById("check").addEventListener("click", async (event) => {
      event.preventDefault();
      const out = document.getElementById("check-result");
      out.textContent = "Checking…";
      const reply = await fetch(form.dataset.check, {method: "POST", body: new FormData(form), headers: {"X-Partial": "1"}});
      out.innerHTML = await reply.text();  // server-rendered, escaped HTML
      const listing = out.querySelector(".listing");
      const editor = document.getElementById("spec_text");
      if (listing && !editor.value.trim()) editor.value = listing.dataset.text;  // the archive's spec, to fix in place
      const bad = out.querySelector("li.bad") || out.querySelector("[role=alert], [role=status]");
      if (bad) { bad.setAttribute("tabindex", "-1"); bad.focus(); }
    });
  }

  // Job page: live events over Server-Sent Events; the status block is re-rendered on each event.
  const live = document.getElementById("live");
  if (live && window.EventSource) {
    const list = document.getElementById("events");
    const last = list.lastElementChild ? list.lastElementChild.dataset.id : "0";
    const source = new EventSource(live.dataset.streamUrl + "?after=" + last);
    let pending = null;
    const refresh = async () => {
      const reply = await fetch(live.dataset.statusUrl);
      if (reply.ok) live.innerHTML = await reply.text();
      const status = (live.querySelector("#status") || {}).dataset;
      if (status && ["succeeded", "failed", "cancelled"].includes(status.status)) source.close();
    };
    source.onmessage = null;
    const chart = trainingChart();
    source.addEventListener("progress", (message) => {  // a stage's progress: the chart and the status block, not the log
      const event = JSON.parse(message.data);
      if (chart && event.data && event.data.stage === "train") chart.add(event.data);
      clearTimeout(pending);
      pending = setTimeout(refresh, 150);
    });
    const onEvent = (message) => {
      const event = JSON.parse(message.data);
      const item = document.createElement("li");
      item.dataset.id = event.id;
      const time = document.createElement("time"), type = document.createElement("span");
      time.textContent = event.time;  // text nodes only: event messages are never parsed as HTML
      type.className = "etype";
      type.textContent = event.type;
      item.append(time, " ", type, " ", event.message);
      list.appendChild(item);
      list.scrollTop = list.scrollHeight;
      clearTimeout(pending);
      pending = setTimeout(refresh, 150);
    };
    for (const type of ["status", "stage", "review", "error", "info", "message"]) source.addEventListener(type, onEvent);
    source.onerror = () => { refresh(); };
  }

  // Job page: the training curve (loss and validation bits per byte by step) as an SVG, grown by progress events.
  function trainingChart() {
    const section = document.getElementById("training");
    const svg = document.getElementById("train-chart");
    if (!section || !svg) return null;
    const points = JSON.parse(section.dataset.series || "[]");
    const ns = "http://www.w3.org/2000/svg", W = 600, H = 220, pad = 46;
    const label = (x, y, text, cls, anchor) => {
      const node = document.createElementNS(ns, "text");
      node.setAttribute("x", x);
      node.setAttribute("y", y);
      node.setAttribute("class", cls);
      node.setAttribute("text-anchor", anchor);
      node.textContent = text;
      svg.appendChild(node);
    };
    // each series on its own scale (loss in nats per token, bpb in bits per byte), its range written at its side
    const line = (key, cls, left) => {
      const rows = points.filter((p) => typeof p[key] === "number");
      if (rows.length === 0) return;
      const steps = points.map((p) => p.step), values = rows.map((p) => p[key]);
      const x0 = Math.min(...steps), x1 = Math.max(...steps, x0 + 1), y0 = Math.min(...values), y1 = Math.max(...values, y0 + 1e-6);
      const path = document.createElementNS(ns, "polyline");
      path.setAttribute("class", cls);
      path.setAttribute("points", rows.map((p) => `${pad + (W - 2 * pad) * (p.step - x0) / (x1 - x0)},${H - pad - (H - 2 * pad) * (p[key] - y0) / (y1 - y0)}`).join(" "));
      svg.appendChild(path);
      const x = left ? pad - 6 : W - pad + 6, anchor = left ? "end" : "start";
      label(x, pad + 4, y1.toFixed(3), cls, anchor);
      label(x, H - pad + 4, y0.toFixed(3), cls, anchor);
      label(pad, H - pad + 20, `step ${x0}`, "axis", "start");
      label(W - pad, H - pad + 20, `step ${x1}`, "axis", "end");
    };
    const draw = () => {
      svg.querySelectorAll("polyline, text").forEach((el) => el.remove());
      line("loss", "c-loss", true);
      line("val_bpb", "c-bpb", false);
      line("kl_per_token", "c-kl", false);  // with training.distillation: KL to the teacher's top-k
    };
    draw();
    return {
      add(progress) {
        section.hidden = false;
        const last = points[points.length - 1];
        const point = {step: progress.step, loss: progress.loss};
        if (last === undefined || last.val_bpb !== progress.val_bpb) point.val_bpb = progress.val_bpb;
        if (typeof progress.step === "number" && (last === undefined || progress.step > last.step)) points.push(point);
        document.getElementById("train-now").textContent = message(progress);
        draw();
      },
    };
  }
  const message = (p) => p.step === undefined ? "" :
    `step ${p.step}, loss ${p.loss.toFixed(3)}` + (p.val_bpb != null ? `, val bpb ${p.val_bpb.toFixed(3)}` : "") +
    (p.eta_seconds != null ? `, about ${Math.round(p.eta_seconds)} s left` : "");

  // Review page: keyboard shortcuts (not while typing in a field, except Escape).
  const review = document.getElementById("review");
  if (review) {
    const go = (id) => { const a = document.getElementById(id); if (a) window.location = a.href; };
    let chosen = null;  // "accept" or "reject" after the a / r key: Enter in the reason field submits it
    const decide = (decision) => {
      const reason = document.getElementById("reason");
      if (!reason) return;
      chosen = decision;
      document.getElementById("decision-label").textContent = ` to ${decision} (Enter)`;
      reason.focus();
      reason.select();
    };
    // "then open the next pending record": remembered in this browser, sent with every decision form
    const advance = document.getElementById("advance");
    const syncAdvance = () => {
      const hidden = document.querySelector('#common-reasons input[name="advance"]');
      if (advance && hidden) hidden.value = advance.checked ? "1" : "";
    };
    if (advance) {
      advance.checked = localStorage.getItem("distill.advance") === "1";
      advance.addEventListener("change", () => { localStorage.setItem("distill.advance", advance.checked ? "1" : ""); syncAdvance(); });
      syncAdvance();
    }
    const reasonBox = document.getElementById("reason");
    if (reasonBox) reasonBox.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && chosen) {
        event.preventDefault();
        reasonBox.form.requestSubmit(document.getElementById(chosen));
      }
    });
    document.addEventListener("keydown", (event) => {
      const typing = /^(INPUT|TEXTAREA|SELECT)$/.test(event.target.tagName);
      if (event.key === "Escape" && typing) { event.target.blur(); return; }
      if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
      const actions = {
        j: () => go("next-record"), k: () => go("prev-record"),
        a: () => decide("accept"), r: () => decide("reject"),
        e: () => { const t = document.getElementById("edit-text"); if (t) { t.closest("details").open = true; t.focus(); } },
        u: () => { const u = document.getElementById("undo-reason"); if (u) u.focus(); },
        "/": () => document.getElementById("q").focus(),
        b: () => { const b = document.getElementById("bulk-accept"); if (b) b.focus(); },  // Tab reaches "Reject all"
        "?": () => document.getElementById("keys").scrollIntoView(),
      };
      const common = document.querySelector(`#common-reasons button[data-key="${event.key}"]`);
      if (common) { event.preventDefault(); syncAdvance(); common.form.requestSubmit(common); return; }
      if (actions[event.key]) { event.preventDefault(); actions[event.key](); }
    });
  }
})();
