// Pure logic of the StyleGAN-NADA training dashboard (no DOM, no ComfyUI imports), so that
// node's own test runner can import it: `node --test tests/js/`.
//
// Messages from the backend (nodes/dashboard.py), all keyed by the node id:
//   nada.train.start    {node, run, total, num_ws, settings}
//   nada.train.progress {node, run, step, total, loss, elapsed, eta, layers, num_ws, preview?}
//   nada.train.snapshot {node, run, step, loss, file}   (a generator saved during training)
//   nada.train.end      {node, run, status: done|interrupted|error, steps, message, saved}
// History of the latest run: GET /nada/train/{node}
//   {node, run, total, num_ws, status, points: [[step, loss]], layers: [list|null], preview, settings, step,
//    snapshots: [{step, loss, file}], saved}  -- or {node, run: null, status: "idle"} before the first run
//
// Progress messages are throttled by the backend (a few per second), so the reducer never assumes
// consecutive steps; the history fills the gaps after a page reload and when a run ends.

export const EVENTS = Object.freeze({
  start: "nada.train.start",
  progress: "nada.train.progress",
  snapshot: "nada.train.snapshot",
  end: "nada.train.end",
});

export const MAX_POINTS = 5000;

/** An empty panel state. */
export function initialState() {
  return {
    run: null,          // id of the run shown
    status: "idle",     // idle | running | done | interrupted | error
    total: 0,
    step: 0,
    numWs: 0,
    loss: null,
    elapsed: null,
    eta: null,
    points: [],         // [[step, loss], ...] sorted by step, unique steps
    layers: [],         // [[step, [W+ indices]], ...] sorted by step (adaptive freezing only)
    preview: null,      // data URL of the latest preview grid
    settings: {},
    message: "",
    snapshots: [],      // [{step, loss, file}] generators saved during the run (save_every)
    saved: "",          // the partial generator kept by a run that stopped early
    endedRuns: [],      // runs known to be over (late messages of those are ignored)
    version: 0,         // bumped on every change (cheap "needs redraw" check)
  };
}

function num(x, fallback = null) {
  const v = Number(x);
  return x === null || x === undefined || !Number.isFinite(v) ? fallback : v;
}

/** Insert [step, value] into a step-sorted array, replacing an existing entry of the same step. */
export function upsertByStep(arr, step, value) {
  const n = arr.length;
  if (n === 0 || arr[n - 1][0] < step) {
    arr.push([step, value]);
    return arr;
  }
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (arr[mid][0] < step) lo = mid + 1;
    else hi = mid;
  }
  if (lo < n && arr[lo][0] === step) arr[lo] = [step, value];
  else arr.splice(lo, 0, [step, value]);
  return arr;
}

function capPoints(arr) {
  if (arr.length > MAX_POINTS) arr.splice(0, arr.length - MAX_POINTS);
  return arr;
}

function freshRun(state, run, total, numWs, settings) {
  return {
    ...initialState(),
    run,
    status: "running",
    total: num(total, 0),
    numWs: num(numWs, 0),
    settings: settings || {},
    endedRuns: state.endedRuns,
    version: state.version + 1,
  };
}

/**
 * Apply one websocket message. Returns a new state object (the input is not modified, except
 * that the point arrays are shared with the result and appended to in place for speed).
 */
export function reduce(state, type, msg) {
  if (!msg || typeof msg !== "object") return state;
  const run = msg.run ?? null;
  if (type === EVENTS.start || type === "start") {
    if (run !== null && state.endedRuns.includes(run)) return state;
    return freshRun(state, run, msg.total, msg.num_ws, msg.settings);
  }
  if (type === EVENTS.progress || type === "progress") {
    if (run !== null && state.endedRuns.includes(run)) return state;
    let s = state;
    if (run !== state.run) {
      // The start message was missed (page opened mid-run): adopt the run.
      s = freshRun(state, run, msg.total, msg.num_ws, {});
    } else {
      s = { ...state };
    }
    const step = num(msg.step, 0);
    const loss = num(msg.loss);
    s.status = "running";
    s.total = num(msg.total, s.total);
    s.numWs = num(msg.num_ws, s.numWs);
    if (step >= s.step) {
      s.step = step;
      s.loss = loss;
      s.elapsed = num(msg.elapsed);
      s.eta = num(msg.eta);
    }
    if (loss !== null) s.points = capPoints(upsertByStep(s.points, step, loss));
    if (Array.isArray(msg.layers)) s.layers = capPoints(upsertByStep(s.layers, step, msg.layers.map(Number)));
    if (msg.preview) s.preview = msg.preview;
    s.version = state.version + 1;
    return s;
  }
  if (type === EVENTS.snapshot || type === "snapshot") {
    if (run === null || run !== state.run || typeof msg.file !== "string") return state;
    const step = num(msg.step, 0);
    const snapshots = state.snapshots.filter((x) => x.step !== step);
    snapshots.push({ step, loss: num(msg.loss), file: msg.file });
    snapshots.sort((a, b) => a.step - b.step);
    return { ...state, snapshots, version: state.version + 1 };
  }
  if (type === EVENTS.end || type === "end") {
    const ended = run !== null && !state.endedRuns.includes(run)
      ? [...state.endedRuns.slice(-19), run] : state.endedRuns;
    if (run !== null && state.run !== null && run !== state.run) {
      return { ...state, endedRuns: ended };   // end of some older run
    }
    const status = ["done", "interrupted", "error"].includes(msg.status) ? msg.status : "done";
    const steps = num(msg.steps, state.step);
    return {
      ...state,
      run: run ?? state.run,
      status,
      step: status === "error" && steps === 0 ? state.step : Math.max(state.step, steps),
      eta: status === "done" ? 0 : null,
      message: msg.message || "",
      saved: typeof msg.saved === "string" ? msg.saved : state.saved,
      endedRuns: ended,
      version: state.version + 1,
    };
  }
  return state;
}

