/* The folded MARA gate's per-grid-point pass (kernels._grid_pass, one head), one edge at a time, and its
 * vector-Jacobian product (VJP). Plain C, no torch headers: built at first use by mara_bench.nn.native and called
 * through ctypes on contiguous CPU tensors. kernels._grid_pass is the readable reference; the tests hold this file
 * to it (tests/nn/test_native.py).
 *
 * Per edge (K grid directions u_k, log quadrature weights lw_k, hidden width c):
 *   var_k = cu·φ_k + ρ_k (cr·[1, u_k] + ρ_k GV11)   (cu, cr: entries of GV as in kernels._grid_pass)
 *   s_k = (var_k / c + eps_t)^-1/2,  X_k = s_k [1, ρ_k, u_k]          (5 numbers)
 *   L_k = BT X_k + b,  S_kj = L_k·X_j + lw_j,  P = softmax_j S,  Y_k = Σ_j P_kj X_j,  Ŷ_k = [Y_k, 1]
 *   WY = W Ŷ with W = [Ga; Go[1:,1:]; Go[0,1:]; g[1:]]   (14 × 6)
 *   qa_k = Σ_i WY_ik Ŷ_ik (rows 0-5),  qo_k = Σ_i WY_{6+i,k} Ŷ_ik,  sa = (qa/c + eps_a)^-1/2
 *   so = ((Go00 + sa (2 WY_12 + sa qo)) / c + eps_o)^-1/2,  ȳ_k = so (g0 + sa WY_13) / c
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* glibc's vector exponentials (libmvec), so that the softmax loop vectorises without -ffast-math */
#pragma omp declare simd notinbranch
extern float expf(float);
#pragma omp declare simd notinbranch
extern double exp(double);

#define R 5   /* token coefficients [1, ρ, u] */
#define M 6   /* attention-output coefficients [Y, 1] */
#define NW 14 /* rows of W */
#define NL 16 /* edges per block, one per SIMD lane */

#define T double
#define SUFFIX f64
#define EXP exp
#define SQRT sqrt
#include "grid_pass_impl.h"
#undef T
#undef SUFFIX
#undef EXP
#undef SQRT

#define T float
#define SUFFIX f32
#define EXP expf
#define SQRT sqrtf
#include "grid_pass_impl.h"
