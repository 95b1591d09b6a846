// Python bindings of the nada_ops compiled ops: argument checks, dtype/device
// dispatch, CUDA launches (when built with NADA_WITH_CUDA) and a sequential CPU
// run of the same element/tile functions (used by the tests on machines without
// a GPU; the library itself uses the PyTorch reference on CPU).
#include <torch/extension.h>

#include <string>
#include <vector>

#ifdef NADA_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "bias_act.h"
#include "filtered_lrelu.h"
#include "upfirdn2d.h"

namespace {

using nada::BiasActParams;
using nada::FLReluParams;
using nada::UpfirdnParams;

int dtype_code(const at::Tensor& t, const char* op) {
  switch (t.scalar_type()) {
    case at::kFloat: return nada::DT_FLOAT;
    case at::kHalf: return nada::DT_HALF;
    case at::kBFloat16: return nada::DT_BFLOAT16;
    case at::kDouble: return nada::DT_DOUBLE;
    default:
      TORCH_CHECK(false, op, ": unsupported dtype ", t.scalar_type(),
                  " (float32, float16, bfloat16 and float64 are supported)");
  }
  return -1;
}

void check_device(const at::Tensor& t, const char* op) {
  if (t.is_cuda()) {
#ifndef NADA_WITH_CUDA
    TORCH_CHECK(false, op, ": this build of the extension has no CUDA support (CPU-only test build)");
#endif
    return;
  }
  TORCH_CHECK(t.device().is_cpu(), op, ": tensors must be on a CUDA device (or on the CPU for the "
              "test path), got ", t.device());
}

// ------------------------------------------------------------------ bias_act

template <typename T, int ACT>
void bias_act_cpu_act(const BiasActParams& p) {
  using A = typename nada::AccOf<T>::type;
  const T* x = static_cast<const T*>(p.x);
  const T* b = static_cast<const T*>(p.b);
  const T* dy = static_cast<const T*>(p.dy);
  T* out = static_cast<T*>(p.out);
  const A alpha = static_cast<A>(p.alpha), gain = static_cast<A>(p.gain), clamp = static_cast<A>(p.clamp);
  const bool has_ref = x != nullptr;
  at::parallel_for(0, p.n, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const A xv = has_ref ? nada::load_acc(x + i) : A(0);
      const A bv = b != nullptr ? nada::load_acc(b + (i / p.inner) % p.channels) : A(0);
      const A dyv = p.mode != 0 ? nada::load_acc(dy + i) : A(0);
      nada::store_acc(out + i, nada::bias_act_element<ACT, A>(p.mode, p.ref_is_x != 0, has_ref, xv, bv, dyv,
                                                              alpha, gain, clamp));
    }
  });
}

template <typename T>
void bias_act_cpu(const BiasActParams& p, int act) {
  switch (act) {
    case nada::ACT_LINEAR: return bias_act_cpu_act<T, nada::ACT_LINEAR>(p);
    case nada::ACT_RELU: return bias_act_cpu_act<T, nada::ACT_RELU>(p);
    case nada::ACT_LRELU: return bias_act_cpu_act<T, nada::ACT_LRELU>(p);
    case nada::ACT_TANH: return bias_act_cpu_act<T, nada::ACT_TANH>(p);
    case nada::ACT_SIGMOID: return bias_act_cpu_act<T, nada::ACT_SIGMOID>(p);
    case nada::ACT_ELU: return bias_act_cpu_act<T, nada::ACT_ELU>(p);
    case nada::ACT_SELU: return bias_act_cpu_act<T, nada::ACT_SELU>(p);
    case nada::ACT_SOFTPLUS: return bias_act_cpu_act<T, nada::ACT_SOFTPLUS>(p);
    case nada::ACT_SWISH: return bias_act_cpu_act<T, nada::ACT_SWISH>(p);
    default: TORCH_CHECK(false, "bias_act: unknown activation index ", act);
  }
}

