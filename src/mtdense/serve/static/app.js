// mtdense live: send images to POST /predict and show image | segmentation overlay | depth.
// Plain JavaScript, no libraries. The segmentation and depth come back as the PNGs
// `mtdense predict` writes (8-bit class indices, 16-bit metres x 256); they are decoded here
// (PNG chunks, zlib through the browser's DecompressionStream, scanline filters) so every pixel
// keeps its exact value: a canvas would round 16-bit depth to 8 bits.
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  model: null,      // GET /model
  palette: null,    // Uint8Array, 3 per class
  lut: null,        // Uint8Array, 3 per depth colour (256)
  range: [1, 100],  // metres at the ends of the colour map (the server's --depth-range)
  fitted: null,     // [min, max] metres of the image shown, for "depth scale fitted to the image"
  width: 0, height: 0,
  rgb: null,        // Uint8ClampedArray RGBA of the image at its size
  seg: null,        // Uint8Array class indices
  depth: null,      // Uint16Array metres x 256 (0 = invalid)
  pinned: null,     // [x, y] clicked
  running: false, stop: false, shown: 0,
};

// ---- PNG decoding (grey, 8 or 16 bits, not interlaced: what the server writes) -------------------
async function decodePng(b64) {
  const bytes = new Uint8Array(await (await fetch("data:application/octet-stream;base64," + b64)).arrayBuffer());
  const view = new DataView(bytes.buffer);
  const signature = [137, 80, 78, 71, 13, 10, 26, 10];
  if (!signature.every((b, i) => bytes[i] === b)) throw new Error("the server's PNG has no PNG signature");
  let pos = 8, width = 0, height = 0, depth = 0, colour = 0, interlace = 0;
  const idat = [];
  while (pos + 8 <= bytes.length) {
    const length = view.getUint32(pos);
    const type = String.fromCharCode(...bytes.subarray(pos + 4, pos + 8));
    const data = bytes.subarray(pos + 8, pos + 8 + length);
    if (type === "IHDR") {
      width = view.getUint32(pos + 8); height = view.getUint32(pos + 12);
      depth = data[8]; colour = data[9]; interlace = data[12];
    } else if (type === "IDAT") {
      idat.push(data);
    } else if (type === "IEND") {
      break;
    }
    pos += 12 + length;
  }
  if (colour !== 0 || interlace !== 0 || (depth !== 8 && depth !== 16)) {
    throw new Error(`unexpected PNG (colour type ${colour}, ${depth} bits, interlace ${interlace})`);
  }
  const stream = new Blob(idat).stream().pipeThrough(new DecompressionStream("deflate"));
  const raw = new Uint8Array(await new Response(stream).arrayBuffer());
  const bpp = depth / 8, stride = width * bpp;
  const out = new Uint8Array(height * stride);
  let prev = new Uint8Array(stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const cur = out.subarray(y * stride, (y + 1) * stride);
    for (let i = 0; i < stride; i++) {
      const a = i >= bpp ? cur[i - bpp] : 0, b = prev[i], c = i >= bpp ? prev[i - bpp] : 0;
      let v = line[i];
      if (filter === 1) v += a;
      else if (filter === 2) v += b;
      else if (filter === 3) v += (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
        v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      cur[i] = v & 255;
    }
    prev = cur;
  }
  if (depth === 8) return { width, height, values: out };
  const values = new Uint16Array(width * height);
  for (let i = 0; i < values.length; i++) values[i] = (out[2 * i] << 8) | out[2 * i + 1];
  return { width, height, values };
}

// ---- the model ----------------------------------------------------------------------------------
async function loadModel() {
  const model = await (await fetch("/model")).json();
  state.model = model;
  state.palette = new Uint8Array(model.classes.flatMap((c) => c.color));
  state.lut = new Uint8Array(model.depth_colormap.colors.flat());
  state.range = model.depth_colormap.range;
  const size = model.size ? `${model.size[0]}\u00d7${model.size[1]}` : "each image's own size";
  $("model-info").textContent = `backend ${model.backend} (${model.runtime}, ${model.device}) \u00b7 network input ${size} \u00b7 `
    + `${model.classes.length} classes \u00b7 limits ${(model.limits.max_bytes / 1e6).toFixed(0)} MB, `
    + `${(model.limits.max_pixels / 1e6).toFixed(0)} megapixels`;
}

// ---- rendering ------------------------------------------------------------------------------------
function canvasFor(id, width, height) {
  const canvas = $(id);
  if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
  return canvas.getContext("2d");
}

function renderOverlay() {
  if (!state.seg) return;
  // Uint8ClampedArray rounds to the nearest value (ties to even), as OpenCV does in predict's panels
  const alpha = Number($("opacity").value), k = state.palette.length / 3;
  const ctx = canvasFor("view-seg", state.width, state.height);
  const out = ctx.createImageData(state.width, state.height), o = out.data, rgb = state.rgb, seg = state.seg, pal = state.palette;
  for (let i = 0, j = 0; i < seg.length; i++, j += 4) {
    const c = seg[i];
    if (c < k) {
      o[j] = (1 - alpha) * rgb[j] + alpha * pal[3 * c];
      o[j + 1] = (1 - alpha) * rgb[j + 1] + alpha * pal[3 * c + 1];
      o[j + 2] = (1 - alpha) * rgb[j + 2] + alpha * pal[3 * c + 2];
    } else {  // no class (ignore): the image shows through
      o[j] = rgb[j]; o[j + 1] = rgb[j + 1]; o[j + 2] = rgb[j + 2];
    }
    o[j + 3] = 255;
  }
  ctx.putImageData(out, 0, 0);
}

function depthRange() {
  if (!$("depth-fit").checked || !state.fitted) return state.range;
  const [lo, hi] = state.fitted;  // a flat depth map still gets a scale of some width
  return hi > lo * 1.05 ? [lo, hi] : [lo / 1.05, hi * 1.05];
}

// The colour of a depth: log scale over [lo, hi] metres, as mtdense.viz.colorize_depth.
function depthIndex(metres, lo, hi) {
  const d = Math.min(hi, Math.max(lo, metres));
  return Math.round((Math.log(d) - Math.log(lo)) / (Math.log(hi) - Math.log(lo)) * 255);
}

function renderDepth() {
  const ctx = canvasFor("view-depth", state.width, state.height);
  const out = ctx.createImageData(state.width, state.height), o = out.data, lut = state.lut, depth = state.depth;
  const [lo, hi] = depthRange();
  for (let i = 0, j = 0; i < depth.length; i++, j += 4) {
    if (depth[i] === 0) { o[j] = o[j + 1] = o[j + 2] = 0; } else {
      const c = 3 * depthIndex(depth[i] / 256, lo, hi);
      o[j] = lut[c]; o[j + 1] = lut[c + 1]; o[j + 2] = lut[c + 2];
    }
    o[j + 3] = 255;
  }
  ctx.putImageData(out, 0, 0);
  renderDepthBar();
}

function renderDepthBar() {
  const bar = $("depth-bar"), tile = $("view-depth");
  const height = Math.max(60, Math.round(tile.getBoundingClientRect().height) || 200);
  const scale = window.devicePixelRatio || 1;
  bar.style.height = `${height}px`;
  bar.width = Math.round(64 * scale); bar.height = Math.round(height * scale);
  const ctx = bar.getContext("2d");
  ctx.scale(scale, scale);
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, 64, height);
  const margin = 6, strip = 14, [lo, hi] = depthRange();
  for (let y = margin; y < height - margin; y++) {
    const c = 3 * Math.round((y - margin) / Math.max(1, height - 2 * margin - 1) * 255);
    ctx.fillStyle = `rgb(${state.lut[c]},${state.lut[c + 1]},${state.lut[c + 2]})`;
    ctx.fillRect(2, y, strip, 1);
  }
  ctx.fillStyle = "#000"; ctx.font = "11px system-ui, sans-serif"; ctx.textBaseline = "middle";
  const ticks = [0.1, 0.2, 0.3, 0.5, 1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 300, 500].filter((t) => t >= lo && t <= hi);
  for (const tick of ticks.length >= 2 ? ticks : [lo, Math.sqrt(lo * hi), hi]) {
    const y = margin + depthIndex(tick, lo, hi) / 255 * (height - 2 * margin - 1);
    ctx.fillRect(2 + strip, Math.round(y), 4, 1);
    ctx.fillText(`${Number(tick.toPrecision(2))} m`, 8 + strip, y);
  }
}

