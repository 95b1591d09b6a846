// Unit tests of the dashboard's pure logic: `node --test tests/js/`
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  EVENTS,
  applyHistory,
  createRedrawScheduler,
  downsample,
  formatDuration,
  formatLoss,
  heatColor,
  heatmap,
  initialState,
  lossPath,
  matchNodeId,
  previewTs,
  reduce,
  statusLine,
  upsertByStep,
  wsLabel,
} from "../../web/js/dashboard_core.js";

const start = (run = "r1", total = 10, num_ws = 8) => ({ node: "5", run, total, num_ws, settings: { lr: 0.002 } });
const prog = (step, extra = {}) => ({
  node: "5", run: "r1", step, total: 10, loss: 1 - step / 20, elapsed: step * 0.5, eta: (10 - step) * 0.5,
  layers: null, num_ws: 8, preview: null, ...extra,
});

function run(events, s = initialState()) {
  for (const [type, msg] of events) s = reduce(s, type, msg);
  return s;
}

test("start resets the state and takes the run's size", () => {
  let s = run([[EVENTS.start, start()], [EVENTS.progress, prog(3)]]);
  assert.equal(s.points.length, 1);
  s = reduce(s, EVENTS.start, start("r2", 20, 14));
  assert.deepEqual([s.run, s.status, s.total, s.numWs, s.points.length, s.step], ["r2", "running", 20, 14, 0, 0]);
  assert.deepEqual(s.settings, { lr: 0.002 });
});

test("throttled progress: gaps and out-of-order messages are fine", () => {
  const s = run([[EVENTS.start, start()], [EVENTS.progress, prog(1)], [EVENTS.progress, prog(5)],
    [EVENTS.progress, prog(3)], [EVENTS.progress, prog(5)]]);
  assert.deepEqual(s.points.map((p) => p[0]), [1, 3, 5]);
  assert.equal(s.step, 5);                 // a late message does not move the counter back
  assert.equal(s.eta, 2.5);
  assert.equal(s.loss, 0.75);
});

test("progress without a start (page opened mid-run) adopts the run", () => {
  const s = reduce(initialState(), EVENTS.progress, prog(4, { preview: "data:image/jpeg;base64,AAA" }));
  assert.deepEqual([s.run, s.status, s.total, s.step, s.preview], ["r1", "running", 10, 4, "data:image/jpeg;base64,AAA"]);
});

test("the latest preview stays when later messages carry none", () => {
  const s = run([[EVENTS.start, start()], [EVENTS.progress, prog(2, { preview: "data:x" })], [EVENTS.progress, prog(3)]]);
  assert.equal(s.preview, "data:x");
});

test("adaptive layers are recorded per step", () => {
  const s = run([[EVENTS.start, start()], [EVENTS.progress, prog(1, { layers: [0, 3] })],
    [EVENTS.progress, prog(2, { layers: [1, 3] })]]);
  assert.deepEqual(s.layers, [[1, [0, 3]], [2, [1, 3]]]);
});

test("end: status, message, late messages of an ended run are ignored", () => {
  let s = run([[EVENTS.start, start()], [EVENTS.progress, prog(4)],
    [EVENTS.end, { node: "5", run: "r1", status: "interrupted", steps: 6, message: "partial saved" }]]);
  assert.deepEqual([s.status, s.step, s.message, s.eta], ["interrupted", 6, "partial saved", null]);
  const v = s.version;
  s = reduce(s, EVENTS.progress, prog(5));
  assert.equal(s.version, v);
  assert.equal(s.status, "interrupted");
  s = reduce(s, EVENTS.end, { node: "5", run: "r1", status: "done", steps: 10 });
  assert.equal(reduce(s, EVENTS.start, start("r1")).status, s.status);   // a stale start of an ended run too
});

test("end of an older run does not touch the run shown", () => {
  const s = run([[EVENTS.start, start("new")], [EVENTS.end, { node: "5", run: "old", status: "error", steps: 0 }]]);
  assert.deepEqual([s.run, s.status], ["new", "running"]);
});

test("error at step 0 keeps the counter", () => {
  const s = run([[EVENTS.start, start()], [EVENTS.progress, prog(3)],
    [EVENTS.end, { node: "5", run: "r1", status: "error", steps: 0, message: "CUDA out of memory" }]]);
  assert.deepEqual([s.status, s.step, s.message], ["error", 3, "CUDA out of memory"]);
  assert.match(statusLine(s), /error/);
});