at::Tensor bias_act_run(const at::Tensor& main, const at::Tensor& x, const at::Tensor& b, const at::Tensor& dy,
                        int64_t dim, int64_t act, int mode, bool ref_is_x, double alpha, double gain, double clamp) {
  // `main` gives the output's shape, dtype and device (x in mode 0, dy otherwise).
  const char* op = mode == 0 ? "bias_act" : "bias_act (gradient)";
  TORCH_CHECK(act >= nada::ACT_FIRST && act <= nada::ACT_LAST, op, ": unknown activation index ", act);
  const int dt = dtype_code(main, op);
  check_device(main, op);
  TORCH_CHECK(main.dim() >= 1 || !b.defined() || b.numel() == 0, op, ": a bias needs a tensor of rank >= 1");
  const bool has_b = b.defined() && b.numel() > 0;
  const bool has_x = x.defined() && x.numel() > 0;
  if (has_b) {
    TORCH_CHECK(dim >= 0 && dim < main.dim(), op, ": dim ", dim, " out of range for rank ", main.dim());
    TORCH_CHECK(b.dim() == 1 && b.size(0) == main.size(dim), op, ": bias of shape ", b.sizes(),
                " does not match dimension ", dim, " of ", main.sizes());
    TORCH_CHECK(b.scalar_type() == main.scalar_type() && b.device() == main.device(), op,
                ": bias must have the dtype and device of x");
  }
  if (has_x) {
    TORCH_CHECK(x.sizes() == main.sizes() && x.scalar_type() == main.scalar_type() && x.device() == main.device(),
                op, ": the reference tensor must match the gradient in shape, dtype and device");
  }
  TORCH_CHECK(mode == 0 || has_x || (act == nada::ACT_LINEAR && clamp < 0), op,
              ": this activation/clamp needs a reference tensor");
  TORCH_CHECK(mode == 0 || ref_is_x || act != nada::ACT_SWISH || !has_x, op,
              ": swish needs the input x as reference");

  at::Tensor mainc = main.contiguous();
  at::Tensor xc = has_x ? x.contiguous() : at::Tensor();
  at::Tensor bc = has_b ? b.contiguous() : at::Tensor();
  at::Tensor out = at::empty_like(mainc, at::MemoryFormat::Contiguous);
  if (mainc.numel() == 0) return out;

  BiasActParams p{};
  p.mode = mode;
  p.ref_is_x = ref_is_x ? 1 : 0;
  p.x = mode == 0 ? mainc.data_ptr() : (has_x ? xc.data_ptr() : nullptr);
  p.dy = mode == 0 ? nullptr : mainc.data_ptr();
  p.b = (has_b && (mode == 0 || ref_is_x)) ? bc.data_ptr() : nullptr;
  p.out = out.data_ptr();
  p.n = mainc.numel();
  p.channels = has_b ? main.size(dim) : 1;
  p.inner = 1;
  if (has_b)
    for (int64_t d = dim + 1; d < main.dim(); ++d) p.inner *= main.size(d);
  p.alpha = alpha;
  p.gain = gain;
  p.clamp = clamp;

  if (mainc.is_cuda()) {
#ifdef NADA_WITH_CUDA
    const c10::cuda::CUDAGuard guard(mainc.device());
    const char* err = nada::bias_act_cuda(p, static_cast<int>(act), dt,
                                          c10::cuda::getCurrentCUDAStream(mainc.device().index()).stream());
    TORCH_CHECK(err == nullptr, op, ": CUDA launch failed: ", err);
#endif
  } else {
    switch (dt) {
      case nada::DT_FLOAT: bias_act_cpu<float>(p, static_cast<int>(act)); break;
      case nada::DT_HALF: bias_act_cpu<c10::Half>(p, static_cast<int>(act)); break;
      case nada::DT_BFLOAT16: bias_act_cpu<c10::BFloat16>(p, static_cast<int>(act)); break;
      default: bias_act_cpu<double>(p, static_cast<int>(act)); break;
    }
  }
  return out;
}

at::Tensor bias_act_fwd(const at::Tensor& x, const at::Tensor& b, int64_t dim, int64_t act, double alpha,
                        double gain, double clamp) {
  return bias_act_run(x, at::Tensor(), b, at::Tensor(), dim, act, 0, false, alpha, gain, clamp);
}

