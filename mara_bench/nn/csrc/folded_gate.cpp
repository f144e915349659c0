// The folded MARA gate from its per-edge scalars on (kernels.folded_gates with one head): the distances ρ_k from the
// edge vector (MARA.distances), the forms (kernels._assemble_forms), the per-grid-point pass (kernels._grid_pass) and
// the readout α = σ(Σ_k w_k ȳ_k + c0); its vector-Jacobian product (VJP); and the derivatives of that VJP (force
// training's double backward). No torch headers: built at first use by mara_bench.nn.native and called through
// ctypes on contiguous CPU tensors. The torch functions named are the readable reference; tests/nn/test_native.py
// holds this file to them.
//
// Per edge (K grid directions u_k, log quadrature weights lw_k, hidden width c), after the forms:
//   var_k = cu·φ_k + ρ_k (cr·[1, u_k] + ρ_k GV11)   (cu, cr: entries of GV as in kernels._grid_pass)
//   s_k = (var_k / c + eps_t)^-1/2,  X_k = s_k [1, ρ_k, u_k]          (5 numbers)
//   L_k = BT X_k + b,  S_kj = L_k·X_j + lw_j,  P = softmax_j S,  Y_k = Σ_j P_kj X_j,  Ŷ_k = [Y_k, 1]
//   WY = W Ŷ with W = [Ga; Go[1:,1:]; Go[0,1:]; g[1:]]   (14 × 6)
//   qa_k = Σ_i WY_ik Ŷ_ik (rows 0-5),  qo_k = Σ_i WY_{6+i,k} Ŷ_ik,  sa = (qa/c + eps_a)^-1/2
//   so = ((Go00 + sa (2 WY_12 + sa qo)) / c + eps_o)^-1/2,  ȳ_k = so (g0 + sa WY_13) / c
//
// Layout: edges go in blocks of one SIMD register (16 floats or 8 doubles), one edge per lane; a row of lanes is one
// GCC vector value, so every statement is a vector operation over the block (exponentials through glibc's libmvec;
// no fast-math, so every lane rounds like scalar code). A last, partial block repeats its last edge in idle lanes.
//
// Second derivatives: the VJP code is a template over its number type. Run on dual numbers (value, tangent) with the
// inputs' tangents set to the cotangents v of the VJP's outputs, the tangent of α is J v (the derivative with
// respect to the VJP's input gα) and the tangent of the VJP is H v (with respect to the gate's inputs), H the Hessian
// of Σ gα·α: forward-mode differentiation of the reverse pass.
#include <cmath>
#include <cstdlib>
#include <cstring>

extern "C" {  // glibc's vector exponentials (libmvec), so that the softmax loops vectorise without -ffast-math
#pragma omp declare simd notinbranch
float expf(float);
#pragma omp declare simd notinbranch
double exp(double);
}

