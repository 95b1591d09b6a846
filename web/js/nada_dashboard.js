// StyleGAN-NADA: live training dashboard on the "Adapt Generator (NADA)" and "Train Latent Mapper" nodes.
//
// Loss curve, iteration counter + ETA, the latest preview grid and (with adaptive layer freezing)
// a heat map of the W+ indices trained at each iteration. Data: websocket messages sent by
// nodes/dashboard.py (nada.train.start / progress / end, keyed by node id) and, after a page reload
// or when a run ends, the run's history from GET /nada/train/{node}.
// The logic lives in dashboard_core.js (tested with `node --test tests/js/`); this file is the DOM.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";
import {
  EVENTS,
  applyHistory,
  createRedrawScheduler,
  formatLoss,
  heatColor,
  heatmap,
  initialState,
  lossPath,
  matchNodeId,
  reduce,
  statusLine,
  wsLabel,
} from "./dashboard_core.js";
import { el } from "./dom.js";

export const NODE_TYPE = "NADAAdaptGenerator";
/** Nodes that get the panel, with where their snapshots / partial results go and what the preview shows. */
export const NODE_KINDS = {
  NADAAdaptGenerator: { folder: "models/stylegan", loader: "Load StyleGAN", bottom: "adapted" },
  NADATrainLatentMapper: { folder: "models/stylegan_mappers", loader: "Load Latent Mapper", bottom: "mapped" },
};
const WIDGET_NAME = "nada_dashboard";
const CURVE_W = 320;
const CURVE_H = 90;
const HEAT_COLS = 60;
const SVG_NS = "http://www.w3.org/2000/svg";

/** Live panels, one per Adapt Generator node in the graph (exported for tests). */
export const panels = new Set();

function injectStyle() {
  if (document.getElementById("nada-dashboard-style")) return;
  const s = document.createElement("style");
  s.id = "nada-dashboard-style";
  s.textContent = `
.nada-dash { display:flex; flex-direction:column; gap:4px; font:11px/1.3 sans-serif; color:var(--input-text,#ddd);
  background:var(--comfy-input-bg,#222); border-radius:6px; padding:6px; box-sizing:border-box; overflow:hidden;
  width:100%; height:100%; }
.nada-dash .nada-status { white-space:nowrap; overflow:hidden; text-overflow:ellipsis; font-variant-numeric:tabular-nums; }
.nada-dash .nada-bar { height:4px; background:rgba(128,128,128,.25); border-radius:2px; overflow:hidden; }
.nada-dash .nada-bar > div { height:100%; width:0; background:#4a9eff; transition:width .2s; }
.nada-dash[data-status=done] .nada-bar > div { background:#3fb950; }
.nada-dash[data-status=interrupted] .nada-bar > div, .nada-dash[data-status=error] .nada-bar > div { background:#e5534b; }
.nada-dash .nada-curve { position:relative; height:${CURVE_H}px; flex:none; }
.nada-dash .nada-curve svg { width:100%; height:100%; display:block; background:rgba(0,0,0,.25); border-radius:4px; }
.nada-dash .nada-curve path { fill:none; stroke:#4a9eff; stroke-width:1.5; vector-effect:non-scaling-stroke; }
.nada-dash .nada-axis { position:absolute; right:4px; font-size:9px; opacity:.75; pointer-events:none; }
.nada-dash .nada-heat-wrap { display:none; flex:none; }
.nada-dash .nada-heat-wrap.on { display:block; }
.nada-dash .nada-heat-row { display:flex; gap:3px; align-items:stretch; }
.nada-dash .nada-heat-axis { display:flex; flex-direction:column; justify-content:space-between; font-size:9px; opacity:.75; }
.nada-dash canvas.nada-heat { flex:1; min-width:0; height:60px; display:block; image-rendering:pixelated; border-radius:3px; }
.nada-dash .nada-caption { font-size:9px; opacity:.75; }
.nada-dash .nada-preview { flex:1 1 auto; min-height:60px; display:flex; align-items:center; justify-content:center; }
.nada-dash .nada-preview img { max-width:100%; max-height:100%; object-fit:contain; border-radius:3px; display:none; }
.nada-dash .nada-message { color:#e5534b; font-size:10px; white-space:normal; overflow-wrap:anywhere; flex:none; }
.nada-dash .nada-message.kept { color:var(--input-text,#ddd); }
.nada-dash .nada-snaps { font-size:10px; opacity:.85; white-space:nowrap; overflow:hidden; text-overflow:ellipsis; flex:none; display:none; }
.nada-dash .nada-snaps.on { display:block; }
.nada-dash[data-status=idle] .nada-bar, .nada-dash[data-status=idle] .nada-curve,
.nada-dash[data-status=idle] .nada-preview { display:none; }
.nada-dash[data-status=idle] { height:auto; }
`;
  document.head.appendChild(s);
}