at::Tensor bias_act_grad(const at::Tensor& dy, const at::Tensor& ref, const at::Tensor& b, int64_t dim,
                         int64_t act, double alpha, double gain, double clamp, bool ref_is_x, int64_t order) {
  TORCH_CHECK(order == 1 || order == 2, "bias_act (gradient): order must be 1 or 2, got ", order);
  return bias_act_run(dy, ref, b, at::Tensor(), dim, act, static_cast<int>(order), ref_is_x, alpha, gain, clamp);
}

// ----------------------------------------------------------------- upfirdn2d

template <typename T>
void upfirdn2d_cpu(const UpfirdnParams& p) {
  // The GPU schedule, run block by block with a single "thread".
  using A = typename nada::AccOf<T>::type;
  const int64_t z_blocks = p.grid_z;
  at::parallel_for(0, z_blocks, 1, [&](int64_t zb, int64_t ze) {
    std::vector<A> scratch(static_cast<size_t>(p.smem_bytes / sizeof(A)));
    A* sf = scratch.data();
    A* sx = sf + p.f_w * p.f_h;
    nada::upfirdn_load_filter<A>(p, sf, 0, 1);
    for (int64_t bz = zb; bz < ze; ++bz)
      for (int64_t plane0 = bz * p.tile_p; plane0 < p.planes; plane0 += z_blocks * p.tile_p)
        for (int by = 0; by < p.grid_y; ++by)
          for (int bx = 0; bx < p.grid_x; ++bx) {
            nada::upfirdn_load_tile<T, A>(p, sx, bx, by, plane0, 0, 1);
            nada::upfirdn_compute_tile<T, A>(p, sf, sx, bx, by, plane0, 0, 1);
          }
  });
}

at::Tensor upfirdn2d(const at::Tensor& x_in, const at::Tensor& f_in, int64_t up_x, int64_t up_y, int64_t down_x,
                     int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1) {
  const char* op = "upfirdn2d";
  const int dt = dtype_code(x_in, op);
  check_device(x_in, op);
  TORCH_CHECK(x_in.dim() == 4, op, ": x must be NCHW, got shape ", x_in.sizes());
  TORCH_CHECK(f_in.dim() == 2, op, ": the kernel takes a 2D filter, got shape ", f_in.sizes());
  TORCH_CHECK(f_in.device() == x_in.device(), op, ": the filter must be on the device of x");
  const auto acc = x_in.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(f_in.scalar_type() == acc, op, ": the filter must be ", acc, " for x of dtype ", x_in.scalar_type());
  TORCH_CHECK(f_in.numel() > 0, op, ": empty filter");
  TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1, op, ": up and down factors must be >= 1");
  const int64_t lim = int64_t(1) << 30;
  TORCH_CHECK(x_in.size(2) * up_y < lim && x_in.size(3) * up_x < lim, op, ": image too large");
  for (int64_t v : {pad_x0, pad_x1, pad_y0, pad_y1}) TORCH_CHECK(v > -lim && v < lim, op, ": padding out of range");

  const int64_t n = x_in.size(0), c = x_in.size(1), in_h = x_in.size(2), in_w = x_in.size(3);
  const int64_t f_h = f_in.size(0), f_w = f_in.size(1);
  const int64_t out_h = (in_h * up_y + pad_y0 + pad_y1 - f_h) / down_y + 1;
  const int64_t out_w = (in_w * up_x + pad_x0 + pad_x1 - f_w) / down_x + 1;
  TORCH_CHECK(in_h * up_y + pad_y0 + pad_y1 - f_h >= 0 && in_w * up_x + pad_x0 + pad_x1 - f_w >= 0, op,
              ": the padded image is smaller than the filter (x ", x_in.sizes(), ", filter ", f_in.sizes(), ")");

  // Planes must be addressable as plane * stride: true for NCHW-contiguous-like layouts.
  at::Tensor x = x_in;
  if (!(n <= 1 || x.stride(0) == c * x.stride(1)))
    x = x.contiguous();
  at::Tensor f = f_in.contiguous();
  at::Tensor y = at::empty({n, c, out_h, out_w}, x.options().memory_format(at::MemoryFormat::Contiguous));
  if (y.numel() == 0) return y;

  UpfirdnParams p{};
  p.x = x.data_ptr();
  p.f = f.data_ptr();
  p.y = y.data_ptr();
  p.planes = n * c;
  p.sx_p = x.stride(1);
  p.sx_h = x.stride(2);
  p.sx_w = x.stride(3);
  p.in_w = static_cast<int>(in_w);
  p.in_h = static_cast<int>(in_h);
  p.out_w = static_cast<int>(out_w);
  p.out_h = static_cast<int>(out_h);
  p.up_x = static_cast<int>(up_x);
  p.up_y = static_cast<int>(up_y);
  p.down_x = static_cast<int>(down_x);
  p.down_y = static_cast<int>(down_y);
  p.pad_x0 = static_cast<int>(pad_x0);
  p.pad_y0 = static_cast<int>(pad_y0);
  p.f_w = static_cast<int>(f_w);
  p.f_h = static_cast<int>(f_h);
  const int acc_bytes = acc == at::kDouble ? 8 : 4;
  nada::upfirdn_plan(p, acc_bytes);
  TORCH_CHECK(p.smem_bytes >= 0, op, ": filter ", f.sizes(), " is too large for the compiled kernel");

  if (x.is_cuda()) {
#ifdef NADA_WITH_CUDA
    const c10::cuda::CUDAGuard guard(x.device());
    const char* err = nada::upfirdn2d_cuda(p, dt, c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
    TORCH_CHECK(err == nullptr, op, ": CUDA launch failed: ", err);
#endif
  } else {
    switch (dt) {
      case nada::DT_FLOAT: upfirdn2d_cpu<float>(p); break;
      case nada::DT_HALF: upfirdn2d_cpu<c10::Half>(p); break;
      case nada::DT_BFLOAT16: upfirdn2d_cpu<c10::BFloat16>(p); break;
      default: upfirdn2d_cpu<double>(p); break;
    }
  }
  return y;
}