namespace {

constexpr int R = 5;    // token coefficients [1, ρ, u]
constexpr int M = 6;    // attention-output coefficients [Y, 1]
constexpr int NW = 14;  // rows of W
constexpr int NZ = 37;  // per-edge scalars z (kernels._edge_scalars_one_head)
constexpr int NC = 98;  // constants cv, the same for every edge
// A row of lanes is one GCC vector value (64 bytes: 16 floats or 8 doubles), so every statement is a vector
// operation over the block's edges; a dual number is a pair of such vectors (value, tangent).
template <class T> struct Lanes {
  typedef T type __attribute__((vector_size(64)));
  static constexpr int n = 64 / sizeof(T);
};

// ---------------------------------------------------------------------------------------------- numbers
template <class V> struct Dual {
  V v, d;
};
template <class V> inline V val(V x) { return x; }
template <class V> inline V val(Dual<V> x) { return x.v; }
template <class V> inline Dual<V> operator+(Dual<V> a, Dual<V> b) { return {a.v + b.v, a.d + b.d}; }
template <class V> inline Dual<V> operator-(Dual<V> a, Dual<V> b) { return {a.v - b.v, a.d - b.d}; }
template <class V> inline Dual<V> operator*(Dual<V> a, Dual<V> b) { return {a.v * b.v, a.d * b.v + a.v * b.d}; }
template <class V, class B> inline Dual<V> operator+(Dual<V> a, B b) { return {a.v + b, a.d}; }
template <class V, class B> inline Dual<V> operator+(B a, Dual<V> b) { return {a + b.v, b.d}; }
template <class V, class B> inline Dual<V> operator-(Dual<V> a, B b) { return {a.v - b, a.d}; }
template <class V, class B> inline Dual<V> operator-(B a, Dual<V> b) { return {a - b.v, -b.d}; }
template <class V, class B> inline Dual<V> operator*(Dual<V> a, B b) { return {a.v * b, a.d * b}; }
template <class V, class B> inline Dual<V> operator*(B a, Dual<V> b) { return {a * b.v, a * b.d}; }
template <class V, class B> inline Dual<V> operator/(Dual<V> a, B b) { return {a.v / b, a.d / b}; }
template <class V> inline Dual<V> operator-(Dual<V> a) { return {-a.v, -a.d}; }
template <class V> inline Dual<V> &operator+=(Dual<V> &a, Dual<V> b) { return a = a + b; }
template <class V> inline Dual<V> &operator*=(Dual<V> &a, Dual<V> b) { return a = a * b; }
template <class T> inline void put(T &a, T b) { a = b; }

inline float exp1(float x) { return expf(x); }
inline double exp1(double x) { return exp(x); }
template <class V> inline V exp_(V x) {  // lane by lane: vectorised through libmvec
  V r = x;
  _Pragma("omp simd") for (int l = 0; l < (int)(sizeof(V) / sizeof(x[0])); l++) r[l] = exp1(x[l]);
  return r;
}
template <class V> inline Dual<V> exp_(Dual<V> x) {
  const V e = exp_(x.v);
  return {e, e * x.d};
}
template <class V> inline V rsqrt_(V x) {
  V r = x;
  _Pragma("omp simd") for (int l = 0; l < (int)(sizeof(V) / sizeof(x[0])); l++) r[l] = 1 / std::sqrt(x[l]);
  return r;
}
template <class V> inline Dual<V> rsqrt_(Dual<V> x) {
  const V r = rsqrt_(x.v);
  return {r, -0.5 * r * r * r * x.d};
}
template <class V> inline V sqrt_(V x) {
  V r = x;
  _Pragma("omp simd") for (int l = 0; l < (int)(sizeof(V) / sizeof(x[0])); l++) r[l] = std::sqrt(x[l]);
  return r;
}
template <class V> inline Dual<V> sqrt_(Dual<V> x) {
  const V r = sqrt_(x.v);
  return {r, 0.5 * x.d / r};
}
// max(x, e), and 1 where x ≥ e else 0 (the clamp's derivative), lane by lane
template <class V, class T> inline V clamp_min(V x, T e) { return x < e ? V{} + e : x; }
template <class V, class T> inline Dual<V> clamp_min(Dual<V> x, T e) { return {x.v < e ? V{} + e : x.v, x.v < e ? V{} : x.d}; }
template <class V, class T> inline V unclamped(V x, T e) { return x < e ? V{} : V{} + 1; }
template <class V, class T> inline Dual<V> unclamped(Dual<V> x, T e) { return {unclamped(x.v, e), V{}}; }
template <class V> inline V recip(V a) { return 1 / a; }
template <class V> inline Dual<V> recip(Dual<V> a) {
  const V r = 1 / a.v;
  return {r, -a.d * r * r};
}
template <class S> inline S zero() { return S{}; }
template <class V, class T> inline void set(V &x, T v) { x = V{} + v; }
template <class V, class T> inline void set(Dual<V> &x, T v) { x.v = V{} + v, x.d = V{}; }
// lane l of a row: its value (and tangent)
template <class V, class T> inline void set_lane(V &x, int l, T v, T) { x[l] = v; }
template <class V, class T> inline void set_lane(Dual<V> &x, int l, T v, T t) { x.v[l] = v, x.d[l] = t; }
template <class V> inline auto lane_val(const V &x, int l) { return x[l]; }
template <class V> inline auto lane_val(const Dual<V> &x, int l) { return x.v[l]; }
template <class V> inline auto lane_tan(const V &x, int l) { return x[l] * 0; }
template <class V> inline auto lane_tan(const Dual<V> &x, int l) { return x.d[l]; }

// ---------------------------------------------------------------------------------------------- one block
// S: the row type (Lanes<T>::type, or Dual of it for the second derivatives); T: float or double.
template <class S, class T> struct Pass {
  static constexpr int NL = Lanes<T>::n;
  typedef typename Lanes<T>::type V;
  int K;
  const T *u, *lw;  // u coordinate-major [3, K]
  T c, eps_t, eps_a, eps_o, scale, rho_eps;
  S *buf;
  // per-lane inputs, lane-major [n][NL]
  // given: d (3), z (NZ), cw (NC + K + 1: cv, the readout weights w_k, c0); ρ and the forms GV .. g computed
  S *d, *z, *cw, *cv, *rho, *GV, *BT, *b, *Ga, *Go, *g;
  S *r, *dh, *sq, *mask, *alpha, *galpha;  // |d|, d/|d|, sqrt(max(|u_k + d̂|², eps)), 1 where unclamped, α, ∂/∂α
  // forward intermediates
  S *X, *L, *P, *Y, *WY, *s, *sa, *so, *qo, *ybar;
  // gradients
  S *gy, *dX, *dL, *dY, *dWY, *dS, *drho, *dGV, *dBT, *db, *dGa, *dGo, *dg, *dd, *dz, *dcw, *dcv;

  size_t A3(int a, int k) const { return (size_t)a * K + k; }
  static size_t A2(int i) { return (size_t)i; }
  size_t PK(int k, int j) const { return (size_t)k * K + j; }

  bool alloc() {
    const size_t ncw = NC + K + 1;
    const size_t n = ((size_t)K * (1 + R + R + M + NW + 5) + 147 + 3 + NZ + ncw + (size_t)K * K + 6 + 2 * (size_t)K +
                      (size_t)K * (2 + R + R + M + NW + 1) + 147 + 3 + NZ + ncw);
    buf = (S *)aligned_alloc(64, ((n * sizeof(S) + 63) / 64) * 64);
    if (!buf) return false;
    S *q = buf;
    auto take = [&](S *&field, size_t count) { field = q, q += count; };
    take(d, 3), take(z, NZ), take(cw, ncw), take(rho, K), take(GV, 25), take(BT, 25), take(b, 5), take(Ga, 36), take(Go, 49), take(g, 7);
    take(X, R * K), take(L, R * K), take(Y, M * K), take(WY, NW * K);
    take(s, K), take(sa, K), take(so, K), take(qo, K), take(ybar, K);
    take(P, (size_t)K * K);
    take(r, 1), take(dh, 3), take(sq, K), take(mask, K), take(alpha, 1), take(galpha, 1);
    cv = cw;
    take(gy, K), take(dX, R * K), take(dL, R * K), take(dY, M * K), take(dWY, NW * K), take(dS, K);
    take(drho, K), take(dGV, 25), take(dBT, 25), take(db, 5), take(dGa, 36), take(dGo, 49), take(dg, 7), take(dd, 3), take(dz, NZ), take(dcw, ncw);
    dcv = dcw;
    return true;
  }

  // z: [|n|², nᵀA_i n (4), nf (4), b0s (4), br0 (4), bb0, ga0 (5), ⟨n, cw⟩, ⟨n₂, cw⟩, nzc (5), n2zc (5), ngo, n2go];
  // cv: [CF (4x4), CB (4x4), cb (4), CA (5x5), cw·cw, CZ (5x5), cw_zc (5), cw·γ_out, zc γ_out (5)]
  // (kernels._edge_scalars_one_head; kernels._assemble_forms is this assembly in torch ops)
  void assemble() {
    const S *qd = z + 1, *nf = z + 5, *b0s = z + 9, *br0 = z + 13, *ga0 = z + 18, *nzc = z + 25, *n2zc = z + 30;
    const S *CF = cv, *CB = cv + 16, *cb = cv + 32, *CA = cv + 36, *CZ = cv + 62, *cwzc = cv + 87, *zgo = cv + 93;
    put(GV[0], z[0]);
    for (int i = 0; i < 4; i++) {
      put(GV[1 + i], nf[i]);
      put(GV[(1 + i) * 5], nf[i]);
      for (int j = 0; j < 4; j++) put(GV[(1 + i) * 5 + 1 + j], CF[i * 4 + j]);
    }
    // B (rows: query coefficient, columns: key coefficient) = [[qd0·scale, b0s], [br0, CB]]; BT_rs = B_sr
    put(BT[0], qd[0] * scale);
    for (int i = 0; i < 4; i++) {
      put(BT[(1 + i) * 5], b0s[i]);
      put(BT[1 + i], br0[i]);
      for (int j = 0; j < 4; j++) put(BT[(1 + j) * 5 + 1 + i], CB[i * 4 + j]);
    }
    put(b[0], z[17]);
    for (int i = 0; i < 4; i++) put(b[1 + i], cb[i]);
    put(Ga[0], qd[1]);
    for (int i = 0; i < 5; i++) {
      put(Ga[1 + i], ga0[i]);
      put(Ga[(1 + i) * 6], ga0[i]);
      for (int j = 0; j < 5; j++) put(Ga[(1 + i) * 6 + 1 + j], CA[i * 5 + j]);
    }
    put(Go[0], z[0] + T(2) * z[23] + cv[61]);
    put(Go[1], qd[2] + z[24]);
    put(Go[7], qd[2] + z[24]);
    put(Go[8], qd[3]);
    for (int i = 0; i < 5; i++) {
      put(Go[2 + i], nzc[i] + cwzc[i]);
      put(Go[(2 + i) * 7], nzc[i] + cwzc[i]);
      put(Go[9 + i], n2zc[i]);
      put(Go[(2 + i) * 7 + 1], n2zc[i]);
      for (int j = 0; j < 5; j++) put(Go[(2 + i) * 7 + 2 + j], CZ[i * 5 + j]);
    }
    put(g[0], z[35] + cv[92]);
    put(g[1], z[36]);
    for (int i = 0; i < 5; i++) put(g[2 + i], zgo[i]);
  }

  void disassemble() {  // the transpose of assemble(): dGV .. dg -> dz, dcv
    put(dz[0], dGV[0] + dGo[0]);
    put(dz[1], dBT[0] * scale);
    put(dz[2], dGa[0]);
    put(dz[3], dGo[1] + dGo[7]);
    put(dz[4], dGo[8]);
    for (int i = 0; i < 4; i++) {
      put(dz[5 + i], dGV[1 + i] + dGV[(1 + i) * 5]);
      put(dz[9 + i], dBT[(1 + i) * 5]);
      put(dz[13 + i], dBT[1 + i]);
      for (int j = 0; j < 4; j++) {
        put(dcv[i * 4 + j], dGV[(1 + i) * 5 + 1 + j]);
        put(dcv[16 + i * 4 + j], dBT[(1 + j) * 5 + 1 + i]);
      }
      put(dcv[32 + i], db[1 + i]);
    }
    put(dz[17], db[0]);
    for (int i = 0; i < 5; i++) {
      put(dz[18 + i], dGa[1 + i] + dGa[(1 + i) * 6]);
      put(dz[25 + i], dGo[2 + i] + dGo[(2 + i) * 7]);
      put(dz[30 + i], dGo[9 + i] + dGo[(2 + i) * 7 + 1]);
      put(dcv[87 + i], dGo[2 + i] + dGo[(2 + i) * 7]);
      put(dcv[93 + i], dg[2 + i]);
      for (int j = 0; j < 5; j++) {
        put(dcv[36 + i * 5 + j], dGa[(1 + i) * 6 + 1 + j]);
        put(dcv[62 + i * 5 + j], dGo[(2 + i) * 7 + 2 + j]);
      }
    }
    put(dz[23], T(2) * dGo[0]);
    put(dz[24], dGo[1] + dGo[7]);
    put(dz[35], dg[0]);
    put(dz[36], dg[1]);
    put(dcv[61], dGo[0]);
    put(dcv[92], dg[0]);
  }

  // rows of n numbers of edges e0 .. e0 + nl - 1 (values, and tangents when S is dual) -> rows [n] of lanes
  static void gather(const T *src, const T *tan, long e0, int nl, int n, S *dst) {
    for (int l = 0; l < NL; l++) {
      const long e = e0 + (l < nl ? l : nl - 1);
      for (int i = 0; i < n; i++) set_lane(dst[i], l, src[e * n + i], tan ? tan[e * n + i] : T(0));
    }
  }
  static void scatter(const S *src, long e0, int nl, int n, T *vals, T *tans) {
    for (int l = 0; l < nl; l++)
      for (int i = 0; i < n; i++) {
        if (vals) vals[(e0 + l) * n + i] = lane_val(src[i], l);
        if (tans) tans[(e0 + l) * n + i] = lane_tan(src[i], l);
      }
  }

  // W = [Ga; Go[1:,1:]; Go[0,1:]; g[1:]] (14 × 6): the lanes of entry (p, i)
  S *w_row(int p, int i) {
    if (p < M) return Ga + A2(p * M + i);
    if (p < 2 * M) return Go + A2((1 + p - M) * 7 + 1 + i);
    if (p == 12) return Go + A2(1 + i);
    return g + A2(1 + i);
  }

  // ρ_k = |d| sqrt(max(|u_k + d̂|², eps)) (MARA.distances), then assemble() and the pass, then α = σ(Σ_k w_k ȳ_k + c0)
  void forward() {
    {
      const S rr = sqrt_(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]), inv = recip(rr);
      put(r[0], rr);
      for (int a = 0; a < 3; a++) put(dh[a], d[a] * inv);
      for (int k = 0; k < K; k++) {
        S sk = zero<S>();
        for (int a = 0; a < 3; a++) {
          const S t = dh[a] + u[a * K + k];
          sk += t * t;
        }
        put(mask[k], unclamped(sk, rho_eps));
        const S q = sqrt_(clamp_min(sk, rho_eps));
        put(sq[k], q);
        put(rho[k], rr * q);
      }
    }
    assemble();
    pass_forward();
    S t = cw[NC + K];
    for (int k = 0; k < K; k++) t += cw[NC + k] * ybar[k];
    put(alpha[0], recip(T(1) + exp_(-t)));
  }