class Panel {
  constructor(node) {
    this.node = node;
    this.kind = Object.prototype.hasOwnProperty.call(NODE_KINDS, node.comfyClass ?? "") ? NODE_KINDS[node.comfyClass] : NODE_KINDS[NODE_TYPE];
    this.state = initialState();
    this.drawnVersion = -1;
    this.abort = null;
    this.restoreTimer = null;
    this.disposed = false;
    this.build();
    this.scheduler = createRedrawScheduler(
      () => this.draw(),
      (cb) => (typeof requestAnimationFrame === "function" ? requestAnimationFrame(cb) : setTimeout(cb, 16)),
      (h) => (typeof cancelAnimationFrame === "function" ? cancelAnimationFrame(h) : clearTimeout(h)),
    );
  }

  get key() {
    return String(this.node.id);
  }

  build() {
    injectStyle();
    const root = el("div", "nada-dash");
    root.dataset.status = "idle";
    this.root = root;
    this.statusEl = el("div", "nada-status", root, statusLine(this.state));
    this.barEl = el("div", null, el("div", "nada-bar", root));
    const curve = el("div", "nada-curve", root);
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", `0 0 ${CURVE_W} ${CURVE_H}`);
    svg.setAttribute("preserveAspectRatio", "none");
    this.pathEl = document.createElementNS(SVG_NS, "path");
    svg.appendChild(this.pathEl);
    curve.appendChild(svg);
    this.maxEl = el("div", "nada-axis", curve);
    this.maxEl.style.top = "2px";
    this.minEl = el("div", "nada-axis", curve);
    this.minEl.style.bottom = "2px";
    this.heatWrap = el("div", "nada-heat-wrap", root);
    const heatRow = el("div", "nada-heat-row", this.heatWrap);
    const axis = el("div", "nada-heat-axis", heatRow);
    el("span", null, axis, "w0");
    this.heatLast = el("span", null, axis, "");
    this.heatCanvas = el("canvas", "nada-heat", heatRow);
    this.heatCanvas.addEventListener("mousemove", (e) => this.heatHover(e));
    this.heatCaption = el("div", "nada-caption", this.heatWrap,
      "Layers trained per iteration (adaptive freezing): rows w0 (coarse, top) to fine (bottom), time left to right");
    this.previewWrap = el("div", "nada-preview", root);
    this.img = el("img", null, this.previewWrap);
    this.img.alt = `latest preview: top row source, bottom row ${this.kind.bottom}`;
    this.snapsEl = el("div", "nada-snaps", root);
    this.msgEl = el("div", "nada-message", root);
  }

  apply(type, msg) {
    const before = this.state;
    this.state = reduce(this.state, type, msg);
    if (this.state !== before) this.scheduler.schedule();
    // Progress messages are throttled: when a run ends, fetch its full history to fill the gaps.
    if (type === EVENTS.end && this.state.run === msg.run) this.restore();
  }

  scheduleRestore(delay = 0) {
    if (this.disposed) return;
    clearTimeout(this.restoreTimer);
    this.restoreTimer = setTimeout(() => this.restore(), delay);
  }

