// The edgeship web app: the phone-ready model runs here, in the browser (LiteRT.js, WASM or
// WebGPU). A photo (chosen, taken, or a live camera frame) is decoded by the browser, resized to
// the model's H x W in JS (resize.js, the model's own rule), and classified; nothing is uploaded.

import { toModelPixels, rgbaToRgb } from "./resize.js";

const $ = (id) => document.getElementById(id);
const LITERT = "./vendor/litertjs/core/dist/index.js";
const WASM_DIR = "./vendor/litertjs/core/wasm/";
const CAMERA_INTERVAL_MS = 300; // a few frames a second
const RECENT_MAX = 10;

const state = { models: [], model: null, compiled: new Map(), backend: null, litert: null,
  build: null, threads: 1, stream: null, paused: false, busy: false, timer: null, recent: [],
  photo: 0 };

function setStatus(text) { $("status").textContent = text; }
function setError(text) { $("error").textContent = text || ""; }
function addNote(text) { $("note").textContent = [$("note").textContent, text].filter(Boolean).join(" "); }

function clearResult() {
  $("answer").textContent = "";
  $("detail").textContent = "";
  $("bars").replaceChildren();
}

// ------------------------------------------------------------------------------ the runtime
// The WASM runtime writes its own log (INFO/WARNING lines) to stderr, which Emscripten sends
// to console.error: keep those at their level, so a real error still stands out.
function runtimeLog(text) {
  if (/^(INFO|VERBOSE|DEBUG)\b/.test(text)) console.debug(text);
  else if (/^WARNING\b/.test(text)) console.warn(text);
  else console.error(text);
}

async function hasGpu() {
  return Boolean(navigator.gpu && (await navigator.gpu.requestAdapter().catch(() => null)));
}

// The threaded build (every core) needs a cross-origin-isolated page (COOP/COEP headers:
// SharedArrayBuffer) and relaxed SIMD; else the plain build; browsers without relaxed SIMD
// (Safari) get the compat build. `attempt` > 0: a retry (a failed import is not re-fetched
// under the same URL).
async function loadRuntime(attempt) {
  self.Module = { print: (text) => console.debug(text), printErr: runtimeLog };
  const litert = await import(attempt ? `${LITERT}?retry=${attempt}` : LITERT);
  const relaxed = await litert.supportsFeature("relaxedSimd");
  const threaded = relaxed && self.crossOriginIsolated === true &&
    (await litert.supportsFeature("threads"));
  await litert.loadLiteRt(WASM_DIR, threaded ? { threads: true } : undefined);
  state.litert = litert;
  state.build = threaded ? "threaded" : relaxed ? "plain" : "compat";
  state.threads = threaded ? Math.max(1, navigator.hardwareConcurrency || 1) : 1;
  const build = `${WASM_DIR}litert_wasm${{ threaded: "_threaded", plain: "",
    compat: "_compat" }[state.build]}_internal`;
  return [`${build}.js`, `${build}.wasm`];
}

async function compiled(model) {
  if (state.compiled.has(model.name)) return state.compiled.get(model.name);
  const { loadAndCompile, isWebGPUSupported } = state.litert;
  let result = null;
  if (state.backend === null) state.backend = (await hasGpu()) && isWebGPUSupported() ? "try" : "wasm";
  if (state.backend !== "wasm") {
    try {
      result = await loadAndCompile(model.file, { accelerator: "webgpu" });
      state.backend = "webgpu";
    } catch (err) {
      console.info(`WebGPU cannot run ${model.name} (${err}); using WASM`);
    }
  }
  if (result === null) {
    result = await loadAndCompile(model.file, {
      accelerator: "wasm", cpuOptions: { numThreads: state.threads } });
    state.backend = "wasm";
  }
  // One run on blank pixels: the runtime's first-call setup is not the first photo's latency.
  const blank = inputTensor(new Uint8Array(model.height * model.width * 3), model);
  try {
    for (const t of await result.run([blank])) t.delete();
  } finally {
    blank.delete();
  }
  state.compiled.set(model.name, result);
  return result;
}

function inputTensor(pixels, model) {
  const spec = model.input;
  if (spec.dtype === "float32") {
    const data = new Float32Array(pixels.length);
    for (let i = 0; i < pixels.length; i++) data[i] = pixels[i] * spec.scale + spec.offset;
    return new state.litert.Tensor(data, spec.shape);
  }
  const table = spec.table;
  const data = new Uint8Array(pixels.length);
  for (let i = 0; i < pixels.length; i++) data[i] = table[pixels[i]];
  return new state.litert.Tensor(data, spec.shape);
}