test("unknown messages and junk leave the state unchanged", () => {
  const s0 = initialState();
  assert.equal(reduce(s0, "other", { run: "x" }), s0);
  assert.equal(reduce(s0, EVENTS.progress, null), s0);
  const s = reduce(reduce(s0, EVENTS.start, start()), EVENTS.progress, prog(2, { loss: NaN }));
  assert.equal(s.points.length, 0);
  assert.equal(s.step, 2);
});

const history = (over = {}) => ({
  node: "5", run: "r1", total: 10, num_ws: 8, status: "running", step: 4,
  points: [[1, 0.9], [2, 0.8], [3, 0.7], [4, 0.6]], layers: [[0], [1], null, [2, 3]],
  preview: "data:hist", settings: { lr: 0.002 }, ...over,
});

test("history restores a reloaded page", () => {
  const s = applyHistory(initialState(), history());
  assert.deepEqual([s.run, s.status, s.step, s.total, s.numWs, s.loss, s.preview], ["r1", "running", 4, 10, 8, 0.6, "data:hist"]);
  assert.equal(s.points.length, 4);
  assert.deepEqual(s.layers, [[1, [0]], [2, [1]], [4, [2, 3]]]);   // null = schedule's fixed set, not drawn
  assert.deepEqual([s.elapsed, s.eta], [null, null]);                  // an older server sends no elapsed time
  const t = applyHistory(initialState(), history({ elapsed: 2 }));
  assert.deepEqual([t.elapsed, t.eta], [2, 3]);                        // ETA from the mean time per iteration
  assert.match(statusLine(t), /0:02 elapsed · ETA 0:03/);
});

test("history merges with live messages that arrived meanwhile", () => {
  let s = run([[EVENTS.progress, prog(6, { preview: "data:live" })]]);
  s = applyHistory(s, history());
  assert.deepEqual(s.points.map((p) => p[0]), [1, 2, 3, 4, 6]);
  assert.equal(s.step, 6);
  assert.equal(s.preview, "data:live");
  s = reduce(s, EVENTS.progress, prog(7));
  assert.deepEqual(s.points.map((p) => p[0]), [1, 2, 3, 4, 6, 7]);
});

test("history of a finished run after the end message fills the throttled gaps", () => {
  let s = run([[EVENTS.start, start()], [EVENTS.progress, prog(1)], [EVENTS.progress, prog(10)],
    [EVENTS.end, { node: "5", run: "r1", status: "done", steps: 10 }]]);
  const full = Array.from({ length: 10 }, (_, i) => [i + 1, 1 - (i + 1) / 20]);
  s = applyHistory(s, history({ status: "done", step: 10, points: full, layers: full.map(() => null) }));
  assert.equal(s.points.length, 10);
  assert.deepEqual([s.status, s.step, s.eta], ["done", 10, 0]);
});

test("a stale 'running' history does not revive an ended run", () => {
  let s = run([[EVENTS.start, start()], [EVENTS.end, { node: "5", run: "r1", status: "interrupted", steps: 4 }]]);
  s = applyHistory(s, history({ status: "running" }));
  assert.equal(s.status, "interrupted");
});

test("history of another run: ignored while a run is live, taken otherwise", () => {
  const live = run([[EVENTS.start, start("r2")]]);
  assert.equal(applyHistory(live, history()), live);
  const finished = run([[EVENTS.start, start("r0")], [EVENTS.end, { node: "5", run: "r0", status: "done", steps: 10 }]]);
  const s = applyHistory(finished, history({ status: "done" }));
  assert.deepEqual([s.run, s.status, s.points.length], ["r1", "done", 4]);
  // an older run (known to have ended) does not replace the one shown
  const s2 = applyHistory(s, history({ run: "r0", status: "done" }));
  assert.equal(s2.run, "r1");
  assert.equal(applyHistory(initialState(), null).run, null);
  assert.equal(applyHistory(initialState(), { error: "no training run" }).run, null);
});

test("upsertByStep keeps steps sorted and unique", () => {
  const a = [];
  for (const st of [3, 1, 2, 5, 2, 4]) upsertByStep(a, st, st * 10);
  assert.deepEqual(a.map((p) => p[0]), [1, 2, 3, 4, 5]);
});

