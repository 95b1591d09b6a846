// CUDA kernel of upfirdn2d (see upfirdn2d.h).  One thread block per output tile:
// the block loads the filter and the tile's input window into shared memory, then
// each thread computes a strided subset of the tile's output pixels.
#include <cuda_runtime.h>

#include "upfirdn2d.h"

namespace nada {

template <typename T>
__global__ void upfirdn2d_kernel(UpfirdnParams p) {
  using A = typename AccOf<T>::type;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  A* sf = reinterpret_cast<A*>(smem_raw);  // filter, then the input window
  A* sx = sf + p.f_w * p.f_h;
  upfirdn_load_filter<A>(p, sf, threadIdx.x, blockDim.x);
  const int64_t plane_step = static_cast<int64_t>(gridDim.z) * p.tile_p;
  for (int64_t plane0 = static_cast<int64_t>(blockIdx.z) * p.tile_p; plane0 < p.planes; plane0 += plane_step) {
    __syncthreads();  // filter ready / previous window no longer read
    upfirdn_load_tile<T, A>(p, sx, blockIdx.x, blockIdx.y, plane0, threadIdx.x, blockDim.x);
    __syncthreads();
    upfirdn_compute_tile<T, A>(p, sf, sx, blockIdx.x, blockIdx.y, plane0, threadIdx.x, blockDim.x);
  }
}

template <typename T>
static const char* launch(const UpfirdnParams& p, cudaStream_t stream) {
  if (p.smem_bytes < 0) return "upfirdn2d: the filter is too large for the compiled kernel";
  if (p.grid_y > 65535) return "upfirdn2d: the output is too tall for the compiled kernel";
  dim3 grid(p.grid_x, p.grid_y, p.grid_z);
  upfirdn2d_kernel<T><<<grid, p.threads, static_cast<size_t>(p.smem_bytes), stream>>>(p);
  cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

const char* upfirdn2d_cuda(const UpfirdnParams& p, int dtype, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case DT_FLOAT: return launch<float>(p, s);
    case DT_HALF: return launch<__half>(p, s);
    case DT_BFLOAT16: return launch<__nv_bfloat16>(p, s);
    case DT_DOUBLE: return launch<double>(p, s);
    default: return "upfirdn2d: unsupported dtype";
  }
}

}  // namespace nada
