// The live page: polls live/steps every second and draws, for each profile, its recent steps on logits
// entropy vs varentropy coloured by regime over the regions its bounds define (as clients/python/samplerd/
// plots.py draws them), the regime mix of all its steps and its step rate. Plain canvas, no library.
"use strict";

// The colours of plots.py. Only the dots use them at full opacity (the regions, lines, bars and legend are
// translucent), which lets a test find the dots in a screenshot by colour.
const COLORS = {
  argmax: "#1f77b4", clarify: "#9467bd", explore: "#2ca02c", resample: "#d62728",
  adaptive: "#ff7f0e", fixed: "#7f7f7f", unspecified: "#000000",
};
const WIDTH = 560, HEIGHT = 400;
const MARGIN = { left: 52, right: 12, top: 10, bottom: 36 };
const LINTHRESH = 0.1, LINSCALE = 0.6;  // plots.py's symlog varentropy axis
const REFRESH_MS = 1000;

const views = new Map();  // profile name -> { root, canvas, mix, legend, rate, last }

function color(regime) { return COLORS[regime] || "#000000"; }

// symlog: linear below LINTHRESH (LINSCALE decades wide), log10 above.
function symlog(v) {
  const a = Math.abs(v);
  const y = a <= LINTHRESH ? (a / LINTHRESH) * LINSCALE : LINSCALE + Math.log10(a / LINTHRESH);
  return v < 0 ? -y : y;
}

function holds(value, op, bound) { return op === "lt" ? value < bound : value > bound; }

// The regime of a point from the profile's rules: the first rule whose logits bounds hold; a rule that also
// bounds attention metrics only claims the point when no later rule does (as plots.py draws it, hatched).
function region(profile, h, v) {
  let regime = profile.default_regime || "adaptive";
  let partial = false;
  for (const rule of profile.rules || []) {
    let ok = true, others = false;
    for (const b of rule.bounds) {
      if (b.metric === "logits_entropy") ok = ok && holds(h, b.op, b.value);
      else if (b.metric === "logits_varentropy") ok = ok && holds(v, b.op, b.value);
      else others = true;
    }
    if (!ok) continue;
    regime = rule.regime;
    partial = others;
    if (!others) break;
  }
  return { regime, partial };
}

function view(name) {
  let v = views.get(name);
  if (v) return v;
  const root = document.createElement("div");
  root.className = "profile";
  const title = document.createElement("h2");
  title.textContent = "profile " + name;
  const rate = document.createElement("span");
  rate.className = "rate";
  title.appendChild(rate);
  const canvas = document.createElement("canvas");
  const scale = window.devicePixelRatio || 1;
  canvas.width = WIDTH * scale;
  canvas.height = HEIGHT * scale;
  canvas.style.width = WIDTH + "px";
  canvas.style.height = HEIGHT + "px";
  canvas.getContext("2d").scale(scale, scale);
  const mix = document.createElement("div");
  mix.className = "mix";
  const legend = document.createElement("div");
  legend.className = "legend";
  root.append(title, canvas, mix, legend);
  document.getElementById("profiles").appendChild(root);
  v = { root, canvas, mix, legend, rate, last: null };
  views.set(name, v);
  return v;
}