  void pass_forward() {
    // token variance, with cu, cr the entries of GV as in kernels._grid_pass (cu: GV00, 2 GV0a, GVab; cr: 2 GV10,
    // 2 GV1a; a, b over the u rows 2-4)
    const S *gv[25];
    for (int i = 0; i < 25; i++) gv[i] = GV + A2(i);
    for (int k = 0; k < K; k++) {
      const T u0 = u[k], u1 = u[K + k], u2 = u[2 * K + k];
      const S *rk = rho + A2(k);
      S *sk = s + A2(k), *x0 = X + A3(0, k), *x1 = X + A3(1, k), *x2 = X + A3(2, k), *x3 = X + A3(3, k),
        *x4 = X + A3(4, k);
      {
        const S vu = gv[0][0] + T(2) * (gv[2][0] * u0 + gv[3][0] * u1 + gv[4][0] * u2) +
                     u0 * (gv[12][0] * u0 + gv[13][0] * u1 + gv[14][0] * u2) +
                     u1 * (gv[17][0] * u0 + gv[18][0] * u1 + gv[19][0] * u2) +
                     u2 * (gv[22][0] * u0 + gv[23][0] * u1 + gv[24][0] * u2);
        const S vr = T(2) * (gv[5][0] + gv[7][0] * u0 + gv[8][0] * u1 + gv[9][0] * u2);
        const S var = vu + rk[0] * (vr + rk[0] * gv[6][0]);
        const S sv = rsqrt_(var / c + eps_t);
        put(sk[0], sv);
        put(x0[0], sv);
        put(x1[0], sv * rk[0]);
        put(x2[0], sv * u0);
        put(x3[0], sv * u1);
        put(x4[0], sv * u2);
      }
    }
    for (int r = 0; r < R; r++)  // L_k = BT X_k + b
      for (int k = 0; k < K; k++) {
        S *lk = L + A3(r, k), acc[1];
        const S *br = b + A2(r);
        put(acc[0], br[0]);
        for (int q = 0; q < R; q++) {
          const S *bt = BT + A2(r * R + q), *xq = X + A3(q, k);
          acc[0] += bt[0] * xq[0];
        }
        put(lk[0], acc[0]);
      }
    for (int k = 0; k < K; k++) {  // P_k = softmax_j(L_k·X_j + lw_j), Y_k = Σ_j P_kj X_j
      V mx[1];
      S sum[1];
      for (int j = 0; j < K; j++) {
        S *pj = P + PK(k, j), acc[1];
        const T lwj = lw[j];
        set(acc[0], lwj);
        for (int r = 0; r < R; r++) {
          const S *lr = L + A3(r, k), *xr = X + A3(r, j);
          acc[0] += lr[0] * xr[0];
        }
        put(pj[0], acc[0]);
        if (j == 0) mx[0] = val(acc[0]);
        else mx[0] = val(acc[0]) > mx[0] ? val(acc[0]) : mx[0];
      }
      put(sum[0], zero<S>());
      for (int j = 0; j < K; j++) {
        S *pj = P + PK(k, j);
        {
          put(pj[0], exp_(pj[0] - mx[0]));  // any shift gives the same softmax (its tangent cancels too)
          sum[0] += pj[0];
        }
      }
      put(sum[0], recip(sum[0]));
      for (int j = 0; j < K; j++) {
        S *pj = P + PK(k, j);
        pj[0] *= sum[0];
      }
      for (int r = 0; r < R; r++) {
        S *yr = Y + A3(r, k), acc[1];
        put(acc[0], zero<S>());
        for (int j = 0; j < K; j++) {
          const S *pj = P + PK(k, j), *xr = X + A3(r, j);
          acc[0] += pj[0] * xr[0];
        }
        put(yr[0], acc[0]);
      }
      S *y5 = Y + A3(R, k);
      set(y5[0], T(1));
    }
    for (int p = 0; p < NW; p++)  // WY = W Ŷ
      for (int k = 0; k < K; k++) {
        S *wy = WY + A3(p, k);
        put(wy[0], zero<S>());
        for (int i = 0; i < M; i++) {
          const S *wpi = w_row(p, i), *yi = Y + A3(i, k);
          wy[0] += wpi[0] * yi[0];
        }
      }
    for (int k = 0; k < K; k++) {  // the readout's quadratic forms and ȳ
      S qa[1], qov[1];
      {
        put(qa[0], zero<S>());
        put(qov[0], zero<S>());
      }
      for (int i = 0; i < M; i++) {
        const S *wa = WY + A3(i, k), *wo = WY + A3(M + i, k), *yi = Y + A3(i, k);
        {
          qa[0] += wa[0] * yi[0];
          qov[0] += wo[0] * yi[0];
        }
      }
      const S *go0 = Go, *g0 = g, *wy12 = WY + A3(12, k), *wy13 = WY + A3(13, k);
      S *sak = sa + A2(k), *sok = so + A2(k), *qok = qo + A2(k), *yb = ybar + A2(k);
      {
        const S a = rsqrt_(qa[0] / c + eps_a);
        const S o = rsqrt_((go0[0] + a * (T(2) * wy12[0] + a * qov[0])) / c + eps_o);
        put(sak[0], a);
        put(sok[0], o);
        put(qok[0], qov[0]);
        put(yb[0], o * (g0[0] + a * wy13[0]) / c);
      }
    }
  }