// Tile plan, for tests: {tile_w, tile_h, tile_p, tin_w, tin_h, threads, grid_x, grid_y, grid_z, smem_bytes}.
std::vector<int64_t> upfirdn2d_plan(int64_t planes, int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w,
                                    int64_t up_x, int64_t up_y, int64_t down_x, int64_t down_y, int64_t f_h,
                                    int64_t f_w, int64_t acc_bytes) {
  UpfirdnParams p{};
  p.planes = planes;
  p.in_h = static_cast<int>(in_h);
  p.in_w = static_cast<int>(in_w);
  p.out_h = static_cast<int>(out_h);
  p.out_w = static_cast<int>(out_w);
  p.up_x = static_cast<int>(up_x);
  p.up_y = static_cast<int>(up_y);
  p.down_x = static_cast<int>(down_x);
  p.down_y = static_cast<int>(down_y);
  p.f_h = static_cast<int>(f_h);
  p.f_w = static_cast<int>(f_w);
  nada::upfirdn_plan(p, static_cast<int>(acc_bytes));
  return {p.tile_w, p.tile_h, p.tile_p, p.tin_w, p.tin_h, p.threads, p.grid_x, p.grid_y, p.grid_z, p.smem_bytes};
}

// ------------------------------------------------------------------ filtered_lrelu