function renderLegend(classes) {
  const legend = $("legend");
  legend.replaceChildren(...classes.map((c) => {
    const li = document.createElement("li");
    li.dataset.class = c.name;
    const swatch = document.createElement("span");
    swatch.className = "swatch"; swatch.style.background = `rgb(${c.color.join(",")})`;
    const share = document.createElement("span");
    share.className = "share"; share.textContent = `${(100 * c.share).toFixed(1)}%`;
    li.append(swatch, document.createTextNode(c.name), share);
    return li;
  }));
}

function renderLatency(body) {
  const ms = body.ms, el = $("latency");
  el.dataset.total = ms.total; el.dataset.forward = ms.forward;
  el.textContent = `server ${ms.total.toFixed(1)} ms (network ${ms.forward.toFixed(1)} ms, waiting ${ms.queue.toFixed(1)} ms) `
    + `\u00b7 round trip ${body.roundTrip.toFixed(0)} ms \u00b7 ${body.size[1]}\u00d7${body.size[0]} px`
    + (body.depth.median !== null ? ` \u00b7 depth ${body.depth.min.toFixed(1)}\u2013${body.depth.max.toFixed(1)} m, median ${body.depth.median.toFixed(1)} m` : "");
}

// ---- reading a pixel ------------------------------------------------------------------------------
function pixelAt(event) {
  const rect = event.currentTarget.getBoundingClientRect();
  const x = Math.min(state.width - 1, Math.max(0, Math.floor((event.clientX - rect.left) * state.width / rect.width)));
  const y = Math.min(state.height - 1, Math.max(0, Math.floor((event.clientY - rect.top) * state.height / rect.height)));
  return [x, y];
}

