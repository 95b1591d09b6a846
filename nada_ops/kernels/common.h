// Shared helpers of the nada_ops compiled kernels.
//
// Every header of this folder is included by two kinds of translation unit:
//   * the .cu files, compiled by nvcc (device code; no torch headers at all, so
//     that they compile quickly and do not depend on torch's CUDA headers), and
//   * ext.cpp, compiled by the host C++ compiler (bindings and a sequential CPU
//     run of the very same tile/element functions, used to test them without GPU).
// Functions marked NADA_HD are therefore both __host__ and __device__ under nvcc.
#pragma once

#include <stdint.h>
#include <math.h>

#ifdef __CUDACC__
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#define NADA_HD __host__ __device__ __forceinline__
#else
#include <c10/util/Half.h>
#include <c10/util/BFloat16.h>
#define NADA_HD inline
#endif

namespace nada {

// Dtype codes shared by ext.cpp and the CUDA launchers.
enum DType : int { DT_FLOAT = 0, DT_HALF = 1, DT_BFLOAT16 = 2, DT_DOUBLE = 3 };

// Accumulation type: float for every storage type except double.
template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };

// ---- loads and stores in the accumulation type (overloads, no implicit conversions)
NADA_HD float load_acc(const float* p) { return *p; }
NADA_HD double load_acc(const double* p) { return *p; }
NADA_HD void store_acc(float* p, float v) { *p = v; }
NADA_HD void store_acc(double* p, double v) { *p = v; }
#ifdef __CUDACC__
NADA_HD float load_acc(const __half* p) { return __half2float(*p); }
NADA_HD float load_acc(const __nv_bfloat16* p) { return __bfloat162float(*p); }
NADA_HD void store_acc(__half* p, float v) { *p = __float2half_rn(v); }
NADA_HD void store_acc(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
#else
NADA_HD float load_acc(const c10::Half* p) { return static_cast<float>(*p); }
NADA_HD float load_acc(const c10::BFloat16* p) { return static_cast<float>(*p); }
NADA_HD void store_acc(c10::Half* p, float v) { *p = c10::Half(v); }
NADA_HD void store_acc(c10::BFloat16* p, float v) { *p = c10::BFloat16(v); }
#endif

// ---- precise math overloads for float and double
NADA_HD float m_exp(float v) { return expf(v); }
NADA_HD double m_exp(double v) { return exp(v); }
NADA_HD float m_tanh(float v) { return tanhf(v); }
NADA_HD double m_tanh(double v) { return tanh(v); }
NADA_HD float m_log1p(float v) { return log1pf(v); }
NADA_HD double m_log1p(double v) { return log1p(v); }
NADA_HD float m_abs(float v) { return fabsf(v); }
NADA_HD double m_abs(double v) { return fabs(v); }

// ---- integer division rounding towards -inf / +inf (b > 0, a of any sign)
NADA_HD int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
NADA_HD int ceil_div(int a, int b) { return -floor_div(-a, b); }

}  // namespace nada