template <typename T>
void filtered_lrelu_cpu(const FLReluParams& p) {
  // The GPU schedule, run block by block with a single "thread".
  using A = typename nada::AccOf<T>::type;
  const int64_t z_blocks = p.grid_z;
  at::parallel_for(0, z_blocks, 1, [&](int64_t zb, int64_t ze) {
    std::vector<A> scratch(static_cast<size_t>(p.smem_bytes / sizeof(A)));
    A* sf1 = scratch.data();
    A* sf2 = sf1 + p.f1_w * p.f1_h;
    A* sx = sf2 + p.f2_w * p.f2_h;
    A* st = sx + static_cast<int64_t>(p.tile_p) * p.tx_w * p.tx_h;
    nada::flrelu_load_filters<A>(p, sf1, sf2, 0, 1);
    for (int64_t bz = zb; bz < ze; ++bz)
      for (int64_t plane0 = bz * p.tile_p; plane0 < p.planes; plane0 += z_blocks * p.tile_p)
        for (int by = 0; by < p.grid_y; ++by)
          for (int bx = 0; bx < p.grid_x; ++bx) {
            nada::flrelu_load_input<T, A>(p, sx, bx, by, plane0, 0, 1);
            nada::flrelu_compute_t<A>(p, sf1, sx, st, bx, by, plane0, 0, 1);
            nada::flrelu_compute_y<T, A>(p, sf2, st, bx, by, plane0, 0, 1);
          }
  });
}

FLReluParams flrelu_geometry(int64_t planes, int64_t in_h, int64_t in_w, int64_t t_h, int64_t t_w, int64_t out_h,
                             int64_t out_w, int64_t up_x, int64_t up_y, int64_t pad_x0, int64_t pad_y0, int64_t down_x,
                             int64_t down_y, int64_t q_x0, int64_t q_y0, int64_t f1_h, int64_t f1_w, int64_t f2_h,
                             int64_t f2_w, const char* op) {
  const int64_t lim = int64_t(1) << 30;
  TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1, op, ": up and down factors must be >= 1");
  TORCH_CHECK(f1_h >= 1 && f1_w >= 1 && f2_h >= 1 && f2_w >= 1, op, ": empty filter");
  for (int64_t v : {in_h, in_w, t_h, t_w, out_h, out_w})
    TORCH_CHECK(v >= 0 && v < lim / 16, op, ": image size out of range");
  for (int64_t v : {pad_x0, pad_y0, q_x0, q_y0}) TORCH_CHECK(v > -lim / 16 && v < lim / 16, op, ": padding out of range");
  // Any sizes are safe: every read of x, the mask and the intermediate window is bounds-checked
  // by the tile functions, and only the out_h x out_w outputs are written.
  FLReluParams p{};
  p.planes = planes;
  p.in_h = static_cast<int>(in_h);
  p.in_w = static_cast<int>(in_w);
  p.t_h = static_cast<int>(t_h);
  p.t_w = static_cast<int>(t_w);
  p.out_h = static_cast<int>(out_h);
  p.out_w = static_cast<int>(out_w);
  p.up_x = static_cast<int>(up_x);
  p.up_y = static_cast<int>(up_y);
  p.pad_x0 = static_cast<int>(pad_x0);
  p.pad_y0 = static_cast<int>(pad_y0);
  p.down_x = static_cast<int>(down_x);
  p.down_y = static_cast<int>(down_y);
  p.q_x0 = static_cast<int>(q_x0);
  p.q_y0 = static_cast<int>(q_y0);
  p.f1_h = static_cast<int>(f1_h);
  p.f1_w = static_cast<int>(f1_w);
  p.f2_h = static_cast<int>(f2_h);
  p.f2_w = static_cast<int>(f2_w);
  return p;
}