test("formatting", () => {
  assert.equal(formatDuration(null), "–");
  assert.equal(formatDuration(7.4), "0:07");
  assert.equal(formatDuration(125), "2:05");
  assert.equal(formatDuration(3723), "1:02:03");
  assert.equal(formatLoss(0.812345), "0.8123");
  assert.equal(formatLoss(1.5e-5), "1.500e-5");
  assert.equal(formatLoss(undefined), "–");
  const s = run([[EVENTS.start, start()], [EVENTS.progress, prog(5)]]);
  assert.equal(statusLine(s), "5/10 (50%) · loss 0.7500 · 0:03 elapsed · ETA 0:03");
  assert.match(statusLine(initialState()), /queue/);
});

test("loss path: shape, scaling, empty and flat curves", () => {
  assert.equal(lossPath([], 100, 50).d, "");
  const p = lossPath([[1, 1], [2, 0.5], [3, 0]], 100, 50, { pad: 0, total: 3 });
  assert.equal(p.d, "M0.0 0.0 L50.0 25.0 L100.0 50.0");
  assert.deepEqual([p.min, p.max], [0, 1]);
  // x spans the whole run while training: half-way through, the curve ends in the middle
  const half = lossPath([[1, 1], [5, 0]], 90, 10, { pad: 0, total: 10 });
  assert.match(half.d, /L40\.0 10\.0$/);
  const flat = lossPath([[1, 0.5], [2, 0.5]], 100, 50, { pad: 0 });
  assert.ok(!flat.d.includes("NaN"));
  assert.equal(lossPath([[1, 0.3]], 100, 50).d.split(" ").length, 2);
});

test("downsample keeps extremes and endpoints within ~2 points per pixel", () => {
  const pts = Array.from({ length: 5000 }, (_, i) => [i + 1, Math.sin(i / 10) + (i === 2500 ? 10 : 0)]);
  const d = downsample(pts, 100);
  assert.ok(d.length <= 202, `${d.length}`);
  assert.deepEqual(d[0], pts[0]);
  assert.deepEqual(d[d.length - 1], pts[pts.length - 1]);
  assert.ok(d.some((p) => p[1] > 9), "spike kept");
  for (let i = 1; i < d.length; i++) assert.ok(d[i][0] > d[i - 1][0]);
  assert.equal(downsample(pts.slice(0, 10), 100).length, 10);
});

test("heat map: fractions per bin, empty bins null, counts per index", () => {
  const layers = [[1, [0, 1]], [2, [0, 2]], [3, [3]], [4, [3]]];
  const hm = heatmap(layers, 4, 4, 2);
  assert.deepEqual([hm.rows, hm.cols, hm.steps], [4, 2, 4]);
  assert.deepEqual(hm.cells, [[1, 0], [0.5, 0], [0.5, 0], [0, 1]]);
  assert.deepEqual(hm.counts, [2, 1, 1, 2]);
  const sparse = heatmap([[1, [0]]], 2, 100, 10);
  assert.equal(sparse.cells[0][0], 1);
  assert.equal(sparse.cells[0][5], null);
  assert.equal(heatmap([], 18, 0, 60).rows, 18);
  assert.equal(heatmap([[1, [20]]], 18, 10, 60).rows, 21);   // an index past num_ws still shows
  assert.equal(heatmap(layers, 4, 4, 60).cols, 4);            // never more columns than iterations
});

test("heat colours", () => {
  assert.equal(heatColor(0), "rgb(20,24,60)");
  assert.equal(heatColor(1), "rgb(250,220,60)");
  assert.match(heatColor(null), /rgba/);
  assert.equal(heatColor(2), heatColor(1));
});

test("messages match nodes by id, also inside subgraphs", () => {
  assert.equal(matchNodeId(5, ["5", "7"]), "5");
  assert.equal(matchNodeId("12:5", ["5"]), "5");
  assert.equal(matchNodeId("12:5", ["12:5", "5"]), "12:5");
  assert.equal(matchNodeId("9", ["5"]), null);
});

test("redraws are coalesced into one per frame and can be cancelled", () => {
  const queue = [];
  let draws = 0;
  const sch = createRedrawScheduler(() => draws++, (cb) => queue.push(cb) - 1, (h) => { queue[h] = null; });
  assert.equal(sch.schedule(), true);
  assert.equal(sch.schedule(), false);
  assert.equal(sch.pending, true);
  queue.shift()();
  assert.equal(draws, 1);
  sch.schedule();
  sch.cancel();
  assert.equal(sch.pending, false);
  assert.equal(queue[0], null);
});

