// Raw RGB pixels at the model's H x W, exactly as edgeship's Python side makes them
// (edge_runtime/image/preprocess.py): Pillow's BILINEAR resample, bit for bit, with its
// `reducing_gap=3.0` box reduction first ("stretch"), or ImageOps.fit's centre crop ("crop"),
// then the "auto" inversion of models trained on a dark background. Only this happens in JS:
// the model does the rest (its scale, its grayscale) itself.

const PRECISION_BITS = 22; // Pillow's Resample.c for 8-bit images: 32 - 8 - 2
const HALF = 1 << (PRECISION_BITS - 1);
const ONE = 1 << PRECISION_BITS;
const REDUCING_GAP = 3.0;

function triangle(x) {
  x = Math.abs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

// Pillow's precompute_coeffs + normalize_coeffs_8bpc: per output pixel, its first input pixel,
// how many, and fixed-point weights.
// The box arrives in single precision (Pillow's `float box[4]`), and so is the scale.
function coefficients(inSize, box0, box1, outSize) {
  const f = Math.fround;
  const in0 = f(box0), in1 = f(box1);
  const scale = f(in1 - in0) / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = 1.0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    const ss = 1.0 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      const w = triangle((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0.0 ? k[x] / ww : k[x];
      kk[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * ONE) : Math.trunc(0.5 + v * ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(v) {
  v >>= PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

function horizontalPass(src, w, rows, outW, c) {
  const out = new Uint8Array(outW * rows * 3);
  for (let y = 0; y < rows; y++) {
    for (let xx = 0; xx < outW; xx++) {
      const xmin = c.bounds[xx * 2], xmax = c.bounds[xx * 2 + 1], o = xx * c.ksize;
      let s0 = HALF, s1 = HALF, s2 = HALF;
      for (let x = 0; x < xmax; x++) {
        const p = (y * w + xmin + x) * 3, k = c.kk[o + x];
        s0 += src[p] * k; s1 += src[p + 1] * k; s2 += src[p + 2] * k;
      }
      const q = (y * outW + xx) * 3;
      out[q] = clip8(s0); out[q + 1] = clip8(s1); out[q + 2] = clip8(s2);
    }
  }
  return out;
}

function verticalPass(src, w, outH, c) {
  const out = new Uint8Array(w * outH * 3);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = c.bounds[yy * 2], ymax = c.bounds[yy * 2 + 1], o = yy * c.ksize;
    for (let x = 0; x < w; x++) {
      let s0 = HALF, s1 = HALF, s2 = HALF;
      for (let y = 0; y < ymax; y++) {
        const p = ((ymin + y) * w + x) * 3, k = c.kk[o + y];
        s0 += src[p] * k; s1 += src[p + 1] * k; s2 += src[p + 2] * k;
      }
      const q = (yy * w + x) * 3;
      out[q] = clip8(s0); out[q + 1] = clip8(s1); out[q + 2] = clip8(s2);
    }
  }
  return out;
}

// Pillow's ImagingResampleInner (BILINEAR) of an RGB image: two passes, vertical first when
// the height shrinks by more than twice as many pixels as the width (Pillow 13's rule).
function resample(src, w, h, outW, outH, box) {
  const hc = coefficients(w, box[0], box[2], outW);
  const vc = coefficients(h, box[1], box[3], outH);
  if (h - outH > 0 && h - outH > (w - outW) * 2) {
    return horizontalPass(verticalPass(src, w, outH, vc), w, outH, outW, hc);
  }
  return verticalPass(horizontalPass(src, w, h, outW, hc), outW, outH, vc);
}

// Pillow's ImagingReduce: the mean of each fx x fy block of `box` (partial blocks at the edges),
// rounded as Reduce.c does (a 24-bit fixed-point multiplier computed in single precision).
function reduce(src, w, fx, fy, box) {
  const [x0, y0, x1, y1] = box;
  const outW = Math.ceil((x1 - x0) / fx), outH = Math.ceil((y1 - y0) / fy);
  const out = new Uint8Array(outW * outH * 3);
  for (let Y = 0; Y < outH; Y++) {
    const ya = y0 + Y * fy, yb = Math.min(ya + fy, y1);
    for (let X = 0; X < outW; X++) {
      const xa = x0 + X * fx, xb = Math.min(xa + fx, x1);
      const count = (yb - ya) * (xb - xa);
      const multiplier = Math.trunc(Math.fround(4294967296 / (256 * count)));
      const amend = Math.trunc(count / 2);
      let s0 = amend, s1 = amend, s2 = amend;
      for (let y = ya; y < yb; y++) {
        for (let x = xa; x < xb; x++) {
          const p = (y * w + x) * 3;
          s0 += src[p]; s1 += src[p + 1]; s2 += src[p + 2];
        }
      }
      const q = (Y * outW + X) * 3;
      out[q] = Math.floor((s0 * multiplier) / 16777216);
      out[q + 1] = Math.floor((s1 * multiplier) / 16777216);
      out[q + 2] = Math.floor((s2 * multiplier) / 16777216);
    }
  }
  return { pixels: out, w: outW, h: outH };
}

// Image.resize(size, BILINEAR, box, reducing_gap)
export function pillowResize(src, w, h, outW, outH, box = [0, 0, w, h], reducingGap = null) {
  if (w === outW && h === outH && box[0] === 0 && box[1] === 0 && box[2] === w && box[3] === h) {
    return src.slice();
  }
  if (reducingGap !== null) {
    const fx = Math.trunc((box[2] - box[0]) / outW / reducingGap) || 1;
    const fy = Math.trunc((box[3] - box[1]) / outH / reducingGap) || 1;
    if (fx > 1 || fy > 1) {
      const sx = 0.5 * ((box[2] - box[0]) / outW), sy = 0.5 * ((box[3] - box[1]) / outH);
      const safe = [
        Math.max(0, Math.trunc(box[0] - sx)),
        Math.max(0, Math.trunc(box[1] - sy)),
        Math.min(w, Math.ceil(box[2] + sx)),
        Math.min(h, Math.ceil(box[3] + sy)),
      ];
      const r = reduce(src, w, fx, fy, safe);
      const newBox = [
        (box[0] - safe[0]) / fx, (box[1] - safe[1]) / fy,
        (box[2] - safe[0]) / fx, (box[3] - safe[1]) / fy,
      ];
      return resample(r.pixels, r.w, r.h, outW, outH, newBox);
    }
  }
  return resample(src, w, h, outW, outH, box);
}

// ImageOps.fit(img, size, BILINEAR): the largest centred region with the output's aspect.
function centreCrop(w, h, outW, outH) {
  const live = w / h, want = outW / outH;
  let cw = w, ch = h;
  if (live === want) { /* keep */ } else if (live >= want) { cw = want * h; } else { ch = w / want; }
  const left = (w - cw) * 0.5, top = (h - ch) * 0.5;
  return [left, top, left + cw, top + ch];
}

function borderMean(px, w, h) {
  // the mean over the outermost rows and columns (corners counted twice, as numpy does)
  let sum = 0, n = 0;
  const grey = (x, y) => { const p = (y * w + x) * 3; return (px[p] + px[p + 1] + px[p + 2]) / 3; };
  for (let x = 0; x < w; x++) { sum += grey(x, 0) + grey(x, h - 1); n += 2; }
  for (let y = 0; y < h; y++) { sum += grey(0, y) + grey(w - 1, y); n += 2; }
  return sum / n;
}

// RGB (w x h x 3, interleaved) -> the model's H x W x 3 raw pixels.
export function toModelPixels(rgb, w, h, model) {
  const outW = model.width, outH = model.height;
  let px;
  if (model.resize === "crop" && (w !== outW || h !== outH)) {
    px = pillowResize(rgb, w, h, outW, outH, centreCrop(w, h, outW, outH), null);
  } else {
    px = pillowResize(rgb, w, h, outW, outH, [0, 0, w, h], REDUCING_GAP);
  }
  if (model.background === "dark" && borderMean(px, outW, outH) > 127.0) {
    for (let i = 0; i < px.length; i++) px[i] = 255 - px[i];
  }
  return px;
}

// RGBA (a canvas's ImageData, already on white) -> RGB
export function rgbaToRgb(rgba) {
  const n = rgba.length / 4, out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    out[i * 3] = rgba[i * 4]; out[i * 3 + 1] = rgba[i * 4 + 1]; out[i * 3 + 2] = rgba[i * 4 + 2];
  }
  return out;
}