function drawScatter(canvas, profile, regimes) {
  const ctx = canvas.getContext("2d");
  const points = profile.points || [];
  let hmax = 8.3, vmax = 20;
  for (const p of points) {
    hmax = Math.max(hmax, p[0] * 1.05);
    vmax = Math.max(vmax, p[1] * 1.3);
  }
  const plotW = WIDTH - MARGIN.left - MARGIN.right, plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const ytop = symlog(vmax);
  const x = (h) => MARGIN.left + (h / hmax) * plotW;
  const y = (v) => MARGIN.top + plotH - (symlog(v) / ytop) * plotH;
  const inverseY = (py) => {  // pixel row -> varentropy, for the regions
    const s = ((MARGIN.top + plotH - py) / plotH) * ytop;
    return s <= LINSCALE ? (s / LINSCALE) * LINTHRESH : LINTHRESH * Math.pow(10, s - LINSCALE);
  };
  ctx.clearRect(0, 0, WIDTH, HEIGHT);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, WIDTH, HEIGHT);

  // Regions, in 4-pixel cells, translucent; hatched where attention bounds also decide.
  const cell = 4;
  for (let py = MARGIN.top; py < MARGIN.top + plotH; py += cell) {
    const v = inverseY(py + cell / 2);
    for (let px = MARGIN.left; px < MARGIN.left + plotW; px += cell) {
      const h = ((px + cell / 2 - MARGIN.left) / plotW) * hmax;
      const r = region(profile, h, v);
      ctx.globalAlpha = r.partial && ((px + py) / cell) % 4 === 0 ? 0.35 : 0.18;
      ctx.fillStyle = color(r.regime);
      ctx.fillRect(px, py, cell, cell);
    }
  }
  ctx.globalAlpha = 0.7;
  ctx.setLineDash([5, 4]);
  ctx.lineWidth = 1;
  for (const rule of profile.rules || []) {  // threshold lines
    for (const b of rule.bounds) {
      ctx.strokeStyle = color(rule.regime);
      ctx.beginPath();
      if (b.metric === "logits_entropy" && b.value <= hmax) {
        ctx.moveTo(x(b.value), MARGIN.top);
        ctx.lineTo(x(b.value), MARGIN.top + plotH);
      } else if (b.metric === "logits_varentropy" && b.value <= vmax) {
        ctx.moveTo(MARGIN.left, y(b.value));
        ctx.lineTo(MARGIN.left + plotW, y(b.value));
      }
      ctx.stroke();
    }
  }
  ctx.setLineDash([]);
  ctx.globalAlpha = 1;

  // Axes and ticks.
  ctx.strokeStyle = "#444";
  ctx.fillStyle = "#444";
  ctx.font = "11px system-ui, sans-serif";
  ctx.strokeRect(MARGIN.left, MARGIN.top, plotW, plotH);
  ctx.textAlign = "center";
  for (let h = 0; h <= hmax; h += hmax > 12 ? 2 : 1) ctx.fillText(String(h), x(h), MARGIN.top + plotH + 14);
  ctx.fillText("logits entropy (bits)", MARGIN.left + plotW / 2, HEIGHT - 4);
  ctx.textAlign = "right";
  for (const v of [0, 0.1, 1, 10, 100, 1000]) {
    if (v <= vmax) ctx.fillText(String(v), MARGIN.left - 4, y(v) + 4);
  }
  ctx.save();
  ctx.translate(12, MARGIN.top + plotH / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = "center";
  ctx.fillText("logits varentropy (bits², symlog)", 0, 0);
  ctx.restore();

  // Dots, oldest first so the newest are on top; full colour.
  for (const p of points) {
    ctx.fillStyle = color(regimes[p[2]]);
    ctx.beginPath();
    ctx.arc(x(p[0]), y(p[1]), 3, 0, 2 * Math.PI);
    ctx.fill();
  }
}

function drawMix(v, profile) {
  const counts = profile.counts || {};
  const total = profile.steps || 0;
  v.mix.replaceChildren();
  v.legend.replaceChildren();
  for (const [regime, n] of Object.entries(counts).sort((a, b) => b[1] - a[1])) {
    const share = total ? n / total : 0;
    const bar = document.createElement("div");
    bar.style.width = (100 * share).toFixed(2) + "%";
    bar.style.background = color(regime);
    bar.title = regime + ": " + n;
    v.mix.appendChild(bar);
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = color(regime);
    item.append(swatch, regime + " " + n + " (" + (100 * share).toFixed(1) + "%)");
    v.legend.appendChild(item);
  }
  const shown = document.createElement("span");
  shown.textContent = "· " + (profile.points || []).length + " recent steps drawn, " + total + " steps in all";
  v.legend.appendChild(shown);
}

function drawRate(v, profile, now) {
  const steps = profile.steps || 0;
  if (v.last && now > v.last.time) {
    const rate = Math.max(0, (steps - v.last.steps) / ((now - v.last.time) / 1000));
    v.rate.textContent = rate.toFixed(1) + " steps/s";
  } else {
    v.rate.textContent = "";
  }
  v.last = { steps, time: now };
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const response = await fetch("live/steps", { cache: "no-store" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    const data = await response.json();
    const now = performance.now();
    // Profiles with steps first, each group in the server's order.
    const ordered = data.profiles.filter((p) => p.steps > 0).concat(data.profiles.filter((p) => !(p.steps > 0)));
    const container = document.getElementById("profiles");
    for (const profile of ordered) {
      const v = view(profile.name);
      drawScatter(v.canvas, profile, data.regimes);
      drawMix(v, profile);
      drawRate(v, profile, now);
      container.appendChild(v.root);  // moves it into place
    }
    status.className = "";
    status.textContent = "updated " + new Date().toLocaleTimeString() + " · " + data.profiles.length +
        " profiles · every " + REFRESH_MS / 1000 + " s";
  } catch (e) {
    status.className = "error";
    status.textContent = "cannot read live/steps: " + e.message;
  }
  setTimeout(refresh, REFRESH_MS);
}

refresh();