  async restore() {
    if (this.disposed || this.node.id === undefined || this.node.id === null || this.node.id < 0) return;
    this.abort?.abort();
    const ctrl = new AbortController();
    this.abort = ctrl;
    try {
      const res = await api.fetchApi(`/nada/train/${encodeURIComponent(this.key)}`, { signal: ctrl.signal, cache: "no-store" });
      if (!res.ok) return;
      const hist = await res.json();   // {run: null} when this node has not trained yet
      if (this.disposed || ctrl.signal.aborted) return;
      const before = this.state;
      this.state = applyHistory(this.state, hist);
      if (this.state !== before) this.scheduler.schedule();
    } catch (e) {
      if (e?.name !== "AbortError") console.warn("[NADA dashboard] could not load the training history", e);
    } finally {
      if (this.abort === ctrl) this.abort = null;
    }
  }

  draw() {
    if (this.disposed) return;
    const s = this.state;
    if (s.version === this.drawnVersion) return;
    this.drawnVersion = s.version;
    this.root.dataset.status = s.status;
    this.root.dataset.step = String(s.step);
    this.root.dataset.points = String(s.points.length);
    this.root.dataset.layers = String(s.layers.length);
    this.root.dataset.run = s.run || "";
    this.statusEl.textContent = statusLine(s);
    this.statusEl.title = Object.entries(s.settings || {}).map(([k, v]) => `${k}: ${v}`).join("\n");
    this.barEl.style.width = s.total ? `${Math.min(100, (100 * s.step) / s.total)}%` : "0";
    const { d, min, max } = lossPath(s.points, CURVE_W, CURVE_H, { total: s.total });
    this.pathEl.setAttribute("d", d);
    this.maxEl.textContent = max === null ? "" : `max ${formatLoss(max)}`;
    this.minEl.textContent = min === null ? "" : `min ${formatLoss(min)}`;
    this.drawHeat();
    if (s.preview && this.img.getAttribute("src") !== s.preview) this.img.src = s.preview;
    this.img.style.display = s.preview ? "block" : "none";
    const stopped = s.status === "error" || s.status === "interrupted";
    this.msgEl.textContent = stopped ? (s.message || s.status) : "";
    this.msgEl.classList.toggle("kept", s.status === "interrupted");
    this.msgEl.title = s.saved ? `${this.kind.folder}/${s.saved}` : "";
    const snaps = s.snapshots || [];
    this.snapsEl.classList.toggle("on", snaps.length > 0);
    this.snapsEl.textContent = snaps.length
      ? `snapshots (${this.kind.loader}): ${snaps.map((x) => x.step).join(", ")}` : "";
    this.snapsEl.title = snaps.map((x) => `step ${x.step}, loss ${formatLoss(x.loss)}: ${this.kind.folder}/${x.file}`).join("\n");
    if (s.status !== "idle" && !this.grown) this.grow();
    this.node.setDirtyCanvas?.(true, false);
  }

  /** A fresh node is compact (no run yet); the first run makes room for the curve and preview. */
  grow() {
    this.grown = true;
    const node = this.node;
    const need = node.computeSize?.();
    if (need && node.size && node.size[1] < need[1]) node.setSize?.([node.size[0], need[1]]);
  }

  drawHeat() {
    const s = this.state;
    const on = s.layers.length > 0;
    this.heatWrap.classList.toggle("on", on);
    if (!on) return;
    const hm = heatmap(s.layers, s.numWs, s.total, HEAT_COLS);
    const c = this.heatCanvas;
    if (c.width !== hm.cols || c.height !== hm.rows) {
      c.width = hm.cols;
      c.height = hm.rows;
    }
    const g = c.getContext("2d");
    for (let r = 0; r < hm.rows; r++) {
      for (let k = 0; k < hm.cols; k++) {
        g.fillStyle = heatColor(hm.cells[r][k]);
        g.fillRect(k, r, 1, 1);
      }
    }
    this.heatLast.textContent = `w${hm.rows - 1}`;
    this.hm = hm;
    const top = hm.counts.map((n, i) => [n, i]).sort((a, b) => b[0] - a[0]).slice(0, 5)
      .map(([n, i]) => `${wsLabel(i, hm.rows)}: ${n}/${hm.steps}`);
    this.heatSummary = `Most trained W+ indices: ${top.join(", ")}`;
    c.title = this.heatSummary;
  }

