// upfirdn2d: zero-insertion upsampling, padding/cropping, 2D FIR filtering and
// decimation of every [H, W] plane of an NCHW tensor, in one pass.
//
// The filter `f` given to the kernel is already in *correlation* orientation and
// already multiplied by the gain (the Python wrapper prepares it), so that along
// one axis, with s(o) = o * down - pad0,
//
//     y[o] = sum_k f[k] * x[i]   over the taps k = up * i - s(o),  0 <= k < fw.
//
// Work decomposition (identical on the GPU and in the sequential CPU run): the
// output is cut into tiles of tile_w x tile_h pixels x tile_p planes; a tile first
// loads the input window it needs into a scratch buffer (shared memory on the GPU,
// zeros outside the image), then every output pixel of the tile reads its taps
// from that buffer.  The two steps are the functions below; the CUDA kernel runs
// them with its threads, the CPU path runs them with one "thread".
#pragma once

#include "common.h"

namespace nada {

struct UpfirdnParams {
  const void* x;   // input planes: element (plane, iy, ix) at plane*sx_p + iy*sx_h + ix*sx_w
  const void* f;   // filter [f_h, f_w], contiguous, accumulation dtype
  void* y;         // output [planes, out_h, out_w], contiguous
  int64_t planes;
  int64_t sx_p, sx_h, sx_w;
  int in_w, in_h, out_w, out_h;
  int up_x, up_y, down_x, down_y, pad_x0, pad_y0;
  int f_w, f_h;
  // Plan (upfirdn_plan).
  int tile_w, tile_h, tile_p;  // output tile
  int tin_w, tin_h;            // input window capacity of a tile
  int grid_x, grid_y, grid_z;
  int threads;
  int64_t smem_bytes;          // scratch bytes per tile (< 0: does not fit)
};

// Largest input window that a tile of `tile` outputs can need along one axis.
inline int upfirdn_window(int tile, int up, int down, int taps) {
  return ((tile - 1) * down + taps - 1) / up + 1;
}

inline int pow2_at_least(int v) {
  int p = 1;
  while (p < v && p < (1 << 30)) p <<= 1;
  return p;
}

// Chooses tile sizes, scratch size and launch grid.  acc_bytes: sizeof(accumulator).
inline void upfirdn_plan(UpfirdnParams& p, int acc_bytes, int64_t smem_limit = 48 * 1024) {
  const int target = 1024;  // output pixels per tile (4 per thread with 256 threads)
  p.tile_w = p.out_w < 64 ? pow2_at_least(p.out_w) : 64;
  p.tile_h = pow2_at_least(p.out_h);
  if (p.tile_h > target / p.tile_w) p.tile_h = target / p.tile_w > 0 ? target / p.tile_w : 1;
  int64_t tp = target / (p.tile_w * p.tile_h);
  if (tp < 1) tp = 1;
  if (tp > p.planes) tp = p.planes > 0 ? p.planes : 1;
  p.tile_p = (int)tp;
  for (;;) {
    p.tin_w = upfirdn_window(p.tile_w, p.up_x, p.down_x, p.f_w);
    p.tin_h = upfirdn_window(p.tile_h, p.up_y, p.down_y, p.f_h);
    p.smem_bytes = ((int64_t)p.tin_w * p.tin_h * p.tile_p + (int64_t)p.f_w * p.f_h) * acc_bytes;
    if (p.smem_bytes <= smem_limit) break;
    if (p.tile_p > 1) p.tile_p = (p.tile_p + 1) / 2;
    else if (p.tile_w >= p.tile_h && p.tile_w > 1) p.tile_w /= 2;
    else if (p.tile_h > 1) p.tile_h /= 2;
    else { p.smem_bytes = -1; break; }  // the filter alone is too large
  }
  const int outputs = p.tile_w * p.tile_h * p.tile_p;
  p.threads = outputs >= 256 ? 256 : ((outputs + 31) / 32) * 32;
  p.grid_x = (p.out_w + p.tile_w - 1) / p.tile_w;
  p.grid_y = (p.out_h + p.tile_h - 1) / p.tile_h;
  const int64_t gz = (p.planes + p.tile_p - 1) / p.tile_p;
  p.grid_z = (int)(gz < 65535 ? (gz > 0 ? gz : 1) : 65535);
}

// Copies the filter into the scratch buffer.
template <typename A>
NADA_HD void upfirdn_load_filter(const UpfirdnParams& p, A* sf, int tid, int nthreads) {
  const A* f = static_cast<const A*>(p.f);
  for (int i = tid; i < p.f_w * p.f_h; i += nthreads) sf[i] = f[i];
}

// First input index read by a tile that starts at output index o0.
NADA_HD int upfirdn_first_input(int o0, int up, int down, int pad0) {
  return ceil_div(o0 * down - pad0, up);
}

// Loads the input window of tile (bx, by) for planes plane0 .. plane0 + tile_p - 1.
template <typename T, typename A>
NADA_HD void upfirdn_load_tile(const UpfirdnParams& p, A* sx, int bx, int by, int64_t plane0,
                               int tid, int nthreads) {
  const T* x = static_cast<const T*>(p.x);
  const int ix0 = upfirdn_first_input(bx * p.tile_w, p.up_x, p.down_x, p.pad_x0);
  const int iy0 = upfirdn_first_input(by * p.tile_h, p.up_y, p.down_y, p.pad_y0);
  const int per_plane = p.tin_w * p.tin_h;
  const int total = per_plane * p.tile_p;
  for (int i = tid; i < total; i += nthreads) {
    const int tp = i / per_plane;
    const int r = i - tp * per_plane;
    const int ty = r / p.tin_w;
    const int tx = r - ty * p.tin_w;
    const int64_t plane = plane0 + tp;
    const int ix = ix0 + tx, iy = iy0 + ty;
    A v = A(0);
    if (plane < p.planes && ix >= 0 && ix < p.in_w && iy >= 0 && iy < p.in_h)
      v = load_acc(x + plane * p.sx_p + (int64_t)iy * p.sx_h + (int64_t)ix * p.sx_w);
    sx[i] = v;
  }
}

// Computes the outputs of tile (bx, by) from the loaded window and filter.
template <typename T, typename A>
NADA_HD void upfirdn_compute_tile(const UpfirdnParams& p, const A* sf, const A* sx, int bx, int by,
                                  int64_t plane0, int tid, int nthreads) {
  T* y = static_cast<T*>(p.y);
  const int ox0 = bx * p.tile_w, oy0 = by * p.tile_h;
  const int ix0 = upfirdn_first_input(ox0, p.up_x, p.down_x, p.pad_x0);
  const int iy0 = upfirdn_first_input(oy0, p.up_y, p.down_y, p.pad_y0);
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
    // First contributing input and its tap, per axis.
    const int sxo = ox * p.down_x - p.pad_x0, syo = oy * p.down_y - p.pad_y0;
    const int ixf = ceil_div(sxo, p.up_x), iyf = ceil_div(syo, p.up_y);
    const int kx0 = ixf * p.up_x - sxo, ky0 = iyf * p.up_y - syo;
    const A* win = sx + (int64_t)tp * p.tin_w * p.tin_h + (iyf - iy0) * p.tin_w + (ixf - ix0);
    A acc = A(0);
    for (int ky = ky0; ky < p.f_h; ky += p.up_y, win += p.tin_w) {
      const A* fr = sf + ky * p.f_w;
      const A* xr = win;
      for (int kx = kx0; kx < p.f_w; kx += p.up_x, ++xr) acc += *xr * fr[kx];
    }
    store_acc(y + (plane * p.out_h + oy) * p.out_w + ox, acc);
  }
}

#ifdef NADA_WITH_CUDA
// Launches the kernel on `stream` (a cudaStream_t); returns null or an error message.
const char* upfirdn2d_cuda(const UpfirdnParams& p, int dtype, void* stream);
#endif

}  // namespace nada