/** Snapshots from a served history: well-formed entries only, sorted by step. */
function historySnapshots(list) {
  if (!Array.isArray(list)) return null;
  return list.filter((x) => x && typeof x.file === "string" && num(x.step) !== null)
    .map((x) => ({ step: num(x.step), loss: num(x.loss), file: x.file }))
    .sort((a, b) => a.step - b.step);
}

/**
 * Merge the history served by GET /nada/train/{node} (after a page reload, or to fill the gaps
 * of throttled messages when a run ends). Live messages that arrived while the request was in
 * flight are kept: a history of another run replaces the state only if nothing live is known.
 */
export function applyHistory(state, hist) {
  if (!hist || typeof hist !== "object" || !hist.run) return state;
  if (hist.run !== state.run) {
    // A running run seen live is at least as new as the history (the request may have been sent
    // before it started); a run known to have ended is older than the one shown.
    if (state.status === "running" || state.endedRuns.includes(hist.run)) return state;
  } else if (state.endedRuns.includes(hist.run) && hist.status === "running") {
    hist = { ...hist, status: state.status };   // the end message overtook the request
  }
  const base = hist.run === state.run ? { ...state } : { ...freshRun(state, hist.run, hist.total, hist.num_ws, hist.settings) };
  const pts = Array.isArray(hist.points) ? hist.points : [];
  const lays = Array.isArray(hist.layers) ? hist.layers : [];
  const points = [];
  const layers = [];
  for (let i = 0; i < pts.length; i++) {
    const p = pts[i];
    if (!Array.isArray(p) || p.length < 2) continue;
    const step = num(p[0]);
    const loss = num(p[1]);
    if (step === null || loss === null) continue;
    upsertByStep(points, step, loss);
    if (Array.isArray(lays[i])) upsertByStep(layers, step, lays[i].map(Number));
  }
  // keep live entries the history does not have yet
  for (const [step, loss] of base.points) if (!points.length || step > points[points.length - 1][0]) points.push([step, loss]);
  for (const [step, l] of base.layers) if (!layers.length || step > layers[layers.length - 1][0]) layers.push([step, l]);
  const histStep = num(hist.step, points.length ? points[points.length - 1][0] : 0);
  const out = {
    ...base,
    total: num(hist.total, base.total),
    numWs: num(hist.num_ws, base.numWs),
    settings: hist.settings || base.settings,
    points: capPoints(points),
    layers: capPoints(layers),
    preview: base.preview || hist.preview || null,
    snapshots: historySnapshots(hist.snapshots) ?? base.snapshots,
    saved: typeof hist.saved === "string" && hist.saved ? hist.saved : base.saved,
    version: state.version + 1,
  };
  if (histStep > out.step || (out.elapsed === null && histStep === out.step)) {
    out.step = histStep;
    const last = points[points.length - 1];
    if (last) out.loss = last[1];
    const elapsed = num(hist.elapsed);
    if (elapsed !== null) {
      out.elapsed = elapsed;
      out.eta = histStep > 0 ? (elapsed / histStep) * Math.max(0, out.total - histStep) : null;
    }
  }
  const hs = hist.status;
  if (hs && hs !== "running") {
    out.status = hs;
    out.message = hist.message || out.message;
    if (!out.endedRuns.includes(hist.run)) out.endedRuns = [...out.endedRuns.slice(-19), hist.run];
    if (hs === "done") out.eta = 0;
  } else if (out.status === "idle") {
    out.status = "running";
  }
  if (hist.preview && hist.run === state.run && hs && hs !== "running") out.preview = hist.preview;
  return out;
}