function probabilities(raw, model) {
  const out = model.output;
  const f = Math.fround;
  let scores = Array.from(raw, (q) => (out.scale ? f(f(q - out.zero_point) * f(out.scale)) : f(q)));
  if (scores.length === 1) { // one sigmoid unit: [1 - p, p]
    const p = out.probabilities ? scores[0] : 1 / (1 + Math.exp(-scores[0]));
    return [1 - p, p];
  }
  if (!out.probabilities) {
    const top = Math.max(...scores);
    const e = scores.map((s) => Math.exp(s - top));
    const sum = e.reduce((a, b) => a + b, 0);
    scores = e.map((v) => v / sum);
  }
  return scores;
}

// Raw RGB pixels at the model's size -> {index, label, confidence, probabilities, ms}
async function classifyPixels(pixels, model = state.model) {
  const runner = await modelReady(model);
  const start = performance.now();
  const input = inputTensor(pixels, model);
  let outputs;
  try {
    outputs = await runner.run([input]);
  } finally {
    input.delete();
  }
  const raw = await outputs[0].data();
  const ms = performance.now() - start;
  for (const t of outputs) t.delete();
  const probs = probabilities(raw, model);
  let index = 0;
  for (let i = 1; i < probs.length; i++) if (probs[i] > probs[index]) index = i;
  const names = model.class_names;
  return { index, label: names[index] ?? String(index), confidence: probs[index],
    probabilities: probs, ms, backend: state.backend, model: model.name };
}

// ------------------------------------------------------------------------------- images
// A decoded image or video frame -> RGB pixels at its own size (transparency over white).
function framePixels(source, width, height) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, width, height);
  ctx.drawImage(source, 0, 0, width, height);
  return rgbaToRgb(ctx.getImageData(0, 0, width, height).data);
}

function preview(source, width, height) {
  const canvas = $("photo");
  const scale = Math.min(1, 1024 / Math.max(width, height));
  canvas.width = Math.max(1, Math.round(width * scale));
  canvas.height = Math.max(1, Math.round(height * scale));
  canvas.getContext("2d").drawImage(source, 0, 0, canvas.width, canvas.height);
  canvas.hidden = false;
}

async function classifySource(source, width, height, name) {
  const model = state.model;
  const rgb = framePixels(source, width, height);
  const pixels = toModelPixels(rgb, width, height, model);
  const result = await classifyPixels(pixels, model);
  show(result, name);
  return result;
}

// A file or blob (chosen, taken, or given by a test): decode, classify, show. Chosen before the
// runtime and the model are loaded, it waits for them ("loading the model…"), through failed
// loads and retries; a newer photo replaces a waiting one. Null: not an image, or replaced.
async function classifyBlob(blob, name) {
  setError("");
  const photo = ++state.photo;
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob);
  } catch (err) {
    clearResult();
    $("photo").hidden = true;
    setError(`“${name}” is not an image this browser can read (JPEG, PNG, WebP…). ` +
      "Choose another photo.");
    return null;
  }
  try {
    preview(bitmap, bitmap.width, bitmap.height);
    if (!isReady(state.model)) {
      clearResult();
      $("detail").textContent = `“${name}” will be classified as soon as the model is ` +
        "loaded: loading the model…";
      while (!isReady(state.model)) await modelReady((await siteReady(), state.model));
      if (photo !== state.photo) return null; // a newer photo came meanwhile
    }
    return await classifySource(bitmap, bitmap.width, bitmap.height, name);
  } finally {
    bitmap.close();
  }
}

// ------------------------------------------------------------------------------ display
const backendName = (backend) => (backend === "webgpu" ? "WebGPU" : "WASM");

