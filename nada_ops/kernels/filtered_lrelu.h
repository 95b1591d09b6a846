// filtered_lrelu: StyleGAN3's alias-free nonlinearity in one pass over every [H, W] plane of an
// NCHW tensor (bias, upsample + FIR filter, leaky ReLU with gain and clamp, FIR filter +
// downsample), without writing the 'up'-times larger intermediate image to memory.
//
// One pass computes, along each axis (the 2D filters are given in *correlation* orientation,
// with their gains already applied, by the Python wrapper):
//
//   stage 1   u[j] = sum_k f1[k] * xb[(j + k - p0) / up]       over the k with (j + k - p0) % up == 0,
//             for 0 <= j < t  (xb = x + bias inside the image, 0 outside),
//   act       mode 0: v = clamp(lrelu(u, slope) * gain)      (clamp < 0: no clamping)
//             mode 1: the same, and mask[j] = 0 (clamped) / 1 (u <= 0) / 2 (u > 0)
//             mode 2: v = u * {0, gain * slope, gain}[mask[j]]    (a stored mask, see below)
//   stage 2   y[o] = sum_k f2[k] * v[o * down + k - q0]      (v = 0 outside 0 <= j < t),
//             for 0 <= o < out.
//
// The forward of the op is mode 1 (mode 0 when no gradient is needed) with q0 = 0.  Its backward
// is the SAME pass in mode 2 with the geometry transposed -- stage 1 upsamples dy by 'down' with
// the flipped downsampling filter, the stored mask gives the leaky ReLU's derivative at every
// intermediate pixel, stage 2 filters with the flipped upsampling filter and decimates by 'up'
// (see nada_ops/kernels/autograd.py for the derivation).  Mode 2 is linear in its input, and its
// adjoint is mode 2 with the geometry transposed back: gradients of any order use this one pass.
//
// Work decomposition (identical on the GPU and in the extension's sequential CPU run): the output
// is cut into tiles of tile_w x tile_h pixels x tile_p planes.  A tile loads the input window it
// needs (plus bias; zeros outside the image) into a scratch buffer (shared memory on the GPU),
// computes the window of intermediate values v its outputs read (stage 1 + activation; mask
// written or read there), then its outputs (stage 2).  The three steps are the functions below;
// the CUDA kernel runs them with its threads between barriers, the CPU path with one "thread".
#pragma once

#include "common.h"