  // gradients of Σ gα·α into dd, dz, dcw (forward() first)
  void vjp() {
    const S a = alpha[0], dt = galpha[0] * a * (T(1) - a);
    for (int k = 0; k < K; k++) {
      put(gy[k], dt * cw[NC + k]);
      put(dcw[NC + k], dt * ybar[k]);
    }
    put(dcw[NC + K], dt);
    pass_vjp();
    disassemble();
    S dr = zero<S>(), ddh[3] = {zero<S>(), zero<S>(), zero<S>()};
    for (int k = 0; k < K; k++) {
      dr += drho[k] * sq[k];
      const S ds = drho[k] * r[0] * T(0.5) * recip(sq[k]) * mask[k];
      for (int a = 0; a < 3; a++) ddh[a] += T(2) * ds * (dh[a] + u[a * K + k]);
    }
    const S dot = ddh[0] * dh[0] + ddh[1] * dh[1] + ddh[2] * dh[2], inv = recip(r[0]);
    for (int a = 0; a < 3; a++) put(dd[a], dr * dh[a] + (ddh[a] - dh[a] * dot) * inv);
  }

  void pass_vjp() {  // gradients of Σ gy·ȳ into drho .. dg
    const T h = T(-0.5) / c;
    for (int i = 0; i < 49; i++) dGo[i] = zero<S>();
    put(dg[0], zero<S>());
    for (int k = 0; k < K; k++) {  // ȳ, so, sa, the quadratic forms
      const S *sak = sa + A2(k), *sok = so + A2(k), *qok = qo + A2(k), *wyo = WY + A3(12, k), *wyg = WY + A3(13, k),
              *gyk = gy + A2(k);
      S dqa[1], dqo[1];
      S *dwyo = dWY + A3(12, k), *dwyg = dWY + A3(13, k);
      {
        const S t = g[0] + sak[0] * wyg[0];
        const S d_so = gyk[0] * t / c, d_t = gyk[0] * sok[0] / c;
        dg[0] += d_t;
        const S d_z = d_so * (sok[0] * sok[0] * sok[0] * h);
        dGo[0] += d_z;
        const S d_sa = d_t * wyg[0] + d_z * (T(2) * wyo[0] + T(2) * sak[0] * qok[0]);
        put(dqa[0], d_sa * (sak[0] * sak[0] * sak[0] * h));
        put(dqo[0], d_z * sak[0] * sak[0]);
        put(dwyo[0], d_z * T(2) * sak[0]);
        put(dwyg[0], d_t * sak[0]);
      }
      for (int i = 0; i < M; i++) {
        const S *yi = Y + A3(i, k), *wa = WY + A3(i, k), *wo = WY + A3(M + i, k);
        S *da = dWY + A3(i, k), *dox = dWY + A3(M + i, k), *dy = dY + A3(i, k);
        {
          put(da[0], dqa[0] * yi[0]);
          put(dox[0], dqo[0] * yi[0]);
          put(dy[0], dqa[0] * wa[0] + dqo[0] * wo[0]);
        }
      }
    }
    for (int p = 0; p < NW; p++)  // WY = W Ŷ: ∂/∂W = Σ_k dWY Ŷᵀ
      for (int i = 0; i < M; i++) {
        S *out = p < M       ? dGa + A2(p * M + i)
                 : p < 2 * M ? dGo + A2((1 + p - M) * 7 + 1 + i)
                 : p == 12   ? dGo + A2(1 + i)
                             : dg + A2(1 + i);
        S acc[1];
        put(acc[0], zero<S>());
        for (int k = 0; k < K; k++) {
          const S *dw = dWY + A3(p, k), *yi = Y + A3(i, k);
          acc[0] += dw[0] * yi[0];
        }
        put(out[0], acc[0]);
      }
    for (int i = 0; i < R; i++)  // ∂/∂Ŷ += Wᵀ dWY
      for (int k = 0; k < K; k++) {
        S *dy = dY + A3(i, k), acc[1];
        put(acc[0], dy[0]);
        for (int p = 0; p < NW; p++) {
          const S *wpi = w_row(p, i), *dw = dWY + A3(p, k);
          acc[0] += wpi[0] * dw[0];
        }
        put(dy[0], acc[0]);
      }
    // attention: ∂/∂S_kj = P_kj (dY_k·X_j − dY_k·Y_k); ∂/∂X_j += Σ_k P_kj dY_k + ∂S_kj L_k; ∂/∂L_k = Σ_j ∂S_kj X_j
    for (int i = 0; i < R * K; i++) dX[i] = zero<S>();
    for (int k = 0; k < K; k++) {
      S delta[1];
      put(delta[0], zero<S>());
      for (int r = 0; r < R; r++) {
        const S *dy = dY + A3(r, k), *y = Y + A3(r, k);
        delta[0] += dy[0] * y[0];
      }
      for (int j = 0; j < K; j++) {
        S *ds = dS + A2(j), acc[1];
        const S *pj = P + PK(k, j);
        put(acc[0], -delta[0]);
        for (int r = 0; r < R; r++) {
          const S *dy = dY + A3(r, k), *xr = X + A3(r, j);
          acc[0] += dy[0] * xr[0];
        }
        put(ds[0], acc[0] * pj[0]);
      }
      for (int r = 0; r < R; r++) {
        const S *dy = dY + A3(r, k), *lr = L + A3(r, k);
        S *dl = dL + A3(r, k), acc[1];
        put(acc[0], zero<S>());
        for (int j = 0; j < K; j++) {
          const S *pj = P + PK(k, j), *ds = dS + A2(j), *xr = X + A3(r, j);
          S *dx = dX + A3(r, j);
          {
            dx[0] += pj[0] * dy[0] + ds[0] * lr[0];
            acc[0] += ds[0] * xr[0];
          }
        }
        put(dl[0], acc[0]);
      }
    }
    for (int r = 0; r < R; r++) {  // L = BT X + b
      S *dbr = db + A2(r), acc[1];
      put(acc[0], zero<S>());
      for (int k = 0; k < K; k++) {
        const S *dl = dL + A3(r, k);
        acc[0] += dl[0];
      }
      put(dbr[0], acc[0]);
      for (int qq = 0; qq < R; qq++) {
        S *dbt = dBT + A2(r * R + qq);
        put(acc[0], zero<S>());
        for (int k = 0; k < K; k++) {
          const S *dl = dL + A3(r, k), *xq = X + A3(qq, k);
          acc[0] += dl[0] * xq[0];
        }
        put(dbt[0], acc[0]);
      }
    }
    for (int qq = 0; qq < R; qq++)
      for (int k = 0; k < K; k++) {
        S *dx = dX + A3(qq, k), acc[1];
        put(acc[0], dx[0]);
        for (int r = 0; r < R; r++) {
          const S *bt = BT + A2(r * R + qq), *dl = dL + A3(r, k);
          acc[0] += bt[0] * dl[0];
        }
        put(dx[0], acc[0]);
      }
    // X_k = s_k [1, ρ_k, u_k], s_k = (var_k / c + eps_t)^-1/2
    for (int i = 0; i < 25; i++) dGV[i] = zero<S>();
    S *dgv[25];
    const S *gv[25];
    for (int i = 0; i < 25; i++) dgv[i] = dGV + A2(i), gv[i] = GV + A2(i);
    for (int k = 0; k < K; k++) {
      const T u0 = u[k], u1 = u[K + k], u2 = u[2 * K + k];
      const S *sk = s + A2(k), *rk = rho + A2(k), *dx0 = dX + A3(0, k), *dx1 = dX + A3(1, k), *dx2 = dX + A3(2, k),
              *dx3 = dX + A3(3, k), *dx4 = dX + A3(4, k);
      S *dr = drho + A2(k);
      {
        const S ds = dx0[0] + dx1[0] * rk[0] + dx2[0] * u0 + dx3[0] * u1 + dx4[0] * u2;
        const S dv = ds * (sk[0] * sk[0] * sk[0] * h);
        const S vr = T(2) * (gv[5][0] + gv[7][0] * u0 + gv[8][0] * u1 + gv[9][0] * u2);
        put(dr[0], dx1[0] * sk[0] + dv * (vr + T(2) * rk[0] * gv[6][0]));
        dgv[0][0] += dv;
        dgv[5][0] += T(2) * dv * rk[0];
        dgv[6][0] += dv * rk[0] * rk[0];
        dgv[2][0] += T(2) * u0 * dv;
        dgv[3][0] += T(2) * u1 * dv;
        dgv[4][0] += T(2) * u2 * dv;
        dgv[7][0] += T(2) * dv * rk[0] * u0;
        dgv[8][0] += T(2) * dv * rk[0] * u1;
        dgv[9][0] += T(2) * dv * rk[0] * u2;
        dgv[12][0] += (u0 * u0) * dv;
        dgv[13][0] += (u0 * u1) * dv;
        dgv[14][0] += (u0 * u2) * dv;
        dgv[17][0] += (u1 * u0) * dv;
        dgv[18][0] += (u1 * u1) * dv;
        dgv[19][0] += (u1 * u2) * dv;
        dgv[22][0] += (u2 * u0) * dv;
        dgv[23][0] += (u2 * u1) * dv;
        dgv[24][0] += (u2 * u2) * dv;
      }
    }
  }
};