function show(result, name) {
  const model = state.model;
  $("answer").textContent = result.label;
  $("detail").textContent = `${(result.confidence * 100).toFixed(1)}% · ` +
    `${result.ms.toFixed(1)} ms on this device (${backendName(result.backend)})`;
  const probs = result.probabilities;
  let order = probs.map((_, i) => i);
  if (order.length > 10) order = order.sort((a, b) => probs[b] - probs[a]).slice(0, 10);
  $("bars").replaceChildren(...order.map((i) => {
    const li = document.createElement("li");
    li.className = "bar" + (i === result.index ? " predicted" : "");
    li.dataset.index = String(i);
    const label = document.createElement("span");
    label.className = "name";
    label.textContent = model.class_names[i] ?? String(i);
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = `${Math.max(0, Math.min(1, probs[i])) * 100}%`;
    track.append(fill);
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = `${(probs[i] * 100).toFixed(0)}%`;
    li.append(label, track, pct);
    return li;
  }));
  state.recent.unshift({ name, label: result.label, confidence: result.confidence, ms: result.ms });
  state.recent.length = Math.min(state.recent.length, RECENT_MAX);
  $("recent").tBodies[0].replaceChildren(...state.recent.map((r) => {
    const tr = document.createElement("tr");
    for (const text of [r.name, r.label, `${(r.confidence * 100).toFixed(0)}%`, r.ms.toFixed(1)]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  }));
}

// ------------------------------------------------------------------------------- camera
function cameraProblem(err) {
  if (!window.isSecureContext) {
    return "The live camera needs a secure page (HTTPS, or localhost): this page was opened " +
      `over ${location.protocol}//${location.host}. Choose or take a photo instead, or serve ` +
      "the app with --tls-cert/--tls-key.";
  }
  if (!err) return "This browser has no camera access (navigator.mediaDevices is missing).";
  if (err.name === "NotAllowedError" || err.name === "SecurityError") {
    return "Camera permission was refused. Allow the camera for this site in the browser's " +
      "settings, or choose a photo instead.";
  }
  if (err.name === "NotFoundError" || err.name === "OverconstrainedError") {
    return "No camera was found on this device. Choose a photo instead.";
  }
  if (err.name === "NotReadableError") {
    return "The camera is in use by another app. Close it and try again.";
  }
  return `The camera could not start (${err.name}: ${err.message}).`;
}

async function startCamera() {
  setError("");
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    setError(cameraProblem(null));
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      video: { facingMode: { ideal: "environment" } }, audio: false });
  } catch (err) {
    setError(cameraProblem(err));
    return;
  }
  state.stream = stream;
  const video = $("video");
  video.srcObject = stream;
  video.hidden = false;
  $("photo").hidden = true;
  await video.play();
  state.paused = false;
  $("pause").hidden = false;
  $("pause").textContent = "Pause";
  $("camera").textContent = "Stop camera";
  state.timer = setInterval(cameraTick, CAMERA_INTERVAL_MS);
}

function stopCamera() {
  clearInterval(state.timer);
  state.timer = null;
  for (const track of state.stream?.getTracks() ?? []) track.stop();
  state.stream = null;
  $("video").hidden = true;
  $("pause").hidden = true;
  $("camera").textContent = "Live camera";
}

let frameCount = 0;
async function cameraTick() {
  const video = $("video");
  if (state.paused || state.busy || !video.videoWidth) return;
  if (!isReady(state.model)) {
    $("detail").textContent = "Loading the model…";
    return;
  }
  state.busy = true;
  try {
    frameCount += 1;
    await classifySource(video, video.videoWidth, video.videoHeight, `camera #${frameCount}`);
  } catch (err) {
    setError(`Classifying the camera frame failed: ${err}`);
  } finally {
    state.busy = false;
  }
}

// ------------------------------------------------------------------------------ offline
async function registerOffline(wasmFiles) {
  if (!("serviceWorker" in navigator)) {
    addNote("Offline use needs a secure page too (HTTPS or localhost).");
    return false;
  }
  await navigator.serviceWorker.register("sw.js");
  const registration = await navigator.serviceWorker.ready;
  const reply = await new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = (event) => resolve(event.data);
    registration.active.postMessage({ cache: wasmFiles }, [channel.port2]);
  });
  if (!reply.ok) throw new Error(reply.error);
  return true;
}

// ------------------------------------------------------------------------------ loading
// Each thing the app loads (the model list, the runtime, each model) is loaded once; a
// failure says what failed and shows Retry, and whoever waits for it (the start, a photo,
// a model switch) waits on through the retry.
class LoadError extends Error {}
const loads = new Map(); // key -> the promise of a successful load
let attempts = 0;
let retry = null; // the promise of the Retry button's next click

function load(key, what, fn) {
  if (!loads.has(key)) {
    const attempt = attempts++;
    loads.set(key, fn(attempt).catch((err) => {
      loads.delete(key);
      const cause = err instanceof Error ? err.message : String(err);
      throw new LoadError(`Could not load ${what}: ${cause}. Check the connection (or the ` +
        "site's files), then Retry.");
    }));
  }
  return loads.get(key);
}

function retryClicked() {
  retry ??= new Promise((resolve) => {
    const button = $("retry");
    button.hidden = false;
    button.addEventListener("click", () => {
      button.hidden = true;
      retry = null;
      setError("");
      setStatus("Loading the model…");
      resolve();
    }, { once: true });
  });
  return retry;
}

