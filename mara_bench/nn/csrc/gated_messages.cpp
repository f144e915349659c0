// Streaming passes for MARA's gated messages m' = m + α·m (spec step 7; nn/functions.py: _GatedMessagesBackward).
// Their derivatives are products of [E, D] rows with per-edge numbers plus row-wise dot products. In torch each is a
// separate op with its own pass over the rows (and the batched products that take the dot products run far below
// memory speed); here one pass reads each row once and writes each result once. No torch headers: built with the
// gate kernel by mara_bench.nn.native and called through ctypes on contiguous CPU tensors.
//
// gated_pass(E, D, x, y, z, a, q, out1, out2, dot), rows of D numbers, a and q one number per row:
//   out1 = x ⊙ (1 + a) + q·z     (terms with a null input left out)
//   out2 = q·y
//   dot  = Σ_d x y               (per row)
// The backward of the gated messages is (∂/∂m, ∂/∂α) = gated_pass(x = g, y = m) → (out1, dot); the backward of
// that, with cotangents p [E, D] and q [E], is (∂/∂g, ∂/∂m, ∂/∂α) = gated_pass(x = p, y = g, z = m, q) →
// (out1, out2, dot). A null output is not written.
#include <cstddef>

namespace {

template <typename T>
void gated_pass(long E, long D, const T *x, const T *y, const T *z, const T *a, const T *q, T *out1, T *out2,
                T *dot) {
  for (long e = 0; e < E; e++) {
    const size_t o = static_cast<size_t>(e) * D;
    const T s = T(1) + a[e];
    const T qe = q ? q[e] : T(0);
    if (dot) {
      T acc = T(0);
      if (out1 && z) {
#pragma omp simd reduction(+ : acc)
        for (long d = 0; d < D; d++) {
          acc += x[o + d] * y[o + d];
          out1[o + d] = x[o + d] * s + qe * z[o + d];
        }
      } else if (out1) {
#pragma omp simd reduction(+ : acc)
        for (long d = 0; d < D; d++) {
          acc += x[o + d] * y[o + d];
          out1[o + d] = x[o + d] * s;
        }
      } else {
#pragma omp simd reduction(+ : acc)
        for (long d = 0; d < D; d++) acc += x[o + d] * y[o + d];
      }
      dot[e] = acc;
    } else if (out1) {
      if (x && z) {
#pragma omp simd
        for (long d = 0; d < D; d++) out1[o + d] = x[o + d] * s + qe * z[o + d];
      } else if (x) {
#pragma omp simd
        for (long d = 0; d < D; d++) out1[o + d] = x[o + d] * s;
      } else {
#pragma omp simd
        for (long d = 0; d < D; d++) out1[o + d] = qe * z[o + d];
      }
    }
    if (out2) {
#pragma omp simd
      for (long d = 0; d < D; d++) out2[o + d] = qe * y[o + d];
    }
  }
}

}  // namespace

extern "C" void gated_pass_f32(long E, long D, const float *x, const float *y, const float *z, const float *a,
                               const float *q, float *out1, float *out2, float *dot) {
  gated_pass<float>(E, D, x, y, z, a, q, out1, out2, dot);
}

extern "C" void gated_pass_f64(long E, long D, const double *x, const double *y, const double *z, const double *a,
                               const double *q, double *out1, double *out2, double *dot) {
  gated_pass<double>(E, D, x, y, z, a, q, out1, out2, dot);
}