function showProbe(x, y, pinned) {
  const probe = $("probe"), i = y * state.width + x, k = state.seg[i], raw = state.depth[i];
  const name = k < state.model.classes.length ? state.model.classes[k].name : "no class";
  const metres = raw / 256;
  probe.dataset.state = pinned ? "pinned" : "hover";
  probe.dataset.x = x; probe.dataset.y = y; probe.dataset.class = name; probe.dataset.depth = String(metres);
  probe.textContent = `pixel (${x}, ${y}): ${name}, ${raw ? metres.toFixed(2) + " m" : "no depth"}${pinned ? " (clicked)" : ""}`;
}

for (const id of ["view-image", "view-seg", "view-depth"]) {
  const canvas = $(id);
  canvas.addEventListener("mousemove", (e) => { if (state.seg && !state.pinned) showProbe(...pixelAt(e), false); });
  canvas.addEventListener("click", (e) => { if (state.seg) { state.pinned = pixelAt(e); showProbe(...state.pinned, true); } });
  canvas.addEventListener("mouseleave", () => { if (state.seg && state.pinned) showProbe(...state.pinned, true); });
}

// ---- talking to the server ---------------------------------------------------------------------------
function setStatus(text, kind) {
  const status = $("status");
  status.textContent = text; status.dataset.state = kind; status.dataset.shown = state.shown;
}

async function predict(blob, name) {
  const form = new FormData();
  form.append("image", blob, name);
  const start = performance.now();
  const response = await fetch("/predict?outputs=seg,depth", { method: "POST", body: form });
  const body = await response.json().catch(() => ({ detail: `HTTP ${response.status}, not JSON` }));
  if (!response.ok) throw new Error(`${name}: ${body.detail || response.statusText}`);
  body.roundTrip = performance.now() - start;
  return body;
}

async function show(source, body) {
  const [seg, depth] = await Promise.all([decodePng(body.seg_png), decodePng(body.depth_png)]);
  state.width = seg.width; state.height = seg.height;
  const ctx = canvasFor("view-image", seg.width, seg.height);
  ctx.drawImage(source, 0, 0, seg.width, seg.height);
  state.rgb = ctx.getImageData(0, 0, seg.width, seg.height).data;
  state.seg = seg.values; state.depth = depth.values;
  state.fitted = body.depth.min !== null ? [body.depth.min, body.depth.max] : null;
  if (state.pinned && (state.pinned[0] >= seg.width || state.pinned[1] >= seg.height)) state.pinned = null;
  $("hint").hidden = true; $("panels").hidden = false;
  renderOverlay(); renderDepth(); renderLegend(body.classes); renderLatency(body);
  if (state.pinned) showProbe(...state.pinned, true);
  state.shown += 1;
}

function progress(done, total, text) {
  $("progress-row").hidden = total <= 1;
  $("progress").max = total; $("progress").value = done;
  $("progress-text").textContent = text;
}

async function run(task) {
  if (state.running) return;
  state.running = true; state.stop = false;
  $("stop").disabled = false;
  try { await task(); } catch (err) { setStatus(String(err.message || err), "error"); } finally {
    state.running = false; $("stop").disabled = true;
  }
}

