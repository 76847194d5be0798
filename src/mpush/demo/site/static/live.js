// The demo home page, kept live: every two seconds the registry, the metrics and the newest
// messages are read as JSON from rquery (GET /data/...), through hgateway and hrouter.
"use strict";

const NS = document.body.dataset.namespace;
const LIVE = document.body.dataset.live;
const PERIOD = 2000;

function data(...segments) {
  return "/data/" + segments.map(encodeURIComponent).join("/");
}

async function json(path) {
  const response = await fetch(path, { headers: { accept: "application/json" } });
  if (!response.ok) {
    throw new Error(`${path}: ${response.status}`);
  }
  return response.json();
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) {
    td.className = className;
  }
  return td;
}

function ago(seconds) {
  if (!Number.isFinite(seconds)) return "?";
  if (seconds < 60) return `${Math.max(0, seconds).toFixed(0)} s`;
  if (seconds < 3600) return `${(seconds / 60).toFixed(0)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

async function registry() {
  const ids = [...new Set(await json(data("lrange", `${NS}:service:ids`, "0", "-1")))];
  const found = await Promise.all(ids.map((id) => json(data("hgetall", `${NS}:service:${id}`))));
  const now = Date.now() / 1000;
  const body = document.querySelector("#services tbody");
  const rows = document.createDocumentFragment();
  let live = 0;
  ids.forEach((id, index) => {
    const entry = found[index];
    if (!entry || !entry.service) return; // expired: the instance is gone
    live += 1;
    const row = document.createElement("tr");
    row.dataset.id = id;
    row.dataset.service = entry.service;
    cell(row, id);
    cell(row, entry.service, "service");
    cell(row, entry.pid, "pid");
    const queues = [entry.in, entry.out]
      .filter(Boolean)
      .map((names) => names.split(",").join(", "))
      .join(" → ");
    cell(row, queues || "—", "queues");
    cell(row, ago(now - parseFloat(entry.started)));
    cell(row, `${ago(now - parseFloat(entry.renewed))} ago`);
    rows.appendChild(row);
  });
  body.replaceChildren(rows);
  return live;
}

async function metrics() {
  const prefix = `${NS}:metrics:`;
  const keys = await json(data("scan", prefix));
  const hashes = await Promise.all(keys.map((key) => json(data("hgetall", key))));
  const body = document.querySelector("#figures tbody");
  const rows = document.createDocumentFragment();
  keys.forEach((key, index) => {
    const figures = hashes[index];
    const row = document.createElement("tr");
    cell(row, key.slice(prefix.length), "name");
    const count = parseFloat(figures.count);
    const sum = parseFloat(figures.sum);
    cell(row, Number.isFinite(count) ? String(count) : "", "count");
    cell(row, count > 0 ? (sum / count).toPrecision(3) : "");
    cell(row, figures.max ? parseFloat(figures.max).toPrecision(3) : "");
    const counters = Object.entries(figures)
      .filter(([field]) => !["count", "sum", "max"].includes(field) && !field.startsWith("histo"))
      .map(([field, value]) => `${field}=${value}`);
    cell(row, counters.join(" "), "counters");
    rows.appendChild(row);
  });
  body.replaceChildren(rows);
}

async function archive() {
  const messages = await json(data("lrange", `${LIVE}archive`, "0", "9"));
  const list = document.getElementById("archive");
  list.replaceChildren(
    ...messages.map((message) => {
      const item = document.createElement("li");
      item.textContent = message;
      return item;
    }),
  );
}

async function refresh() {
  const badge = document.getElementById("updated");
  try {
    const [live] = await Promise.all([registry(), metrics(), archive()]);
    badge.textContent = `${live} live · ${new Date().toLocaleTimeString()}`;
    badge.classList.remove("stale");
    document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
  } catch (error) {
    badge.textContent = `not refreshed: ${error.message}`;
    badge.classList.add("stale");
  }
  setTimeout(refresh, PERIOD);
}

refresh();
