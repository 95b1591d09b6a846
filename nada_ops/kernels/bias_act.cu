// CUDA kernel of bias_act (see bias_act.h for the maths).  No torch headers here:
// ext.cpp validates the tensors and passes raw pointers and sizes.
#include <cuda_runtime.h>

#include "bias_act.h"

namespace nada {

template <typename T, int ACT, typename I>
__device__ __forceinline__ void bias_act_loop(const BiasActParams& p) {
  using A = typename AccOf<T>::type;
  const T* x = static_cast<const T*>(p.x);
  const T* b = static_cast<const T*>(p.b);
  const T* dy = static_cast<const T*>(p.dy);
  T* out = static_cast<T*>(p.out);
  const A alpha = static_cast<A>(p.alpha), gain = static_cast<A>(p.gain), clamp = static_cast<A>(p.clamp);
  const I n = static_cast<I>(p.n), inner = static_cast<I>(p.inner), channels = static_cast<I>(p.channels);
  const bool has_ref = x != nullptr, ref_is_x = p.ref_is_x != 0;
  const int mode = p.mode;
  const I step = static_cast<I>(blockDim.x) * static_cast<I>(gridDim.x);
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const A xv = has_ref ? load_acc(x + i) : A(0);
    const A bv = b != nullptr ? load_acc(b + (i / inner) % channels) : A(0);
    const A dyv = mode != 0 ? load_acc(dy + i) : A(0);
    store_acc(out + i, bias_act_element<ACT, A>(mode, ref_is_x, has_ref, xv, bv, dyv, alpha, gain, clamp));
  }
}

template <typename T, int ACT>
__global__ void bias_act_kernel(BiasActParams p) {
  // 32-bit index arithmetic whenever it cannot overflow (much cheaper division).
  if (p.n + static_cast<int64_t>(blockDim.x) * gridDim.x < (int64_t(1) << 31))
    bias_act_loop<T, ACT, int>(p);
  else
    bias_act_loop<T, ACT, int64_t>(p);
}

template <typename T, int ACT>
static const char* launch(const BiasActParams& p, cudaStream_t stream) {
  const int threads = 256;
  int64_t blocks = (p.n + threads - 1) / threads;
  if (blocks > 65536) blocks = 65536;  // grid-stride loop covers the rest
  if (blocks < 1) return nullptr;
  bias_act_kernel<T, ACT><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(p);
  cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

template <typename T>
static const char* launch_act(const BiasActParams& p, int act, cudaStream_t stream) {
  switch (act) {
    case ACT_LINEAR: return launch<T, ACT_LINEAR>(p, stream);
    case ACT_RELU: return launch<T, ACT_RELU>(p, stream);
    case ACT_LRELU: return launch<T, ACT_LRELU>(p, stream);
    case ACT_TANH: return launch<T, ACT_TANH>(p, stream);
    case ACT_SIGMOID: return launch<T, ACT_SIGMOID>(p, stream);
    case ACT_ELU: return launch<T, ACT_ELU>(p, stream);
    case ACT_SELU: return launch<T, ACT_SELU>(p, stream);
    case ACT_SOFTPLUS: return launch<T, ACT_SOFTPLUS>(p, stream);
    case ACT_SWISH: return launch<T, ACT_SWISH>(p, stream);
    default: return "bias_act: unknown activation index";
  }
}

const char* bias_act_cuda(const BiasActParams& p, int act, int dtype, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case DT_FLOAT: return launch_act<float>(p, act, s);
    case DT_HALF: return launch_act<__half>(p, act, s);
    case DT_BFLOAT16: return launch_act<__nv_bfloat16>(p, act, s);
    case DT_DOUBLE: return launch_act<double>(p, act, s);
    default: return "bias_act: unsupported dtype";
  }
}

}  // namespace nada