async function loaded(key, what, fn) {
  for (;;) {
    try {
      return await load(key, what, fn);
    } catch (err) {
      setStatus("Failed to load");
      setError(err instanceof LoadError ? err.message : `Could not start: ${err}`);
      console.warn(err);
      await retryClicked();
    }
  }
}

const runtimeReady = () =>
  loaded("runtime", `LiteRT.js, the WebAssembly runtime (${WASM_DIR})`, loadRuntime);

const isReady = (model) => Boolean(model) && state.compiled.has(model.name);

async function modelReady(model) {
  await runtimeReady();
  return loaded(`model:${model.name}`, `the model “${model.name}” (${model.file})`,
    () => compiled(model));
}

function siteReady() {
  return loaded("site", "the app's list of models (models.json)", async () => {
    const response = await fetch("models.json");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const site = await response.json();
    state.models = site.models;
    state.model ??= state.models[0];
    return site;
  });
}

// ------------------------------------------------------------------------------ start
function buildText() {
  if (state.backend === "webgpu") return backendName(state.backend);
  const threads = state.threads === 1 ? "1 thread" : `${state.threads} threads`;
  return `${backendName(state.backend)}, ${state.build} build, ${threads}`;
}

function showReady() {
  const offline = window.edgeship.offline ? ", also offline" : "";
  setStatus(`Ready${offline}: ${state.model.name} on ${buildText()}`);
}

// Switch models: the new one loads (photos meanwhile wait for it), then "Ready".
async function chooseModel(name) {
  state.model = state.models.find((m) => m.name === name) ?? state.models[0];
  const model = state.model;
  if (!isReady(model)) setStatus(`Loading the model ${model.name}…`);
  await modelReady(model);
  if (state.model === model && window.edgeship.ready) showReady();
}

function onPhoto(event) {
  const file = event.target.files[0];
  event.target.value = "";
  if (file) classifyBlob(file, file.name).catch((err) => setError(String(err)));
}

async function main() {
  if (typeof WebAssembly !== "object" || typeof WebAssembly.instantiate !== "function") {
    setStatus("Not supported");
    setError("This browser cannot run WebAssembly, which the classifier needs. Use a recent " +
      "Chrome, Safari, Firefox or Edge (or turn off a mode that disables WebAssembly).");
    for (const id of ["file", "capture", "camera"]) $(id).disabled = true;
    return;
  }
  // The photo inputs work from the first moment: a photo waits for the model.
  for (const id of ["file", "capture"]) {
    $(id).addEventListener("change", onPhoto);
    if ($(id).files.length) onPhoto({ target: $(id) }); // chosen before this script ran
  }
  $("camera").addEventListener("click", () => (state.stream ? stopCamera() : startCamera()));
  $("pause").addEventListener("click", () => {
    state.paused = !state.paused;
    $("pause").textContent = state.paused ? "Resume" : "Pause";
  });
  if (!window.isSecureContext) addNote(cameraProblem(null));
  setStatus("Loading the model…");
  const runtime = runtimeReady(); // fetched beside the model list
  const site = await siteReady();
  const select = $("model");
  select.replaceChildren(...state.models.map((m) => new Option(m.name, m.name)));
  $("model-row").hidden = state.models.length < 2;
  select.addEventListener("change", () => chooseModel(select.value));
  const wasmFiles = await runtime; // the build loaded: cached for offline use below
  await modelReady(state.model);
  $("runtime").textContent = `LiteRT.js ${site.litertjs} (${buildText()})`;
  Object.assign(window.edgeship, {
    backend: backendName(state.backend), build: state.build,
    threads: state.threads, isolated: self.crossOriginIsolated === true, ready: true });
  showReady();
  try {
    window.edgeship.offline = await registerOffline(wasmFiles);
    showReady();
  } catch (err) {
    addNote(`Offline use is not available (${err}).`);
    window.edgeship.offline = false;
  }
}

// For tests and the benchmark: the page's own code paths, from outside.
window.edgeship = {
  ready: false,
  offline: null,
  classifyPixels: async (pixels, name) => {
    await siteReady();
    const model = state.models.find((m) => m.name === name) ?? state.model;
    return classifyPixels(Uint8Array.from(pixels), model);
  },
  classifyBlob,
  chooseModel,
};

main().catch((err) => {
  setStatus("Failed to start");
  setError(`The classifier could not start: ${err}`);
  console.error(err);
});