/** "0:07", "2:05", "1:02:03"; "–" for unknown. */
export function formatDuration(seconds) {
  const s = num(seconds);
  if (s === null || s < 0) return "–";
  const t = Math.round(s);
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const sec = t % 60;
  const pad = (x) => String(x).padStart(2, "0");
  return h > 0 ? `${h}:${pad(m)}:${pad(sec)}` : `${m}:${pad(sec)}`;
}

/** Loss with 4 significant digits ("0.8123", "1.234e-5"); "–" for unknown. */
export function formatLoss(loss) {
  const v = num(loss);
  if (v === null) return "–";
  if (v !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e4)) return v.toExponential(3);
  return v.toPrecision(4);
}

/** One line for the panel header. */
export function statusLine(state) {
  if (state.status === "idle") return "No training run yet: queue the workflow.";
  const pct = state.total ? Math.floor((100 * state.step) / state.total) : 0;
  const parts = [`${state.step}/${state.total} (${pct}%)`, `loss ${formatLoss(state.loss)}`];
  if (state.elapsed !== null) parts.push(`${formatDuration(state.elapsed)} elapsed`);
  if (state.status === "running") parts.push(`ETA ${formatDuration(state.eta)}`);
  else parts.push(state.status);
  return parts.join(" · ");
}

/**
 * Reduce points to at most ~2 per horizontal pixel (min and max of each bucket), keeping the
 * first and last point: the curve keeps its spikes and drawing stays O(width).
 */
export function downsample(points, buckets) {
  if (points.length <= 2 * buckets) return points.slice();
  const x0 = points[0][0];
  const x1 = points[points.length - 1][0];
  const span = Math.max(x1 - x0, 1e-9);
  const out = [points[0]];
  let cur = -1;
  let lo = null;
  let hi = null;
  const flush = () => {
    if (lo === null) return;
    if (lo === hi) out.push(lo);
    else if (lo[0] < hi[0]) out.push(lo, hi);
    else out.push(hi, lo);
  };
  for (let i = 1; i < points.length - 1; i++) {
    const p = points[i];
    const b = Math.min(buckets - 1, Math.floor(((p[0] - x0) / span) * buckets));
    if (b !== cur) {
      flush();
      cur = b;
      lo = p;
      hi = p;
    } else {
      if (p[1] < lo[1]) lo = p;
      if (p[1] > hi[1]) hi = p;
    }
  }
  flush();
  out.push(points[points.length - 1]);
  return out;
}

/**
 * SVG path ("M x y L x y ...") of the loss curve in a width x height box with `pad` pixels of
 * margin. x spans [1, max(total, last step)] so the curve grows from left to right while training.
 * Returns {d, min, max, xMax}; d is "" with fewer than one point.
 */
export function lossPath(points, width, height, { pad = 4, total = 0 } = {}) {
  if (!points.length) return { d: "", min: null, max: null, xMax: total };
  const pts = downsample(points, Math.max(1, Math.floor(width - 2 * pad)));
  let min = Infinity;
  let max = -Infinity;
  for (const [, v] of points) {
    if (v < min) min = v;
    if (v > max) max = v;
  }
  const xMin = Math.min(points[0][0], 1);
  const xMax = Math.max(total || 0, points[points.length - 1][0], xMin + 1);
  const range = max - min || Math.abs(max) || 1;
  const lo = max === min ? min - range / 2 : min;
  const hi = max === min ? max + range / 2 : max;
  const w = width - 2 * pad;
  const h = height - 2 * pad;
  const fx = (x) => (pad + ((x - xMin) / (xMax - xMin)) * w).toFixed(1);
  const fy = (y) => (pad + (1 - (y - lo) / (hi - lo)) * h).toFixed(1);
  const d = pts.map(([x, y], i) => `${i ? "L" : "M"}${fx(x)} ${fy(y)}`).join(" ");
  return { d, min, max, xMax };
}

/**
 * Heat map of the adaptive layer selection: rows = W+ indices (0 = coarsest), columns = bins of
 * iterations. cell = fraction of the recorded iterations of the bin that trained that index.
 * Bins cover [1, max(total, last step)]; bins without a recorded iteration are null.
 * Returns {rows, cols, cells (rows x cols array of arrays), counts (per index over the whole run), steps}.
 */
