// Fused bias + activation + gain + clamp, and its first and second derivatives.
//
//   forward:  y = clamp(act(x + b) * gain, -clamp, clamp)      (clamp < 0: no clamping)
//   grad:     dx = dy * gain * act'(x + b) * [not clamped]
//   grad2:    d(dx)/d(ref), multiplied by the incoming "dy" (see below)
//
// The derivative needs a reference tensor: either the input x (with b) or the
// output y.  Activations whose derivative is a function of their value (relu,
// lrelu, tanh, sigmoid, elu, selu, softplus) can use y, which saves keeping x
// alive; swish needs x.  With ref = y, t = y / gain is the activation value.
#pragma once

#include "common.h"

namespace nada {

// Indices shared with nada_ops/ops/bias_act.py (Activation.cuda_idx).
enum Act : int {
  ACT_LINEAR = 1, ACT_RELU = 2, ACT_LRELU = 3, ACT_TANH = 4, ACT_SIGMOID = 5,
  ACT_ELU = 6, ACT_SELU = 7, ACT_SOFTPLUS = 8, ACT_SWISH = 9,
};
constexpr int ACT_FIRST = ACT_LINEAR;
constexpr int ACT_LAST = ACT_SWISH;

// mode 0: forward;  mode 1: first derivative;  mode 2: second derivative.
struct BiasActParams {
  const void* x;     // mode 0: input.  modes 1/2: reference tensor (x or y), may be null
  const void* b;     // bias [channels] or null (modes 0, and 1/2 with ref_is_x)
  const void* dy;    // modes 1/2: incoming gradient
  void* out;
  int64_t n;         // number of elements
  int64_t inner;     // product of the sizes after the bias dimension
  int64_t channels;  // size of the bias dimension
  int mode;
  int ref_is_x;      // modes 1/2: the reference is x (else y)
  double alpha, gain, clamp;
};

// SELU constants (same values as torch.nn.functional.selu).
constexpr double SELU_SCALE = 1.0507009873554804934193349852946;
constexpr double SELU_ALPHA = 1.6732632423543772848170429916717;
constexpr double SOFTPLUS_THRESHOLD = 20.0;  // torch.nn.functional.softplus default

template <typename A> NADA_HD A sigmoid_of(A u) { return A(1) / (A(1) + m_exp(-u)); }

// act(u)
template <int ACT, typename A>
NADA_HD A act_value(A u, A alpha) {
  if constexpr (ACT == ACT_LINEAR) return u;
  if constexpr (ACT == ACT_RELU) return u > A(0) ? u : A(0);
  if constexpr (ACT == ACT_LRELU) return u > A(0) ? u : u * alpha;
  if constexpr (ACT == ACT_TANH) return m_tanh(u);
  if constexpr (ACT == ACT_SIGMOID) return sigmoid_of(u);
  if constexpr (ACT == ACT_ELU) return u > A(0) ? u : m_exp(u) - A(1);
  if constexpr (ACT == ACT_SELU)
    return u > A(0) ? A(SELU_SCALE) * u : A(SELU_SCALE * SELU_ALPHA) * (m_exp(u) - A(1));
  if constexpr (ACT == ACT_SOFTPLUS) return u > A(SOFTPLUS_THRESHOLD) ? u : m_log1p(m_exp(u));
  if constexpr (ACT == ACT_SWISH) return u * sigmoid_of(u);
  return u;
}

// act'(u) and act''(u), from the input u = x + b.
template <int ACT, typename A>
NADA_HD A act_d1_from_x(A u, A alpha) {
  if constexpr (ACT == ACT_LINEAR) return A(1);
  if constexpr (ACT == ACT_RELU) return u > A(0) ? A(1) : A(0);
  if constexpr (ACT == ACT_LRELU) return u > A(0) ? A(1) : alpha;
  if constexpr (ACT == ACT_TANH) { A t = m_tanh(u); return A(1) - t * t; }
  if constexpr (ACT == ACT_SIGMOID) { A s = sigmoid_of(u); return s * (A(1) - s); }
  if constexpr (ACT == ACT_ELU) return u > A(0) ? A(1) : m_exp(u);
  if constexpr (ACT == ACT_SELU) return u > A(0) ? A(SELU_SCALE) : A(SELU_SCALE * SELU_ALPHA) * m_exp(u);
  if constexpr (ACT == ACT_SOFTPLUS) return u > A(SOFTPLUS_THRESHOLD) ? A(1) : sigmoid_of(u);
  if constexpr (ACT == ACT_SWISH) { A s = sigmoid_of(u); return s + u * s * (A(1) - s); }
  return A(1);
}

template <int ACT, typename A>
NADA_HD A act_d2_from_x(A u, A alpha) {
  (void)alpha;
  if constexpr (ACT == ACT_TANH) { A t = m_tanh(u); return A(-2) * t * (A(1) - t * t); }
  if constexpr (ACT == ACT_SIGMOID) { A s = sigmoid_of(u); return s * (A(1) - s) * (A(1) - A(2) * s); }
  if constexpr (ACT == ACT_ELU) return u > A(0) ? A(0) : m_exp(u);
  if constexpr (ACT == ACT_SELU) return u > A(0) ? A(0) : A(SELU_SCALE * SELU_ALPHA) * m_exp(u);
  if constexpr (ACT == ACT_SOFTPLUS) {
    if (u > A(SOFTPLUS_THRESHOLD)) return A(0);
    A s = sigmoid_of(u);
    return s * (A(1) - s);
  }
  if constexpr (ACT == ACT_SWISH) {
    A s = sigmoid_of(u);
    return s * (A(1) - s) * (A(2) + u * (A(1) - A(2) * s));
  }
  return A(0);  // linear, relu, lrelu: piecewise linear
}

// act'(u) written as h(t) with t = act(u), and dh/dt.  Not defined for swish.
template <int ACT, typename A>
NADA_HD A act_d1_from_y(A t, A alpha) {
  if constexpr (ACT == ACT_LINEAR) return A(1);
  if constexpr (ACT == ACT_RELU) return t > A(0) ? A(1) : A(0);
  if constexpr (ACT == ACT_LRELU) return t > A(0) ? A(1) : alpha;
  if constexpr (ACT == ACT_TANH) return A(1) - t * t;
  if constexpr (ACT == ACT_SIGMOID) return t * (A(1) - t);
  if constexpr (ACT == ACT_ELU) return t > A(0) ? A(1) : t + A(1);
  if constexpr (ACT == ACT_SELU) return t > A(0) ? A(SELU_SCALE) : t + A(SELU_SCALE * SELU_ALPHA);
  if constexpr (ACT == ACT_SOFTPLUS) return A(1) - m_exp(-t);
  return A(0);
}

template <int ACT, typename A>
NADA_HD A act_d2_from_y(A t, A alpha) {
  (void)alpha;
  if constexpr (ACT == ACT_TANH) return A(-2) * t;
  if constexpr (ACT == ACT_SIGMOID) return A(1) - A(2) * t;
  if constexpr (ACT == ACT_ELU) return t > A(0) ? A(0) : A(1);
  if constexpr (ACT == ACT_SELU) return t > A(0) ? A(0) : A(1);
  if constexpr (ACT == ACT_SOFTPLUS) return m_exp(-t);
  return A(0);
}

// One element of any mode.  xv: input (mode 0) or reference value (x or y);
// bv: bias value (0 without bias); dyv: incoming gradient (modes 1/2);
// has_ref: false when no reference tensor is needed (linear without clamp).
template <int ACT, typename A>
NADA_HD A bias_act_element(int mode, bool ref_is_x, bool has_ref, A xv, A bv, A dyv,
                           A alpha, A gain, A clamp) {
  if (mode == 0) {
    A v = act_value<ACT, A>(xv + bv, alpha) * gain;
    if (clamp >= A(0)) v = v > clamp ? clamp : (v < -clamp ? -clamp : v);  // keeps NaN
    return v;
  }
  if (!has_ref) return mode == 1 ? dyv * gain * act_d1_from_x<ACT, A>(A(0), alpha) : A(0);
  if (ref_is_x) {
    A u = xv + bv;
    if (clamp >= A(0)) {
      A v = act_value<ACT, A>(u, alpha) * gain;
      if (!(v >= -clamp && v <= clamp)) return A(0);  // clamped: no gradient
    }
    return mode == 1 ? dyv * gain * act_d1_from_x<ACT, A>(u, alpha)
                     : dyv * gain * act_d2_from_x<ACT, A>(u, alpha);
  }
  // Reference is y = clamp(act(u) * gain): t = act(u).
  if (clamp >= A(0) && !(m_abs(xv) < clamp)) return A(0);
  if (gain == A(0)) return A(0);
  A t = xv / gain;
  return mode == 1 ? dyv * gain * act_d1_from_y<ACT, A>(t, alpha)
                   : dyv * act_d2_from_y<ACT, A>(t, alpha);  // d/dy = d/dt / gain
}

#ifdef NADA_WITH_CUDA
// Launches the kernel on `stream` (a cudaStream_t); returns null or an error message.
const char* bias_act_cuda(const BiasActParams& p, int act, int dtype, void* stream);
#endif

}  // namespace nada
