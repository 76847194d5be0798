// The demo page, kept live. Every second it reads /control/status (rcontrol's view of the
// namespace, the load's figures, where the rest is) and, through rquery (GET /data/...), the
// queue lengths and the metrics hashes; it redraws the tables and appends a point to each chart.
// The history lives in this page only: the charts start empty and cover the last minutes.
"use strict";

const PERIOD = 1000; // ms between reads
const HISTORY = 300; // points kept: five minutes
const WINDOW = 5; // seconds of metrics behind each response-time point
const CONTROL = { "x-mpush-demo": "control" };
const COLORS = ["#b8322a", "#2b6cb0", "#2f855a", "#b7791f", "#6b46c1", "#1d232a", "#d53f8c"];

const demo = { site: null, charts: {}, series: {}, samples: [], polls: 0, status: null };
window.demo = demo; // for the curious (and the browser test)

function data(...segments) {
  return "/data/" + segments.map(encodeURIComponent).join("/");
}

async function json(path, options) {
  const response = await fetch(path, { headers: { accept: "application/json" }, ...options });
  if (!response.ok) {
    throw new Error(`${path}: ${response.status} ${(await response.text()).trim()}`);
  }
  return response.json();
}

async function control(path) {
  try {
    await json(path, { method: "POST", headers: CONTROL });
    poll(false);
  } catch (error) {
    document.getElementById("load-figures").textContent = error.message;
  }
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function cell(row, text, className) {
  const td = element("td", text, className);
  row.appendChild(td);
  return td;
}

function ms(seconds) {
  return seconds === null || seconds === undefined ? "–" : `${Math.round(seconds * 1000)} ms`;
}

function clock(epoch) {
  return epoch ? new Date(epoch * 1000).toLocaleTimeString() : "";
}

// ---- the controls -------------------------------------------------------------------------

function setupControls(site) {
  const buttons = document.getElementById("load-buttons");
  buttons.replaceChildren(
    ...site.presets.map((rate) => {
      const button = element("button", rate ? `${rate} / s` : "off");
      button.dataset.rate = String(rate);
      button.addEventListener("click", () => control(`/control/load/${rate}`));
      return button;
    }),
  );
  const body = document.querySelector("#scalable tbody");
  body.replaceChildren(
    ...site.scalable.map((entry) => {
      const row = element("tr");
      row.dataset.deployment = entry.name;
      cell(row, entry.name, "name");
      const td = cell(row);
      if (site.mode === "manual") {
        const minus = element("button", "−", "step minus");
        const plus = element("button", "+", "step plus");
        minus.addEventListener("click", () => step(entry, -1));
        plus.addEventListener("click", () => step(entry, +1));
        td.append(minus, element("span", "", "replicas"), plus);
      } else {
        td.append(element("span", "", "replicas"));
      }
      const per = entry.target ? `, ${entry.target} queued per replica` : "";
      cell(row, `${entry.min}–${entry.max}${per}`, "note");
      return row;
    }),
  );
}

function step(entry, delta) {
  const current = desired(entry.name);
  if (current === null) return;
  const wanted = Math.min(entry.max, Math.max(entry.min, current + delta));
  if (wanted !== current) control(`/control/scale/${entry.name}/${wanted}`);
}

function desired(name) {
  const found = deployment(name);
  return found ? found.desired : null;
}

function deployment(name) {
  const deployments = demo.status ? demo.status.rcontrol.deployments : [];
  return deployments.find((entry) => entry.name === name) || null;
}

function showLoad(load) {
  for (const button of document.querySelectorAll("#load-buttons button")) {
    button.setAttribute("aria-pressed", String(Number(button.dataset.rate) === load.rate));
  }
  const answers = Object.entries(load.answers)
    .map(([kind, count]) => `${kind} ${count}`)
    .join(" · ");
  const parts = [
    load.rate ? `${load.rate} / s to ${load.path} since ${clock(load.since)}` : "no load",
    `sent ${load.sent}`,
    answers,
    `no answer ${load.failed}`,
    `skipped ${load.skipped}`,
    `in flight ${load.in_flight}`,
    `p50 ${ms(load.p50)} · p95 ${ms(load.p95)}`,
  ];
  document.getElementById("load-figures").textContent = parts.filter(Boolean).join(" · ");
  for (const row of document.querySelectorAll("#scalable tr")) {
    const found = deployment(row.dataset.deployment);
    if (!found) continue;
    row.querySelector(".replicas").textContent = String(found.desired);
    const entry = demo.site.scalable.find((item) => item.name === row.dataset.deployment);
    const minus = row.querySelector(".minus");
    const plus = row.querySelector(".plus");
    if (minus) minus.disabled = found.desired <= entry.min;
    if (plus) plus.disabled = found.desired >= entry.max;
  }
}

// ---- the tables ---------------------------------------------------------------------------

function showDeployments(view) {
  const scalable = new Map(demo.site.scalable.map((entry) => [entry.name, entry]));
  const hosts = [...new Set([...demo.site.hosts, ...view.hosts.map((host) => host.name)])];
  const rows = view.deployments.map((entry) => {
    const row = element("tr");
    row.dataset.deployment = entry.name;
    if (entry.ready < entry.desired) row.classList.add("short");
    const name = cell(row, entry.name, "name");
    const bounds = scalable.get(entry.name);
    if (bounds) {
      const how = demo.site.mode === "autoscale" ? "autoscaled" : "scalable";
      name.appendChild(element("span", `${how} ${bounds.min}–${bounds.max}`, "tag"));
    }
    cell(row, entry.run, "runs");
    cell(row, String(entry.desired), "number desired");
    cell(row, String(entry.ready), "number ready");
    cell(row, `${entry.standby}/${entry.standby_desired}`, "number standby");
    const where = cell(row, "", "instances");
    for (const host of hosts) {
      const mine = entry.instances.filter((instance) => instance.host === host);
      const line = element("span", null, "host");
      line.dataset.host = host;
      line.appendChild(element("b", host));
      for (const instance of mine) {
        const chip = element("span", instance.id, `chip s-${instance.state}`);
        chip.dataset.state = instance.state;
        chip.dataset.role = instance.role;
        const cpu = `${(instance.cpu * 100).toFixed(1)}% cpu`;
        chip.title = `${instance.state} (${instance.role}), pid ${instance.pid ?? "–"}, ${cpu}`;
        line.appendChild(chip);
      }
      where.appendChild(line);
    }
    return row;
  });
  document.querySelector("#deployments tbody").replaceChildren(...rows);
}

function showHosts(view) {
  const rows = view.hosts.map((host) => {
    const row = element("tr");
    row.dataset.host = host.name;
    cell(row, host.name, "name");
    cell(row, host.alive ? "yes" : "dead", host.alive ? "" : "dead");
    cell(row, `${host.running} of ${host.capacity}`, "number");
    cell(row, host.load1 === null ? "–" : host.load1.toFixed(2), "number");
    const free = host.mem_free === null ? "–" : `${Math.round(host.mem_free / 1048576)} MiB`;
    cell(row, free, "number");
    return row;
  });
  document.querySelector("#hosts tbody").replaceChildren(...rows);
}

function showEvents(view) {
  const rows = [...(view.events || [])].reverse().map((event) => {
    const row = element("tr");
    row.dataset.kind = event.kind;
    cell(row, clock(event.at), "time");
    cell(row, event.kind, "name");
    cell(row, event.deployment || "");
    cell(row, event.instance || "");
    cell(row, event.host || "");
    cell(row, event.why || "", "why");
    return row;
  });
  document.querySelector("#events tbody").replaceChildren(...rows);
}

async function showArchive() {
  const messages = await json(data("lrange", demo.site.archive, "0", "9"));
  document
    .getElementById("archive")
    .replaceChildren(...messages.map((message) => element("li", message)));
}

// ---- the charts ---------------------------------------------------------------------------

function chart(id, series) {
  const target = document.getElementById(id);
  const options = {
    width: Math.max(300, target.clientWidth),
    height: 200,
    scales: { x: { time: true }, y: { range: (_, low, high) => [0, Math.max(1, high * 1.1)] } },
    axes: [{}, { size: 56 }],
    legend: { live: false },
    series: [
      {},
      ...series.map((entry, index) => ({
        label: entry.label,
        stroke: entry.color || COLORS[index % COLORS.length],
        width: 2,
        dash: entry.dash,
        spanGaps: false,
        value: (_, value) => (value === null || value === undefined ? "–" : +value.toFixed(2)),
      })),
    ],
  };
  const plot = new uPlot(options, [[], ...series.map(() => [])], target);
  demo.charts[id] = plot;
  demo.series[id] = series;
  return plot;
}

function setupCharts(site) {
  const queues = Object.keys(site.queues);
  chart("chart-queues", queues.map((name) => ({ label: name, key: `queue:${name}` })));
  const replicas = [];
  site.scalable.forEach((entry, index) => {
    const color = COLORS[index % COLORS.length];
    replicas.push({ label: `${entry.name} ready`, key: `${entry.name}:ready`, color });
    replicas.push({ label: `${entry.name} desired`, key: `${entry.name}:desired`, color, dash: [6, 4] });
  });
  chart("chart-replicas", replicas);
  const names = Object.keys(site.metrics);
  chart("chart-rps", [
    ...names.map((name) => ({ label: name === "gateway" ? "all (gateway)" : name, key: `rps:${name}` })),
    { label: "not 2xx (gateway)", key: "rps:errors", color: "#d53f8c", dash: [2, 3] },
  ]);
  chart("chart-latency", [
    { label: "load p95", key: "load:p95" },
    { label: "gateway p95 ≤", key: "gateway:p95", dash: [6, 4] },
    { label: "gateway mean", key: "gateway:mean" },
    { label: "work mean", key: "work:mean" },
  ]);
  window.addEventListener("resize", () => {
    for (const [id, plot] of Object.entries(demo.charts)) {
      plot.setSize({ width: document.getElementById(id).clientWidth, height: 200 });
    }
  });
}

// Figures of one metrics hash: count, sum, histoK, and the answers that were not 2xx.
function figures(hash) {
  const number = (field) => parseFloat(hash[field] || "0") || 0;
  const histo = [];
  for (let k = 0; k <= 100; k += 10) histo.push(number(`histo${k}`));
  const errors = Object.entries(hash)
    .filter(([field]) => field.startsWith("status:") && !field.startsWith("status:2"))
    .reduce((total, [, value]) => total + (parseFloat(value) || 0), 0);
  return { count: number("count"), sum: number("sum"), histo, errors };
}

// The p95 of the observations between two samples of a histogram, as the upper edge of the
// bucket it falls in (buckets are tenths of the timeout; the last one is "timeout or more").
function p95(before, after, timeout) {
  const counts = after.histo.map((value, index) => Math.max(0, value - before.histo[index]));
  const total = counts.reduce((sum, value) => sum + value, 0);
  if (!total) return null;
  let seen = 0;
  for (let index = 0; index < counts.length; index += 1) {
    seen += counts[index];
    if (seen >= 0.95 * total) return (Math.min(index + 1, 10) * timeout) / 10;
  }
  return timeout;
}

function record(status, lengths, hashes) {
  const site = demo.site;
  const now = Date.now() / 1000;
  const metrics = {};
  Object.keys(site.metrics).forEach((name, index) => (metrics[name] = figures(hashes[index])));
  metrics.errors = figures(hashes[hashes.length - 1]);
  const sample = { at: now, metrics };
  const previous = demo.samples[demo.samples.length - 1];
  const older = demo.samples.find((entry) => entry.at >= now - WINDOW - 0.5) || previous;
  demo.samples.push(sample);
  while (demo.samples.length && demo.samples[0].at < now - 2 * WINDOW) demo.samples.shift();

  const values = {};
  Object.keys(site.queues).forEach((name, index) => (values[`queue:${name}`] = lengths[index]));
  for (const entry of site.scalable) {
    const found = status.rcontrol.deployments.find((item) => item.name === entry.name);
    values[`${entry.name}:ready`] = found ? found.ready : null;
    values[`${entry.name}:desired`] = found ? found.desired : null;
  }
  if (previous) {
    const seconds = Math.max(0.001, now - previous.at);
    for (const name of Object.keys(site.metrics)) {
      const served = metrics[name].count - previous.metrics[name].count;
      values[`rps:${name}`] = Math.max(0, served / seconds);
    }
    const failed = metrics.errors.errors - previous.metrics.errors.errors;
    values["rps:errors"] = Math.max(0, failed / seconds);
  }
  if (older && older !== sample) {
    const gateway = [older.metrics.gateway, metrics.gateway];
    const counted = gateway[1].count - gateway[0].count;
    values["gateway:p95"] = p95(gateway[0], gateway[1], site.timeout) * 1000 || null;
    values["gateway:mean"] = counted > 0 ? ((gateway[1].sum - gateway[0].sum) / counted) * 1000 : null;
    const work = [older.metrics.work, metrics.work];
    const served = work[1].count - work[0].count;
    values["work:mean"] = served > 0 ? ((work[1].sum - work[0].sum) / served) * 1000 : null;
  }
  values["load:p95"] = status.load.p95 === null ? null : status.load.p95 * 1000;

  for (const [id, plot] of Object.entries(demo.charts)) {
    const columns = plot.data.map((column) => [...column]);
    columns[0].push(now);
    demo.series[id].forEach((entry, index) => columns[index + 1].push(values[entry.key] ?? null));
    if (columns[0].length > HISTORY) columns.forEach((column) => column.shift());
    plot.setData(columns);
  }
}

// ---- every second -------------------------------------------------------------------------

let timer = null;

async function poll(again = true) {
  const badge = document.getElementById("updated");
  try {
    const status = await json("/control/status");
    if (!demo.site) {
      demo.site = status.site;
      setupControls(status.site);
      setupCharts(status.site);
    }
    demo.status = status;
    const site = demo.site;
    const keys = [...Object.values(site.metrics), site.errors];
    const [lengths, hashes] = await Promise.all([
      Promise.all(Object.values(site.queues).map((key) => json(data("llen", key)))),
      Promise.all(keys.map((key) => json(data("hgetall", key)))),
    ]);
    const view = status.rcontrol;
    showLoad(status.load);
    showDeployments(view);
    showHosts(view);
    showEvents(view);
    if (again) {
      record(status, lengths, hashes);
      demo.polls += 1;
      if (demo.polls % 2 === 1) await showArchive();
    }
    const running = view.deployments.reduce((total, entry) => total + entry.instances.length, 0);
    const leader = view.controller ? view.controller.holder : "no controller";
    badge.textContent = `${running} instances · controller ${leader} · ${clock(view.now)}`;
    badge.classList.remove("stale");
    document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
  } catch (error) {
    badge.textContent = `not refreshed: ${error.message}`;
    badge.classList.add("stale");
  }
  if (again) {
    clearTimeout(timer);
    timer = setTimeout(poll, PERIOD);
  }
}

poll();