export function heatmap(layers, numWs, total, cols = 60) {
  const lastStep = layers.length ? layers[layers.length - 1][0] : 0;
  const span = Math.max(total || 0, lastStep, 1);
  const maxIdx = layers.reduce((m, [, l]) => Math.max(m, ...l, -1), -1);
  const rows = Math.max(num(numWs, 0), maxIdx + 1);
  const nCols = Math.max(1, Math.min(cols, span));
  const hits = Array.from({ length: rows }, () => new Array(nCols).fill(0));
  const seen = new Array(nCols).fill(0);
  const counts = new Array(rows).fill(0);
  for (const [step, l] of layers) {
    const c = Math.min(nCols - 1, Math.max(0, Math.floor(((step - 1) / span) * nCols)));
    seen[c] += 1;
    for (const i of l) {
      if (i >= 0 && i < rows) {
        hits[i][c] += 1;
        counts[i] += 1;
      }
    }
  }
  const cells = hits.map((row) => row.map((h, c) => (seen[c] ? h / seen[c] : null)));
  return { rows, cols: nCols, cells, counts, steps: layers.length };
}

/** Colour of a heat map cell (0..1, null = no data) as an rgb() string: dark blue -> yellow. */
export function heatColor(v) {
  if (v === null || v === undefined) return "rgba(128,128,128,0.12)";
  const t = Math.max(0, Math.min(1, v));
  const stops = [[0, [20, 24, 60]], [0.5, [200, 60, 90]], [1, [250, 220, 60]]];
  let a = stops[0];
  let b = stops[stops.length - 1];
  for (let i = 0; i < stops.length - 1; i++) {
    if (t >= stops[i][0] && t <= stops[i + 1][0]) {
      a = stops[i];
      b = stops[i + 1];
      break;
    }
  }
  const f = (t - a[0]) / (b[0] - a[0] || 1);
  const c = a[1].map((x, k) => Math.round(x + (b[1][k] - x) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

/**
 * Which registered node a message is for. The backend keys messages by ComfyUI's unique_id:
 * the node id, or "outer:inner" for a node inside a subgraph. Exact match first, then the last
 * path segment.
 */
export function matchNodeId(msgNode, keys) {
  const id = String(msgNode);
  const list = Array.from(keys, String);
  if (list.includes(id)) return id;
  const tail = id.includes(":") ? id.slice(id.lastIndexOf(":") + 1) : null;
  if (tail !== null && list.includes(tail)) return tail;
  return null;
}

/**
 * Coalesce bursts of updates into one redraw per animation frame (or timer tick). `request` is
 * requestAnimationFrame in the browser; any function(cb) -> handle works (tests pass a fake).
 */
export function createRedrawScheduler(draw, request, cancel) {
  let handle = null;
  let pending = false;
  return {
    schedule() {
      if (pending) return false;
      pending = true;
      handle = request(() => {
        pending = false;
        handle = null;
        draw();
      });
      return true;
    },
    cancel() {
      if (pending && cancel) cancel(handle);
      pending = false;
      handle = null;
    },
    get pending() {
      return pending;
    },
  };
}

/** W+ index -> rough layer name for tooltips ("4x4 conv", "8x8 conv0", ...), from the resolution. */
export function wsLabel(index, numWs) {
  const n = num(numWs, 0);
  if (!n) return `w${index}`;
  // index 0: 4x4 conv; 2k-1 and 2k: the two convs at 2^(k+2) px; the last one: the final ToRGB only
  // (nada_ops.stylegan.config.ws_layer_map is the reference).
  if (index === 0) return "w0 (4x4)";
  const finalRes = 2 ** ((n + 2) / 2);
  if (index === n - 1) return `w${index} (${finalRes}x${finalRes} RGB)`;
  const res = 2 ** (Math.floor((index + 1) / 2) + 2);
  return `w${index} (${res}x${res})`;
}

/** t values for a preview strip of `count` frames across [t0, t1] (both included). */
export function previewTs(count, t0 = 0, t1 = 1) {
  const n = Math.max(1, Math.floor(count));
  if (n === 1) return [Number(((t0 + t1) / 2).toFixed(4))];
  return Array.from({ length: n }, (_, i) => Number((t0 + ((t1 - t0) * i) / (n - 1)).toFixed(4)));
}

/**
 * At most one request in flight; while one runs, only the latest arguments are kept and sent
 * when it returns (a slider dragged fast sends the first and the last position, not every one).
 * `send(args)` returns a promise; `onResult(result, args)` / `onError(error, args)` get the outcome.
 */
export function createLatestRequester(send, onResult, onError) {
  let busy = false;
  let queued = null;
  let disposed = false;
  async function run(args) {
    busy = true;
    try {
      const r = await send(args);
      if (!disposed) onResult(r, args);
    } catch (e) {
      if (!disposed && onError) onError(e, args);
    } finally {
      busy = false;
      if (queued && !disposed) {
        const next = queued.args;
        queued = null;
        run(next);
      }
    }
  }
  return {
    request(args) {
      if (disposed) return false;
      if (busy) {
        queued = { args };
        return false;
      }
      run(args);
      return true;
    },
    dispose() {
      disposed = true;
      queued = null;
    },
    get busy() {
      return busy;
    },
    get queued() {
      return queued ? queued.args : null;
    },
  };
}