  heatHover(e) {
    const hm = this.hm;
    if (!hm) return;
    const r = this.heatCanvas.getBoundingClientRect();
    const row = Math.min(hm.rows - 1, Math.max(0, Math.floor(((e.clientY - r.top) / r.height) * hm.rows)));
    const col = Math.min(hm.cols - 1, Math.max(0, Math.floor(((e.clientX - r.left) / r.width) * hm.cols)));
    const span = Math.max(this.state.total, this.state.step, 1);
    const from = Math.floor((col * span) / hm.cols) + 1;
    const to = Math.floor(((col + 1) * span) / hm.cols);
    const v = hm.cells[row][col];
    const cell = v === null ? "no data" : `trained in ${Math.round(v * 100)}% of the iterations`;
    this.heatCanvas.title = `${wsLabel(row, hm.rows)}, iterations ${from}-${to}: ${cell}\n${this.heatSummary}`;
  }

  dispose() {
    this.disposed = true;
    this.scheduler.cancel();
    clearTimeout(this.restoreTimer);
    this.abort?.abort();
    this.abort = null;
    this.root.remove();
    panels.delete(this);
  }
}

function panelFor(nodeId) {
  const byKey = new Map();
  for (const p of panels) byKey.set(p.key, p);
  const key = matchNodeId(nodeId, byKey.keys());
  return key === null ? null : byKey.get(key);
}

function onMessage(type) {
  return (event) => {
    const msg = event?.detail;
    if (!msg || msg.node === undefined) return;
    panelFor(msg.node)?.apply(type, msg);
  };
}

function attach(node) {
  if (node.__nadaPanel) return node.__nadaPanel;
  const panel = new Panel(node);
  node.__nadaPanel = panel;
  panels.add(panel);
  const widget = node.addDOMWidget(WIDGET_NAME, "nada_dashboard", panel.root, {
    serialize: false,          // not part of widgets_values
    hideOnZoom: false,
    // compact until there is something to show (a status line), room for curve + preview after
    getMinHeight: () => (panel.state.status === "idle" ? 34 : 300),
  });
  widget.serialize = false;
  panel.widget = widget;
  const minW = 360;
  if (node.size && node.size[0] < minW) node.setSize?.([minW, node.size[1]]);
  return panel;
}

app.registerExtension({
  name: "stylegan_nada.dashboard",

  setup() {
    api.addEventListener(EVENTS.start, onMessage(EVENTS.start));
    api.addEventListener(EVENTS.progress, onMessage(EVENTS.progress));
    api.addEventListener(EVENTS.snapshot, onMessage(EVENTS.snapshot));
    api.addEventListener(EVENTS.end, onMessage(EVENTS.end));
    // After a reconnect (e.g. the server restarted or the tab slept), catch up from the history.
    api.addEventListener("reconnected", () => {
      for (const p of panels) p.scheduleRestore(0);
    });
    for (const p of panels) p.scheduleRestore(0);
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!Object.prototype.hasOwnProperty.call(NODE_KINDS, nodeData?.name ?? "")) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      attach(this);
      return r;
    };
    // The id is final once the node is in a graph (new, pasted or loaded): fetch the history then,
    // so a page reloaded mid-training shows what has arrived so far.
    const onAdded = nodeType.prototype.onAdded;
    nodeType.prototype.onAdded = function () {
      const r = onAdded?.apply(this, arguments);
      this.__nadaPanel?.scheduleRestore(50);
      return r;
    };
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const r = onConfigure?.apply(this, arguments);
      this.__nadaPanel?.scheduleRestore(50);
      return r;
    };
    const onRemoved = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function () {
      const r = onRemoved?.apply(this, arguments);
      this.__nadaPanel?.dispose();
      this.__nadaPanel = null;
      return r;
    };
  },
});