namespace nada {

struct FLReluParams {
  const void* x;      // input planes: element (plane, iy, ix) at plane*sx_p + iy*sx_h + ix*sx_w
  const void* b;      // bias [channels] in the dtype of x, or null
  const void* f1;     // stage-1 filter [f1_h, f1_w], contiguous, accumulation dtype
  const void* f2;     // stage-2 filter [f2_h, f2_w]
  void* y;            // output [planes, out_h, out_w], contiguous
  uint8_t* mask;      // [planes, t_h, t_w]: written in mode 1, read in mode 2, unused in mode 0
  int64_t planes;
  int64_t channels;   // plane % channels = the bias index
  int64_t sx_p, sx_h, sx_w;
  int in_w, in_h, t_w, t_h, out_w, out_h;
  int up_x, up_y, pad_x0, pad_y0;      // stage 1
  int down_x, down_y, q_x0, q_y0;      // stage 2
  int f1_w, f1_h, f2_w, f2_h;
  int mode;
  double gain, slope, clamp;
  // Plan (flrelu_plan).
  int tile_w, tile_h, tile_p;  // output tile
  int tt_w, tt_h;              // intermediate window of a tile
  int tx_w, tx_h;              // input window capacity of a tile
  int grid_x, grid_y, grid_z;
  int threads;
  int64_t smem_bytes;          // scratch bytes per block (< 0: does not fit)
};

// Input window capacity for an intermediate window of `tt` values (stage 1, one axis).
inline int flrelu_input_window(int tt, int up, int taps) { return (tt + taps - 2) / up + 1; }

inline int64_t flrelu_smem(const FLReluParams& p, int acc_bytes) {
  return ((int64_t)p.f1_w * p.f1_h + (int64_t)p.f2_w * p.f2_h +
          (int64_t)p.tile_p * ((int64_t)p.tx_w * p.tx_h + (int64_t)p.tt_w * p.tt_h)) * acc_bytes;
}

inline int flrelu_pow2_at_least(int v) {
  int p = 1;
  while (p < v && p < (1 << 30)) p <<= 1;
  return p;
}

// Chooses tile sizes, scratch size and launch grid.  acc_bytes: sizeof(accumulator).
inline void flrelu_plan(FLReluParams& p, int acc_bytes, int64_t smem_limit = 48 * 1024) {
  const int target = 256;  // output pixels per block (one per thread)
  p.tile_w = p.out_w < 16 ? flrelu_pow2_at_least(p.out_w) : 16;
  p.tile_h = p.out_h < 16 ? flrelu_pow2_at_least(p.out_h) : 16;
  int64_t tp = target / (p.tile_w * p.tile_h);
  if (tp < 1) tp = 1;
  if (tp > p.planes) tp = p.planes > 0 ? p.planes : 1;
  p.tile_p = (int)tp;
  for (;;) {
    p.tt_w = (p.tile_w - 1) * p.down_x + p.f2_w;
    p.tt_h = (p.tile_h - 1) * p.down_y + p.f2_h;
    p.tx_w = flrelu_input_window(p.tt_w, p.up_x, p.f1_w);
    p.tx_h = flrelu_input_window(p.tt_h, p.up_y, p.f1_h);
    p.smem_bytes = flrelu_smem(p, acc_bytes);
    if (p.smem_bytes <= smem_limit) break;
    if (p.tile_p > 1) p.tile_p = (p.tile_p + 1) / 2;
    else if (p.tile_w >= p.tile_h && p.tile_w > 1) p.tile_w /= 2;
    else if (p.tile_h > 1) p.tile_h /= 2;
    else { p.smem_bytes = -1; break; }  // the filters alone are too large
  }
  p.threads = 256;
  p.grid_x = (p.out_w + p.tile_w - 1) / p.tile_w;
  p.grid_y = (p.out_h + p.tile_h - 1) / p.tile_h;
  const int64_t gz = (p.planes + p.tile_p - 1) / p.tile_p;
  p.grid_z = (int)(gz < 65535 ? (gz > 0 ? gz : 1) : 65535);
}

// Copies both filters into the scratch buffer: sf1 then sf2.
template <typename A>
NADA_HD void flrelu_load_filters(const FLReluParams& p, A* sf1, A* sf2, int tid, int nthreads) {
  const A* f1 = static_cast<const A*>(p.f1);
  const A* f2 = static_cast<const A*>(p.f2);
  for (int i = tid; i < p.f1_w * p.f1_h; i += nthreads) sf1[i] = f1[i];
  for (int i = tid; i < p.f2_w * p.f2_h; i += nthreads) sf2[i] = f2[i];
}

// First intermediate index of the window of the tile whose outputs start at o0 (one axis).
NADA_HD int flrelu_first_t(int o0, int down, int q0) { return o0 * down - q0; }
// First input index read for an intermediate window starting at t0 (one axis).
NADA_HD int flrelu_first_x(int t0, int up, int p0) { return ceil_div(t0 - p0, up); }

// Loads the input window (+ bias) of tile (bx, by) for planes plane0 .. plane0 + tile_p - 1.
template <typename T, typename A>
NADA_HD void flrelu_load_input(const FLReluParams& p, A* sx, int bx, int by, int64_t plane0, int tid,
                               int nthreads) {
  const T* x = static_cast<const T*>(p.x);
  const T* b = static_cast<const T*>(p.b);
  const int ix0 = flrelu_first_x(flrelu_first_t(bx * p.tile_w, p.down_x, p.q_x0), p.up_x, p.pad_x0);
  const int iy0 = flrelu_first_x(flrelu_first_t(by * p.tile_h, p.down_y, p.q_y0), p.up_y, p.pad_y0);
  const int per_plane = p.tx_w * p.tx_h;
  const int total = per_plane * p.tile_p;
  for (int i = tid; i < total; i += nthreads) {
    const int tp = i / per_plane;
    const int r = i - tp * per_plane;
    const int ty = r / p.tx_w;
    const int tx = r - ty * p.tx_w;
    const int64_t plane = plane0 + tp;
    const int ix = ix0 + tx, iy = iy0 + ty;
    A v = A(0);
    if (plane < p.planes && ix >= 0 && ix < p.in_w && iy >= 0 && iy < p.in_h) {
      v = load_acc(x + plane * p.sx_p + (int64_t)iy * p.sx_h + (int64_t)ix * p.sx_w);
      if (b != nullptr) v += load_acc(b + plane % p.channels);
    }
    sx[i] = v;
  }
}

// The activation of one intermediate value (modes 0 and 1); *code receives the mask value.
template <typename A>
NADA_HD A flrelu_activate(A u, A gain, A slope, A clamp, uint8_t* code) {
  A v = u > A(0) ? u : u * slope;
  v *= gain;
  uint8_t c = u > A(0) ? 2 : 1;
  if (clamp >= A(0) && m_abs(v) > clamp) {
    v = v > A(0) ? clamp : -clamp;
    c = 0;
  }
  *code = c;
  return v;
}

// Stage 1 + activation: the intermediate window of tile (bx, by) from its input window.
template <typename A>
NADA_HD void flrelu_compute_t(const FLReluParams& p, const A* sf1, const A* sx, A* st, int bx, int by,
                              int64_t plane0, int tid, int nthreads) {
  const int t0x = flrelu_first_t(bx * p.tile_w, p.down_x, p.q_x0);
  const int t0y = flrelu_first_t(by * p.tile_h, p.down_y, p.q_y0);
  const int ix0 = flrelu_first_x(t0x, p.up_x, p.pad_x0);
  const int iy0 = flrelu_first_x(t0y, p.up_y, p.pad_y0);
  const A gain = static_cast<A>(p.gain), slope = static_cast<A>(p.slope), clamp = static_cast<A>(p.clamp);
  const int per_plane = p.tt_w * p.tt_h;
  const int total = per_plane * p.tile_p;
  for (int i = tid; i < total; i += nthreads) {
    const int tp = i / per_plane;
    const int r = i - tp * per_plane;
    const int ty = r / p.tt_w;
    const int tx = r - ty * p.tt_w;
    const int jx = t0x + tx, jy = t0y + ty;
    const int64_t plane = plane0 + tp;
    if (plane >= p.planes || jx < 0 || jx >= p.t_w || jy < 0 || jy >= p.t_h) {
      st[i] = A(0);  // stage 2 sees zeros outside the intermediate image
      continue;
    }
    // First contributing input and its tap, per axis (upsampling = zero insertion).
    const int sxo = jx - p.pad_x0, syo = jy - p.pad_y0;
    const int ixf = ceil_div(sxo, p.up_x), iyf = ceil_div(syo, p.up_y);
    const int kx0 = ixf * p.up_x - sxo, ky0 = iyf * p.up_y - syo;
    const A* win = sx + (int64_t)tp * p.tx_w * p.tx_h + (iyf - iy0) * p.tx_w + (ixf - ix0);
    A u = A(0);
    for (int ky = ky0; ky < p.f1_h; ky += p.up_y, win += p.tx_w) {
      const A* fr = sf1 + ky * p.f1_w;
      const A* xr = win;
      for (int kx = kx0; kx < p.f1_w; kx += p.up_x, ++xr) u += *xr * fr[kx];
    }
    const int64_t m = (plane * p.t_h + jy) * p.t_w + jx;
    A v;
    if (p.mode == 2) {
      const uint8_t c = p.mask[m];
      v = c == 2 ? u * gain : (c == 1 ? u * (gain * slope) : u * A(0));
    } else {
      uint8_t c;
      v = flrelu_activate<A>(u, gain, slope, clamp, &c);
      if (p.mode == 1) p.mask[m] = c;  // tiles that overlap write the same value
    }
    st[i] = v;
  }
}

// Stage 2: the outputs of tile (bx, by) from its intermediate window.
template <typename T, typename A>
NADA_HD void flrelu_compute_y(const FLReluParams& p, const A* sf2, const A* st, int bx, int by, int64_t plane0,
                              int tid, int nthreads) {
  T* y = static_cast<T*>(p.y);
  const int ox0 = bx * p.tile_w, oy0 = by * p.tile_h;
  const int per_plane = p.tile_w * p.tile_h;
  const int total = per_plane * p.tile_p;
  for (int i = tid; i < total; i += nthreads) {
    const int tp = i / per_plane;
    const int r = i - tp * per_plane;
    const int ty = r / p.tile_w;
    const int tx = r - ty * p.tile_w;
    const int ox = ox0 + tx, oy = oy0 + ty;
    const int64_t plane = plane0 + tp;
    if (ox >= p.out_w || oy >= p.out_h || plane >= p.planes) continue;
    const A* win = st + (int64_t)tp * p.tt_w * p.tt_h + (ty * p.down_y) * p.tt_w + tx * p.down_x;
    A acc = A(0);
    for (int ky = 0; ky < p.f2_h; ++ky, win += p.tt_w) {
      const A* fr = sf2 + ky * p.f2_w;
      for (int kx = 0; kx < p.f2_w; ++kx) acc += win[kx] * fr[kx];
    }
    store_acc(y + (plane * p.out_h + oy) * p.out_w + ox, acc);
  }
}

#ifdef NADA_WITH_CUDA
// Launches the kernel on `stream` (a cudaStream_t); returns null or an error message.
const char* filtered_lrelu_cuda(const FLReluParams& p, int dtype, void* stream);
#endif

}  // namespace nada