// x: the 7 inputs [E, n_i]; xt: their tangents (or null); gy [E, K] (or null: forward only);
// y, yt: ȳ and its tangent (either may be null); dx, dxt: the VJP and its tangent (null: not wanted)
// x = (d [E, 3], z [E, 37], cw [98 + K + 1]); xt: their tangents (or null); gy: ∂/∂α [E] (or null: forward only);
// y, yt: α [E] and its tangent (either may be null); dx, dxt: the VJP and its tangent, ∂/∂cw summed over the edges
template <class S, class T>
int run(long E, int K, const T *u, const T *lw, double c, double eps_t, double eps_a, double eps_o, double scale,
        double rho_eps, const T *const *x, const T *const *xt, const T *gy, T *y, T *yt, T *const *dx,
        T *const *dxt) {
  Pass<S, T> p{K, u, lw, (T)c, (T)eps_t, (T)eps_a, (T)eps_o, (T)scale, (T)rho_eps};
  if (!p.alloc()) return -1;
  constexpr int NL = Lanes<T>::n;
  const int ncw = NC + K + 1;
  for (int i = 0; i < ncw; i++) {  // the constants, in every lane
    if (dx) dx[2][i] = 0;
    if (dxt) dxt[2][i] = 0;
    for (int l = 0; l < NL; l++) set_lane(p.cw[i], l, x[2][i], xt ? xt[2][i] : T(0));
  }
  for (long e0 = 0; e0 < E; e0 += NL) {
    const int nl = E - e0 < NL ? (int)(E - e0) : NL;
    Pass<S, T>::gather(x[0], xt ? xt[0] : nullptr, e0, nl, 3, p.d);
    Pass<S, T>::gather(x[1], xt ? xt[1] : nullptr, e0, nl, NZ, p.z);
    p.forward();
    if (y || yt) Pass<S, T>::scatter(p.alpha, e0, nl, 1, y, yt);
    if (!gy) continue;
    Pass<S, T>::gather(gy, nullptr, e0, nl, 1, p.galpha);
    p.vjp();
    Pass<S, T>::scatter(p.dd, e0, nl, 3, dx ? dx[0] : nullptr, dxt ? dxt[0] : nullptr);
    Pass<S, T>::scatter(p.dz, e0, nl, NZ, dx ? dx[1] : nullptr, dxt ? dxt[1] : nullptr);
    for (int i = 0; i < ncw; i++)  // the real lanes only
      for (int l = 0; l < nl; l++) {
        if (dx) dx[2][i] += lane_val(p.dcw[i], l);
        if (dxt) dxt[2][i] += lane_tan(p.dcw[i], l);
      }
  }
  free(p.buf);
  return 0;
}

}  // namespace

