// CUDA kernel of filtered_lrelu (see filtered_lrelu.h).  One thread block per output tile: the
// block loads both filters and the tile's input window into shared memory, computes the
// intermediate window (stage 1 + activation, mask written or read), then its outputs (stage 2).
#include <cuda_runtime.h>

#include "filtered_lrelu.h"

namespace nada {

template <typename T>
__global__ void filtered_lrelu_kernel(FLReluParams p) {
  using A = typename AccOf<T>::type;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  A* sf1 = reinterpret_cast<A*>(smem_raw);  // filters, input window, intermediate window
  A* sf2 = sf1 + p.f1_w * p.f1_h;
  A* sx = sf2 + p.f2_w * p.f2_h;
  A* st = sx + p.tile_p * p.tx_w * p.tx_h;
  flrelu_load_filters<A>(p, sf1, sf2, threadIdx.x, blockDim.x);
  const int64_t plane_step = static_cast<int64_t>(gridDim.z) * p.tile_p;
  for (int64_t plane0 = static_cast<int64_t>(blockIdx.z) * p.tile_p; plane0 < p.planes; plane0 += plane_step) {
    __syncthreads();  // filters ready / previous windows no longer read
    flrelu_load_input<T, A>(p, sx, blockIdx.x, blockIdx.y, plane0, threadIdx.x, blockDim.x);
    __syncthreads();
    flrelu_compute_t<A>(p, sf1, sx, st, blockIdx.x, blockIdx.y, plane0, threadIdx.x, blockDim.x);
    __syncthreads();
    flrelu_compute_y<T, A>(p, sf2, st, blockIdx.x, blockIdx.y, plane0, threadIdx.x, blockDim.x);
  }
}

template <typename T>
static const char* launch(const FLReluParams& p, cudaStream_t stream) {
  if (p.smem_bytes < 0) return "filtered_lrelu: the filters are too large for the compiled kernel";
  if (p.grid_y > 65535) return "filtered_lrelu: the output is too tall for the compiled kernel";
  dim3 grid(p.grid_x, p.grid_y, p.grid_z);
  filtered_lrelu_kernel<T><<<grid, p.threads, static_cast<size_t>(p.smem_bytes), stream>>>(p);
  cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

const char* filtered_lrelu_cuda(const FLReluParams& p, int dtype, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case DT_FLOAT: return launch<float>(p, s);
    case DT_HALF: return launch<__half>(p, s);
    case DT_BFLOAT16: return launch<__nv_bfloat16>(p, s);
    case DT_DOUBLE: return launch<double>(p, s);
    default: return "filtered_lrelu: unsupported dtype";
  }
}

}  // namespace nada