at::Tensor filtered_lrelu(const at::Tensor& x_in, const at::Tensor& b_in, const at::Tensor& f1_in,
                          const at::Tensor& f2_in, const at::Tensor& mask, int64_t t_h, int64_t t_w, int64_t out_h,
                          int64_t out_w, int64_t up_x, int64_t up_y, int64_t pad_x0, int64_t pad_y0, int64_t down_x,
                          int64_t down_y, int64_t q_x0, int64_t q_y0, int64_t mode, double gain, double slope,
                          double clamp) {
  const char* op = mode == 2 ? "filtered_lrelu (gradient)" : "filtered_lrelu";
  const int dt = dtype_code(x_in, op);
  check_device(x_in, op);
  TORCH_CHECK(x_in.dim() == 4, op, ": x must be NCHW, got shape ", x_in.sizes());
  TORCH_CHECK(mode >= 0 && mode <= 2, op, ": mode must be 0, 1 or 2");
  const auto acc = x_in.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  for (const at::Tensor* f : {&f1_in, &f2_in}) {
    TORCH_CHECK(f->dim() == 2 && f->numel() > 0, op, ": the kernel takes 2D filters, got shape ", f->sizes());
    TORCH_CHECK(f->device() == x_in.device(), op, ": the filters must be on the device of x");
    TORCH_CHECK(f->scalar_type() == acc, op, ": the filters must be ", acc, " for x of dtype ", x_in.scalar_type());
  }
  const bool has_b = b_in.defined() && b_in.numel() > 0;
  if (has_b) {
    TORCH_CHECK(b_in.dim() == 1 && b_in.size(0) == x_in.size(1), op, ": bias of shape ", b_in.sizes(),
                " does not match the channels of x ", x_in.sizes());
    TORCH_CHECK(b_in.scalar_type() == x_in.scalar_type() && b_in.device() == x_in.device(), op,
                ": bias must have the dtype and device of x");
  }
  TORCH_CHECK(gain > 0 && slope >= 0, op, ": gain must be > 0 and slope >= 0");
  const int64_t n = x_in.size(0), c = x_in.size(1);
  FLReluParams p = flrelu_geometry(n * c, x_in.size(2), x_in.size(3), t_h, t_w, out_h, out_w, up_x, up_y, pad_x0,
                                   pad_y0, down_x, down_y, q_x0, q_y0, f1_in.size(0), f1_in.size(1), f2_in.size(0),
                                   f2_in.size(1), op);
  if (mode != 0) {
    TORCH_CHECK(mask.scalar_type() == at::kByte && mask.is_contiguous() && mask.device() == x_in.device(), op,
                ": the mask must be a contiguous uint8 tensor on the device of x");
    TORCH_CHECK(mask.dim() == 3 && mask.size(0) == n * c && mask.size(1) == t_h && mask.size(2) == t_w, op,
                ": the mask must be [planes, t_h, t_w] = [", n * c, ", ", t_h, ", ", t_w, "], got ", mask.sizes());
  }

  at::Tensor x = x_in;
  if (!(n <= 1 || x.stride(0) == c * x.stride(1)))
    x = x.contiguous();
  at::Tensor b = has_b ? b_in.contiguous() : at::Tensor();
  at::Tensor f1 = f1_in.contiguous(), f2 = f2_in.contiguous();
  at::Tensor y = at::empty({n, c, out_h, out_w}, x.options().memory_format(at::MemoryFormat::Contiguous));
  if (y.numel() == 0) return y;

  p.x = x.data_ptr();
  p.b = has_b ? b.data_ptr() : nullptr;
  p.f1 = f1.data_ptr();
  p.f2 = f2.data_ptr();
  p.y = y.data_ptr();
  p.mask = mode != 0 ? mask.data_ptr<uint8_t>() : nullptr;
  p.channels = c > 0 ? c : 1;
  p.sx_p = x.stride(1);
  p.sx_h = x.stride(2);
  p.sx_w = x.stride(3);
  p.mode = static_cast<int>(mode);
  p.gain = gain;
  p.slope = slope;
  p.clamp = clamp;
  nada::flrelu_plan(p, acc == at::kDouble ? 8 : 4);
  TORCH_CHECK(p.smem_bytes >= 0, op, ": filters ", f1.sizes(), " / ", f2.sizes(), " are too large for the compiled "
              "kernel");

  if (x.is_cuda()) {
#ifdef NADA_WITH_CUDA
    const c10::cuda::CUDAGuard guard(x.device());
    const char* err = nada::filtered_lrelu_cuda(p, dt, c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
    TORCH_CHECK(err == nullptr, op, ": CUDA launch failed: ", err);
#endif
  } else {
    switch (dt) {
      case nada::DT_FLOAT: filtered_lrelu_cpu<float>(p); break;
      case nada::DT_HALF: filtered_lrelu_cpu<c10::Half>(p); break;
      case nada::DT_BFLOAT16: filtered_lrelu_cpu<c10::BFloat16>(p); break;
      default: filtered_lrelu_cpu<double>(p); break;
    }
  }
  return y;
}

// Tile plan, for tests: {tile_w, tile_h, tile_p, tt_w, tt_h, tx_w, tx_h, threads, grid_x, grid_y, grid_z, smem}.
std::vector<int64_t> filtered_lrelu_plan(int64_t planes, int64_t out_h, int64_t out_w, int64_t up_x, int64_t up_y,
                                         int64_t down_x, int64_t down_y, int64_t f1_h, int64_t f1_w, int64_t f2_h,
                                         int64_t f2_w, int64_t acc_bytes) {
  FLReluParams p{};
  p.planes = planes;
  p.out_h = static_cast<int>(out_h);
  p.out_w = static_cast<int>(out_w);
  p.up_x = static_cast<int>(up_x);
  p.up_y = static_cast<int>(up_y);
  p.down_x = static_cast<int>(down_x);
  p.down_y = static_cast<int>(down_y);
  p.f1_h = static_cast<int>(f1_h);
  p.f1_w = static_cast<int>(f1_w);
  p.f2_h = static_cast<int>(f2_h);
  p.f2_w = static_cast<int>(f2_w);
  nada::flrelu_plan(p, static_cast<int>(acc_bytes));
  return {p.tile_w, p.tile_h, p.tile_p, p.tt_w, p.tt_h, p.tx_w, p.tx_h, p.threads, p.grid_x, p.grid_y, p.grid_z,
          p.smem_bytes};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "nada_ops compiled StyleGAN ops (bias_act, upfirdn2d, filtered_lrelu)";
  m.def("bias_act_fwd", &bias_act_fwd, "y = clamp(act(x + b) * gain)", py::arg("x"), py::arg("b"), py::arg("dim"),
        py::arg("act"), py::arg("alpha"), py::arg("gain"), py::arg("clamp"));
  m.def("bias_act_grad", &bias_act_grad, "first (order=1) or second (order=2) derivative of bias_act",
        py::arg("dy"), py::arg("ref"), py::arg("b"), py::arg("dim"), py::arg("act"), py::arg("alpha"),
        py::arg("gain"), py::arg("clamp"), py::arg("ref_is_x"), py::arg("order"));
  m.def("upfirdn2d", &upfirdn2d, "upsample, pad, filter (correlation, gain applied), downsample", py::arg("x"),
        py::arg("f"), py::arg("up_x"), py::arg("up_y"), py::arg("down_x"), py::arg("down_y"), py::arg("pad_x0"),
        py::arg("pad_x1"), py::arg("pad_y0"), py::arg("pad_y1"));
  m.def("upfirdn2d_plan", &upfirdn2d_plan, "tile plan of the upfirdn2d kernel (for tests)");
  m.def("filtered_lrelu", &filtered_lrelu,
        "bias + upsample/filter (stage 1), leaky ReLU or stored-mask derivative, filter/downsample (stage 2)",
        py::arg("x"), py::arg("b"), py::arg("f1"), py::arg("f2"), py::arg("mask"), py::arg("t_h"), py::arg("t_w"),
        py::arg("out_h"), py::arg("out_w"), py::arg("up_x"), py::arg("up_y"), py::arg("pad_x0"), py::arg("pad_y0"),
        py::arg("down_x"), py::arg("down_y"), py::arg("q_x0"), py::arg("q_y0"), py::arg("mode"), py::arg("gain"),
        py::arg("slope"), py::arg("clamp"));
  m.def("filtered_lrelu_plan", &filtered_lrelu_plan, "tile plan of the filtered_lrelu kernel (for tests)");
#ifdef NADA_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  py::dict acts;
  acts["linear"] = int(nada::ACT_LINEAR);
  acts["relu"] = int(nada::ACT_RELU);
  acts["lrelu"] = int(nada::ACT_LRELU);
  acts["tanh"] = int(nada::ACT_TANH);
  acts["sigmoid"] = int(nada::ACT_SIGMOID);
  acts["elu"] = int(nada::ACT_ELU);
  acts["selu"] = int(nada::ACT_SELU);
  acts["softplus"] = int(nada::ACT_SOFTPLUS);
  acts["swish"] = int(nada::ACT_SWISH);
  m.attr("activations") = acts;
}