#define ENTRY(T, SUFFIX)                                                                                          \
  extern "C" int gate_forward_##SUFFIX(long E, int K, const T *u, const T *lw, double c, double eps_t,     \
                                            double eps_a, double eps_o, double scale, double rho_eps, const T *const *x, T *y) {             \
    return run<Lanes<T>::type, T>(E, K, u, lw, c, eps_t, eps_a, eps_o, scale, rho_eps, x, nullptr, nullptr, y, nullptr, nullptr, nullptr);  \
  }                                                                                                             \
  extern "C" int gate_vjp_##SUFFIX(long E, int K, const T *u, const T *lw, double c, double eps_t,         \
                                        double eps_a, double eps_o, double scale, double rho_eps,               \
                                        const T *const *x, const T *gy, \
                                        T *const *dx) {                                                         \
    return run<Lanes<T>::type, T>(E, K, u, lw, c, eps_t, eps_a, eps_o, scale, rho_eps, x, nullptr, gy, nullptr, nullptr, dx, nullptr);      \
  }                                                                                                             \
  extern "C" int gate_vjp_tangent_##SUFFIX(long E, int K, const T *u, const T *lw, double c, double eps_t, \
                                                double eps_a, double eps_o, double scale, double rho_eps,       \
                                                const T *const *x,            \
                                                const T *const *v, \
                                                const T *gy, T *jv, T *const *hv) {                            \
    return run<Dual<Lanes<T>::type>, T>(E, K, u, lw, c, eps_t, eps_a, eps_o, scale, rho_eps, x, v, gy, nullptr, jv, nullptr, hv);           \
  }

ENTRY(float, f32)
ENTRY(double, f64)
