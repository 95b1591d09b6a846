// StyleGAN-NADA: preview t on "Interpolate Models (NADA)" and "Render Domain Transition (NADA)"
// without re-running the graph.
//
// After the node has run once, the server keeps (weak) references to the generators it ran with
// (nodes/dashboard.py: remember_blend_inputs). Dragging the slider asks
// POST /nada/blend_preview/{node} {t: [..], seed, count} to render the blend at that t with those
// models: one small forward pass per frame, no queue, no other node re-run. "Strip" renders 5
// frames from t = 0 to 1. On Interpolate Models, "use t" copies the slider into the t widget for
// the next run. t runs over the whole model sequence (A -> B -> C -> D) on the transition node,
// linearly (the video's easing is not applied).
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";
import { createLatestRequester, previewTs } from "./dashboard_core.js";
import { el } from "./dom.js";

export const NODE_TYPES = ["NADAInterpolateModels", "NADARenderTransition"];
const STRIP_FRAMES = 5;

/** Live preview widgets (exported for tests). */
export const previews = new Set();

function injectStyle() {
  if (document.getElementById("nada-blend-style")) return;
  const s = document.createElement("style");
  s.id = "nada-blend-style";
  s.textContent = `
.nada-blend { display:flex; flex-direction:column; gap:4px; font:11px/1.3 sans-serif; color:var(--input-text,#ddd);
  background:var(--comfy-input-bg,#222); border-radius:6px; padding:6px; box-sizing:border-box; width:100%; height:100%; overflow:hidden; }
.nada-blend .row { display:flex; gap:4px; align-items:center; }
.nada-blend input[type=range] { flex:1; min-width:0; }
.nada-blend input[type=number] { width:64px; background:transparent; color:inherit; border:1px solid rgba(128,128,128,.4); border-radius:3px; }
.nada-blend button { background:rgba(128,128,128,.2); color:inherit; border:1px solid rgba(128,128,128,.4); border-radius:3px;
  padding:1px 6px; cursor:pointer; font:inherit; }
.nada-blend .tval { width:34px; text-align:right; font-variant-numeric:tabular-nums; }
.nada-blend .view { flex:1 1 auto; min-height:60px; display:flex; align-items:center; justify-content:center; gap:2px; }
.nada-blend .view img { max-width:100%; max-height:100%; object-fit:contain; border-radius:3px; cursor:pointer; }
.nada-blend .strip img { max-width:${Math.floor(100 / STRIP_FRAMES) - 1}%; }
.nada-blend .msg { font-size:10px; opacity:.8; white-space:nowrap; overflow:hidden; text-overflow:ellipsis; }
.nada-blend .msg.err { color:#e5a54b; opacity:1; }
`;
  document.head.appendChild(s);
}

class BlendPreview {
  constructor(node) {
    this.node = node;
    this.disposed = false;
    this.used = false;
    this.build();
    this.requester = createLatestRequester(
      (args) => this.send(args),
      (res, args) => this.show(res, args),
      (err) => this.fail(err),
    );
  }

  get key() {
    return String(this.node.id);
  }

  get tWidget() {
    return this.node.comfyClass === "NADAInterpolateModels" ? this.node.widgets?.find((w) => w.name === "t") : null;
  }

  build() {
    injectStyle();
    const root = el("div", "nada-blend");
    this.root = root;
    const row = el("div", "row", root);
    el("span", null, row, "t");
    this.slider = el("input", null, row);
    Object.assign(this.slider, { type: "range", min: "0", max: "1", step: "0.01", value: "0.5" });
    this.slider.title = "Preview the blend at this t with the models of the last run (no re-run)";
    this.tval = el("span", "tval", row, "0.50");
    const row2 = el("div", "row", root);
    el("span", null, row2, "seed");
    this.seed = el("input", null, row2);
    Object.assign(this.seed, { type: "number", min: "0", step: "1", value: "0" });
    this.seed.title = "Seed of the previewed latent (Interpolate Models; the transition node previews its own latents)";
    const strip = el("button", null, row2, "strip");
    strip.title = `Render ${STRIP_FRAMES} frames from t = 0 to 1`;
    if (this.node.comfyClass === "NADAInterpolateModels") {
      const use = el("button", null, row2, "use t");
      use.title = "Copy this t into the node's t widget (used by the next run)";
      use.addEventListener("click", () => {
        const w = this.tWidget;
        if (!w) return;
        w.value = Number(this.slider.value);
        w.callback?.(w.value);
        this.node.setDirtyCanvas?.(true, true);
      });
    }
    this.view = el("div", "view", root);
    this.msg = el("div", "msg", root, "Run the workflow once, then drag t to preview without re-running.");
    // keep the canvas from treating slider drags as node drags
    for (const e of ["pointerdown", "mousedown", "wheel"]) root.addEventListener(e, (ev) => ev.stopPropagation());
    this.slider.addEventListener("input", () => {
      this.tval.textContent = Number(this.slider.value).toFixed(2);
      this.request([Number(this.slider.value)]);
    });
    this.seed.addEventListener("change", () => this.request([Number(this.slider.value)]));
    strip.addEventListener("click", () => this.request(previewTs(STRIP_FRAMES)));
  }