async function sendImages(files) {
  const images = files.filter((f) => /^image\/(png|jpeg)$/.test(f.type) || /\.(png|jpe?g)$/i.test(f.name));
  if (!images.length) { setStatus("no PNG or JPEG images among the files given; the server accepts PNG and JPEG", "error"); return; }
  const failed = [];
  for (let i = 0; i < images.length && !state.stop; i++) {
    const file = images[i];
    progress(i, images.length, `${i} / ${images.length}: ${file.name}`);
    setStatus(`sending ${file.name}\u2026`, "busy");
    try {
      const body = await predict(file, file.name);
      const bitmap = await createImageBitmap(file);
      await show(bitmap, body);
      bitmap.close();
    } catch (err) {
      failed.push(String(err.message || err));
      if (images.length === 1) throw err;
    }
    progress(i + 1, images.length, `${i + 1} / ${images.length}: ${file.name}`);
  }
  const stopped = state.stop ? " (stopped)" : "";
  setStatus(failed.length ? `done${stopped}; ${failed.length} failed: ${failed.join("; ")}` : `done${stopped}`, failed.length ? "error" : "done");
}

function once(target, event) {
  return new Promise((resolve, reject) => {
    target.addEventListener(event, resolve, { once: true });
    target.addEventListener("error", () => reject(new Error("the browser cannot play this video; try an mp4 (H.264) or webm file")), { once: true });
  });
}

async function sendVideo(file) {
  const video = $("video");
  video.src = URL.createObjectURL(file);
  await once(video, "loadedmetadata");
  const fps = Math.min(30, Math.max(0.2, Number($("video-fps").value) || 2));
  const frames = Math.max(1, Math.floor(video.duration * fps));
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth; canvas.height = video.videoHeight;
  const ctx = canvas.getContext("2d");
  for (let i = 0; i < frames && !state.stop; i++) {
    progress(i, frames, `frame ${i + 1} / ${frames} of ${file.name}`);
    setStatus(`sending frame ${i + 1}\u2026`, "busy");
    const seeked = once(video, "seeked");
    video.currentTime = Math.min(video.duration - 0.001, i / fps);
    await seeked;
    ctx.drawImage(video, 0, 0);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
    await show(canvas, await predict(blob, `${file.name} frame ${i + 1}.jpg`));
    progress(i + 1, frames, `frame ${i + 1} / ${frames} of ${file.name}`);
  }
  URL.revokeObjectURL(video.src);
  setStatus(state.stop ? "stopped" : "done", "done");
}

function sendFiles(files) {
  const video = files.find((f) => f.type.startsWith("video/"));
  run(() => (video ? sendVideo(video) : sendImages(files)));
}

// A dropped folder arrives as a directory entry: read it recursively.
async function entryFiles(entry) {
  if (entry.isFile) return [await new Promise((resolve, reject) => entry.file(resolve, reject))];
  const reader = entry.createReader(), files = [];
  for (;;) {
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (!batch.length) break;
    for (const child of batch) files.push(...await entryFiles(child));
  }
  return files.sort((a, b) => a.name.localeCompare(b.name));
}

$("pick-images").addEventListener("change", (e) => { sendFiles([...e.target.files]); e.target.value = ""; });
$("pick-folder").addEventListener("change", (e) => {
  sendFiles([...e.target.files].sort((a, b) => a.webkitRelativePath.localeCompare(b.webkitRelativePath))); e.target.value = "";
});
$("pick-video").addEventListener("change", (e) => {  // a video the browser gives no type (.mkv) is still a video here
  const file = e.target.files[0]; e.target.value = "";
  if (file) run(() => sendVideo(file));
});
$("stop").addEventListener("click", () => { state.stop = true; });
$("opacity").addEventListener("input", (e) => { $("opacity-value").textContent = Number(e.target.value).toFixed(2); renderOverlay(); });
$("depth-fit").addEventListener("change", () => { if (state.depth) renderDepth(); });
window.addEventListener("resize", () => { if (state.depth) renderDepthBar(); });

const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", async (e) => {
  e.preventDefault(); drop.classList.remove("over");
  const entries = [...e.dataTransfer.items].map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
  const files = entries.length ? (await Promise.all(entries.map(entryFiles))).flat() : [...e.dataTransfer.files];
  sendFiles(files);
});

loadModel().then(() => setStatus("ready", "idle")).catch((err) => setStatus(`cannot read /model: ${err}`, "error"));