test("W+ labels follow the generator's index -> layer map", () => {
  assert.equal(wsLabel(0, 18), "w0 (4x4)");
  assert.equal(wsLabel(1, 18), "w1 (8x8)");
  assert.equal(wsLabel(2, 18), "w2 (8x8)");
  assert.equal(wsLabel(16, 18), "w16 (1024x1024)");
  assert.equal(wsLabel(17, 18), "w17 (1024x1024 RGB)");
  assert.equal(wsLabel(13, 14), "w13 (256x256 RGB)");
});

test("preview t values", () => {
  assert.deepEqual(previewTs(5), [0, 0.25, 0.5, 0.75, 1]);
  assert.deepEqual(previewTs(1, 0.2, 0.4), [0.3]);
  assert.deepEqual(previewTs(3, 0.5, 1), [0.5, 0.75, 1]);
});

test("a long run stays bounded", () => {
  let s = reduce(initialState(), EVENTS.start, start("r1", 20000, 18));
  for (let i = 1; i <= 6000; i++) s = reduce(s, EVENTS.progress, { ...prog(i), total: 20000, layers: [i % 18] });
  assert.equal(s.points.length, 5000);
  assert.equal(s.layers.length, 5000);
  assert.equal(s.points[s.points.length - 1][0], 6000);
});

test("latest-only requester: one in flight, the last queued wins, dispose stops callbacks", async () => {
  const { createLatestRequester } = await import("../../web/js/dashboard_core.js");
  const sent = [];
  const results = [];
  const pending = [];
  const send = (a) => new Promise((resolve) => { sent.push(a); pending.push(() => resolve(a * 10)); });
  const r = createLatestRequester(send, (res, a) => results.push([a, res]), () => results.push("err"));
  assert.equal(r.request(1), true);
  assert.equal(r.request(2), false);
  assert.equal(r.request(3), false);
  assert.equal(r.queued, 3);
  pending.shift()();
  await new Promise((res) => setTimeout(res, 0));
  assert.deepEqual(sent, [1, 3]);          // 2 was superseded
  pending.shift()();
  await new Promise((res) => setTimeout(res, 0));
  assert.deepEqual(results, [[1, 10], [3, 30]]);
  assert.equal(r.busy, false);
  const failing = createLatestRequester(() => Promise.reject(new Error("x")), () => {}, (e) => results.push(e.message));
  failing.request(0);
  await new Promise((res) => setTimeout(res, 0));
  assert.equal(results[results.length - 1], "x");
  r.request(4);
  r.dispose();
  pending.shift()();
  await new Promise((res) => setTimeout(res, 0));
  assert.equal(results.length, 3);         // no callback after dispose
  assert.equal(r.request(5), false);
});

test("snapshots arrive live, survive a reload through the history, and an idle history changes nothing", () => {
  let s = run([[EVENTS.start, start()], [EVENTS.progress, prog(2)],
    [EVENTS.snapshot, { node: "5", run: "r1", step: 2, loss: 0.5, file: "nada-snapshots/x/step000002.safetensors" }],
    [EVENTS.snapshot, { node: "5", run: "old", step: 4, loss: 0.4, file: "other" }]]);
  assert.deepEqual(s.snapshots.map((x) => x.step), [2]);
  s = reduce(s, EVENTS.end, { node: "5", run: "r1", status: "interrupted", steps: 3, message: "kept",
    saved: "nada-partial/x_step3_00001.safetensors" });
  assert.equal(s.saved, "nada-partial/x_step3_00001.safetensors");
  const reloaded = applyHistory(initialState(), {
    node: "5", run: "r1", total: 10, num_ws: 8, status: "interrupted", points: [[1, 0.9], [2, 0.8], [3, 0.7]],
    layers: [], snapshots: [{ step: 2, loss: 0.8, file: "nada-snapshots/x/step000002.safetensors" }, { bad: 1 }],
    saved: "nada-partial/x_step3_00001.safetensors", step: 3,
  });
  assert.deepEqual(reloaded.snapshots, [{ step: 2, loss: 0.8, file: "nada-snapshots/x/step000002.safetensors" }]);
  assert.equal(reloaded.saved, "nada-partial/x_step3_00001.safetensors");
  const idle = initialState();
  assert.equal(applyHistory(idle, { node: "5", run: null, status: "idle" }), idle);
});