  syncFromWidget() {
    const w = this.tWidget;
    if (w && Number.isFinite(Number(w.value))) {
      this.slider.value = String(w.value);
      this.tval.textContent = Number(w.value).toFixed(2);
    }
  }

  request(ts) {
    if (this.disposed) return;
    this.used = true;
    this.msg.classList.remove("err");
    this.msg.textContent = ts.length > 1 ? "rendering the strip..." : `rendering t = ${ts[0].toFixed(2)}...`;
    this.requester.request({ t: ts, seed: Math.max(0, Math.floor(Number(this.seed.value) || 0)), count: 1 });
  }

  async send(args) {
    const res = await api.fetchApi(`/nada/blend_preview/${encodeURIComponent(this.key)}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(args),
    });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(body.error || `HTTP ${res.status}`);
    return body;
  }

  show(res, args) {
    if (this.disposed) return;
    if (!res.frames?.length) {   // the node has not run yet (or its models left the cache)
      this.msg.classList.add("err");
      this.msg.textContent = res.message || "nothing to preview yet";
      this.root.dataset.error = this.msg.textContent;
      return;
    }
    this.view.replaceChildren();
    this.view.classList.toggle("strip", res.frames.length > 1);
    for (const f of res.frames) {
      const img = el("img", null, this.view);
      img.src = f.image;
      img.title = `t = ${f.t.toFixed(2)}`;
      img.dataset.t = String(f.t);
      img.addEventListener("click", () => {
        this.slider.value = String(f.t);
        this.tval.textContent = f.t.toFixed(2);
        this.request([f.t]);
      });
    }
    const names = (res.names || []).join(" → ");
    const what = args.t.length > 1 ? `${args.t.length} frames, t = 0..1` : `t = ${args.t[0].toFixed(2)}`;
    this.msg.textContent = `${what} · ${names} · latents: ${res.latents}`;
    this.root.dataset.frames = String(res.frames.length);
    this.node.setDirtyCanvas?.(true, false);
  }

  fail(err) {
    if (this.disposed) return;
    this.msg.classList.add("err");
    this.msg.textContent = String(err?.message || err);
    this.root.dataset.error = this.msg.textContent;
  }

  dispose() {
    this.disposed = true;
    this.requester.dispose();
    this.root.remove();
    previews.delete(this);
  }
}

app.registerExtension({
  name: "stylegan_nada.blend_preview",

  setup() {
    // new models after a run: refresh the previews that are in use
    api.addEventListener("execution_success", () => {
      for (const p of previews) if (p.used) p.request([Number(p.slider.value)]);
    });
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODE_TYPES.includes(nodeData?.name)) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      const p = new BlendPreview(this);
      this.__nadaBlend = p;
      previews.add(p);
      const widget = this.addDOMWidget("nada_t_preview", "nada_t_preview", p.root, {
        serialize: false,
        hideOnZoom: false,
        getMinHeight: () => 200,
      });
      widget.serialize = false;
      p.syncFromWidget();
      return r;
    };
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const r = onConfigure?.apply(this, arguments);
      this.__nadaBlend?.syncFromWidget();
      return r;
    };
    const onRemoved = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function () {
      const r = onRemoved?.apply(this, arguments);
      this.__nadaBlend?.dispose();
      this.__nadaBlend = null;
      return r;
    };
  },
});
