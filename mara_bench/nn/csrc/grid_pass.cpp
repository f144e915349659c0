// The folded MARA gate's per-grid-point pass (kernels._grid_pass, one head), its vector-Jacobian product (VJP), and
// the derivatives of that VJP (force training's double backward). No torch headers: built at first use by
// mara_bench.nn.native and called through ctypes on contiguous CPU tensors. kernels._grid_pass is the readable
// reference; tests/nn/test_native.py holds this file to it.
//
// Per edge (K grid directions u_k, log quadrature weights lw_k, hidden width c):
//   var_k = cu·φ_k + ρ_k (cr·[1, u_k] + ρ_k GV11)   (cu, cr: entries of GV as in kernels._grid_pass)
//   s_k = (var_k / c + eps_t)^-1/2,  X_k = s_k [1, ρ_k, u_k]          (5 numbers)
//   L_k = BT X_k + b,  S_kj = L_k·X_j + lw_j,  P = softmax_j S,  Y_k = Σ_j P_kj X_j,  Ŷ_k = [Y_k, 1]
//   WY = W Ŷ with W = [Ga; Go[1:,1:]; Go[0,1:]; g[1:]]   (14 × 6)
//   qa_k = Σ_i WY_ik Ŷ_ik (rows 0-5),  qo_k = Σ_i WY_{6+i,k} Ŷ_ik,  sa = (qa/c + eps_a)^-1/2
//   so = ((Go00 + sa (2 WY_12 + sa qo)) / c + eps_o)^-1/2,  ȳ_k = so (g0 + sa WY_13) / c
//
// Layout: edges go NL = 16 at a time, one per SIMD lane; every array has the lane as its last axis, so every
// statement is a vector operation over 16 edges (the `LANES` loops; exponentials through glibc's libmvec; no
// fast-math, so every lane rounds like scalar code). A last, partial block repeats its last edge in idle lanes.
//
// Second derivatives: the VJP code is a template over its number type. Run on dual numbers (value, tangent) with the
// inputs' tangents set to the cotangents v of the VJP's outputs, the tangent of ȳ is J v (the derivative with
// respect to the VJP's input gy) and the tangent of the VJP is H v (with respect to the pass's inputs), H the Hessian
// of Σ gy·ȳ: forward-mode differentiation of the reverse pass.
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
constexpr int NL = 16;  // edges per block, one per SIMD lane
constexpr int NIN[7] = {0, 25, 25, 5, 36, 49, 7};  // entries per edge of GV, BT, b, Ga, Go, g (ρ has K)

#define LANES _Pragma("omp simd") for (int l = 0; l < NL; l++)

// ---------------------------------------------------------------------------------------------- numbers
template <class T> struct Dual {
  T v, d;
};
template <class T> inline T val(T x) { return x; }
template <class T> inline T val(Dual<T> x) { return x.v; }
template <class T> inline Dual<T> operator+(Dual<T> a, Dual<T> b) { return {a.v + b.v, a.d + b.d}; }
template <class T> inline Dual<T> operator-(Dual<T> a, Dual<T> b) { return {a.v - b.v, a.d - b.d}; }
template <class T> inline Dual<T> operator*(Dual<T> a, Dual<T> b) { return {a.v * b.v, a.d * b.v + a.v * b.d}; }
template <class T> inline Dual<T> operator+(Dual<T> a, T b) { return {a.v + b, a.d}; }
template <class T> inline Dual<T> operator+(T a, Dual<T> b) { return {a + b.v, b.d}; }
template <class T> inline Dual<T> operator-(Dual<T> a, T b) { return {a.v - b, a.d}; }
template <class T> inline Dual<T> operator*(Dual<T> a, T b) { return {a.v * b, a.d * b}; }
template <class T> inline Dual<T> operator*(T a, Dual<T> b) { return {a * b.v, a * b.d}; }
template <class T> inline Dual<T> operator/(Dual<T> a, T b) { return {a.v / b, a.d / b}; }
template <class T> inline Dual<T> operator-(Dual<T> a) { return {-a.v, -a.d}; }
// member by member: gcc does not vectorise a struct assignment inside an omp simd loop
template <class T> inline void put(T &a, T b) { a = b; }
template <class T> inline void put(Dual<T> &a, Dual<T> b) { a.v = b.v, a.d = b.d; }
template <class T> inline Dual<T> &operator+=(Dual<T> &a, Dual<T> b) { return put(a, a + b), a; }
template <class T> inline Dual<T> &operator*=(Dual<T> &a, Dual<T> b) { return put(a, a * b), a; }
template <class T> inline Dual<T> recip(Dual<T> a) {
  const T r = T(1) / a.v;
  return {r, -a.d * r * r};
}
inline float recip(float a) { return 1.0f / a; }
inline double recip(double a) { return 1.0 / a; }
inline float exp_(float x) { return expf(x); }
inline double exp_(double x) { return exp(x); }
template <class T> inline Dual<T> exp_(Dual<T> x) {
  const T e = exp_(x.v);
  return {e, e * x.d};
}
inline float rsqrt_(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt_(double x) { return 1.0 / sqrt(x); }
template <class T> inline Dual<T> rsqrt_(Dual<T> x) {
  const T r = rsqrt_(x.v);
  return {r, T(-0.5) * r * r * r * x.d};
}
template <class S> inline S zero() { return S{}; }
template <class T> inline void set(T &x, T v) { x = v; }
template <class T> inline void set(Dual<T> &x, T v) { x.v = v, x.d = T(0); }

// ---------------------------------------------------------------------------------------------- one block
// S: the number type (T, or Dual<T> for the second derivatives); T: float or double.
template <class S, class T> struct Pass {
  int K;
  const T *u, *lw;  // u coordinate-major [3, K]
  T c, eps_t, eps_a, eps_o;
  S *buf;
  // per-lane inputs, lane-major [n][NL]
  S *rho, *GV, *BT, *b, *Ga, *Go, *g;
  // forward intermediates
  S *X, *L, *P, *Y, *WY, *s, *sa, *so, *qo, *ybar;
  // gradients
  S *gy, *dX, *dL, *dY, *dWY, *dS, *drho, *dGV, *dBT, *db, *dGa, *dGo, *dg;

  size_t A3(int a, int k) const { return ((size_t)a * K + k) * NL; }
  static size_t A2(int i) { return (size_t)i * NL; }
  size_t PK(int k, int j) const { return ((size_t)k * K + j) * NL; }

  bool alloc() {
    const size_t n = (size_t)NL * ((size_t)K * (1 + R + R + M + NW + 5) + 147 + (size_t)K * K +
                                   (size_t)K * (2 + R + R + M + NW + 1) + 147);
    buf = (S *)malloc(n * sizeof(S));
    if (!buf) return false;
    S *q = buf;
    auto take = [&](S *&field, size_t count) { field = q, q += count * NL; };
    take(rho, K), take(GV, 25), take(BT, 25), take(b, 5), take(Ga, 36), take(Go, 49), take(g, 7);
    take(X, R * K), take(L, R * K), take(Y, M * K), take(WY, NW * K);
    take(s, K), take(sa, K), take(so, K), take(qo, K), take(ybar, K);
    take(P, (size_t)K * K);
    take(gy, K), take(dX, R * K), take(dL, R * K), take(dY, M * K), take(dWY, NW * K), take(dS, K);
    take(drho, K), take(dGV, 25), take(dBT, 25), take(db, 5), take(dGa, 36), take(dGo, 49), take(dg, 7);
    return true;
  }

  S *input(int i) { return i == 0 ? rho : i == 1 ? GV : i == 2 ? BT : i == 3 ? b : i == 4 ? Ga : i == 5 ? Go : g; }
  S *grad(int i) { return i == 0 ? drho : i == 1 ? dGV : i == 2 ? dBT : i == 3 ? db : i == 4 ? dGa : i == 5 ? dGo : dg; }
  int width(int i) const { return i == 0 ? K : NIN[i]; }

  // rows of n numbers of edges e0 .. e0 + nl - 1 (values, and tangents when S is dual) -> lane-major [n][NL]
  static void gather(const T *src, const T *tan, long e0, int nl, int n, S *dst) {
    for (int l = 0; l < NL; l++) {
      const long e = e0 + (l < nl ? l : nl - 1);
      for (int i = 0; i < n; i++) {
        set(dst[A2(i) + l], src[e * n + i]);
        if (tan) add_tangent(dst[A2(i) + l], tan[e * n + i]);
      }
    }
  }
  static void add_tangent(T &, T) {}
  static void add_tangent(Dual<T> &x, T t) { x.d = t; }
  static void scatter(const S *src, long e0, int nl, int n, T *vals, T *tans) {
    for (int l = 0; l < nl; l++)
      for (int i = 0; i < n; i++) {
        if (vals) vals[(e0 + l) * n + i] = val(src[A2(i) + l]);
        if (tans) tans[(e0 + l) * n + i] = tangent(src[A2(i) + l]);
      }
  }
  static T tangent(T) { return T(0); }
  static T tangent(Dual<T> x) { return x.d; }

  // W = [Ga; Go[1:,1:]; Go[0,1:]; g[1:]] (14 × 6): the lanes of entry (p, i)
  S *w_row(int p, int i) {
    if (p < M) return Ga + A2(p * M + i);
    if (p < 2 * M) return Go + A2((1 + p - M) * 7 + 1 + i);
    if (p == 12) return Go + A2(1 + i);
    return g + A2(1 + i);
  }

  void forward() {
    // token variance, with cu, cr the entries of GV as in kernels._grid_pass (cu: GV00, 2 GV0a, GVab; cr: 2 GV10,
    // 2 GV1a; a, b over the u rows 2-4)
    const S *gv[25];
    for (int i = 0; i < 25; i++) gv[i] = GV + A2(i);
    for (int k = 0; k < K; k++) {
      const T u0 = u[k], u1 = u[K + k], u2 = u[2 * K + k];
      const S *rk = rho + A2(k);
      S *sk = s + A2(k), *x0 = X + A3(0, k), *x1 = X + A3(1, k), *x2 = X + A3(2, k), *x3 = X + A3(3, k),
        *x4 = X + A3(4, k);
      LANES {
        const S vu = gv[0][l] + T(2) * (gv[2][l] * u0 + gv[3][l] * u1 + gv[4][l] * u2) +
                     u0 * (gv[12][l] * u0 + gv[13][l] * u1 + gv[14][l] * u2) +
                     u1 * (gv[17][l] * u0 + gv[18][l] * u1 + gv[19][l] * u2) +
                     u2 * (gv[22][l] * u0 + gv[23][l] * u1 + gv[24][l] * u2);
        const S vr = T(2) * (gv[5][l] + gv[7][l] * u0 + gv[8][l] * u1 + gv[9][l] * u2);
        const S var = vu + rk[l] * (vr + rk[l] * gv[6][l]);
        const S sv = rsqrt_(var / c + eps_t);
        put(sk[l], sv);
        put(x0[l], sv);
        put(x1[l], sv * rk[l]);
        put(x2[l], sv * u0);
        put(x3[l], sv * u1);
        put(x4[l], sv * u2);
      }
    }
    for (int r = 0; r < R; r++)  // L_k = BT X_k + b
      for (int k = 0; k < K; k++) {
        S *lk = L + A3(r, k), acc[NL];
        const S *br = b + A2(r);
        LANES put(acc[l], br[l]);
        for (int q = 0; q < R; q++) {
          const S *bt = BT + A2(r * R + q), *xq = X + A3(q, k);
          LANES acc[l] += bt[l] * xq[l];
        }
        LANES put(lk[l], acc[l]);
      }
    for (int k = 0; k < K; k++) {  // P_k = softmax_j(L_k·X_j + lw_j), Y_k = Σ_j P_kj X_j
      T mx[NL];
      S sum[NL];
      for (int j = 0; j < K; j++) {
        S *pj = P + PK(k, j), acc[NL];
        const T lwj = lw[j];
        LANES set(acc[l], lwj);
        for (int r = 0; r < R; r++) {
          const S *lr = L + A3(r, k), *xr = X + A3(r, j);
          LANES acc[l] += lr[l] * xr[l];
        }
        LANES put(pj[l], acc[l]);
        if (j == 0) LANES mx[l] = val(acc[l]);
        else LANES mx[l] = val(acc[l]) > mx[l] ? val(acc[l]) : mx[l];
      }
      LANES put(sum[l], zero<S>());
      for (int j = 0; j < K; j++) {
        S *pj = P + PK(k, j);
        LANES {
          put(pj[l], exp_(pj[l] - mx[l]));  // any shift gives the same softmax (its tangent cancels too)
          sum[l] += pj[l];
        }
      }
      LANES put(sum[l], recip(sum[l]));
      for (int j = 0; j < K; j++) {
        S *pj = P + PK(k, j);
        LANES pj[l] *= sum[l];
      }
      for (int r = 0; r < R; r++) {
        S *yr = Y + A3(r, k), acc[NL];
        LANES put(acc[l], zero<S>());
        for (int j = 0; j < K; j++) {
          const S *pj = P + PK(k, j), *xr = X + A3(r, j);
          LANES acc[l] += pj[l] * xr[l];
        }
        LANES put(yr[l], acc[l]);
      }
      S *y5 = Y + A3(R, k);
      LANES set(y5[l], T(1));
    }
    for (int p = 0; p < NW; p++)  // WY = W Ŷ
      for (int k = 0; k < K; k++) {
        S *wy = WY + A3(p, k);
        LANES put(wy[l], zero<S>());
        for (int i = 0; i < M; i++) {
          const S *wpi = w_row(p, i), *yi = Y + A3(i, k);
          LANES wy[l] += wpi[l] * yi[l];
        }
      }
    for (int k = 0; k < K; k++) {  // the readout's quadratic forms and ȳ
      S qa[NL], qov[NL];
      LANES {
        put(qa[l], zero<S>());
        put(qov[l], zero<S>());
      }
      for (int i = 0; i < M; i++) {
        const S *wa = WY + A3(i, k), *wo = WY + A3(M + i, k), *yi = Y + A3(i, k);
        LANES {
          qa[l] += wa[l] * yi[l];
          qov[l] += wo[l] * yi[l];
        }
      }
      const S *go0 = Go, *g0 = g, *wy12 = WY + A3(12, k), *wy13 = WY + A3(13, k);
      S *sak = sa + A2(k), *sok = so + A2(k), *qok = qo + A2(k), *yb = ybar + A2(k);
      LANES {
        const S a = rsqrt_(qa[l] / c + eps_a);
        const S o = rsqrt_((go0[l] + a * (T(2) * wy12[l] + a * qov[l])) / c + eps_o);
        put(sak[l], a);
        put(sok[l], o);
        put(qok[l], qov[l]);
        put(yb[l], o * (g0[l] + a * wy13[l]) / c);
      }
    }
  }

  void vjp() {  // gradients of Σ gy·ȳ into drho .. dg (forward() first)
    const T h = T(-0.5) / c;
    for (int i = 0; i < 49; i++) LANES dGo[A2(i) + l] = zero<S>();
    LANES put(dg[l], zero<S>());
    for (int k = 0; k < K; k++) {  // ȳ, so, sa, the quadratic forms
      const S *sak = sa + A2(k), *sok = so + A2(k), *qok = qo + A2(k), *wyo = WY + A3(12, k), *wyg = WY + A3(13, k),
              *gyk = gy + A2(k);
      S dqa[NL], dqo[NL];
      S *dwyo = dWY + A3(12, k), *dwyg = dWY + A3(13, k);
      LANES {
        const S t = g[l] + sak[l] * wyg[l];
        const S d_so = gyk[l] * t / c, d_t = gyk[l] * sok[l] / c;
        dg[l] += d_t;
        const S d_z = d_so * (sok[l] * sok[l] * sok[l] * h);
        dGo[l] += d_z;
        const S d_sa = d_t * wyg[l] + d_z * (T(2) * wyo[l] + T(2) * sak[l] * qok[l]);
        put(dqa[l], d_sa * (sak[l] * sak[l] * sak[l] * h));
        put(dqo[l], d_z * sak[l] * sak[l]);
        put(dwyo[l], d_z * T(2) * sak[l]);
        put(dwyg[l], d_t * sak[l]);
      }
      for (int i = 0; i < M; i++) {
        const S *yi = Y + A3(i, k), *wa = WY + A3(i, k), *wo = WY + A3(M + i, k);
        S *da = dWY + A3(i, k), *dox = dWY + A3(M + i, k), *dy = dY + A3(i, k);
        LANES {
          put(da[l], dqa[l] * yi[l]);
          put(dox[l], dqo[l] * yi[l]);
          put(dy[l], dqa[l] * wa[l] + dqo[l] * wo[l]);
        }
      }
    }
    for (int p = 0; p < NW; p++)  // WY = W Ŷ: ∂/∂W = Σ_k dWY Ŷᵀ
      for (int i = 0; i < M; i++) {
        S *out = p < M       ? dGa + A2(p * M + i)
                 : p < 2 * M ? dGo + A2((1 + p - M) * 7 + 1 + i)
                 : p == 12   ? dGo + A2(1 + i)
                             : dg + A2(1 + i);
        S acc[NL];
        LANES put(acc[l], zero<S>());
        for (int k = 0; k < K; k++) {
          const S *dw = dWY + A3(p, k), *yi = Y + A3(i, k);
          LANES acc[l] += dw[l] * yi[l];
        }
        LANES put(out[l], acc[l]);
      }
    for (int i = 0; i < R; i++)  // ∂/∂Ŷ += Wᵀ dWY
      for (int k = 0; k < K; k++) {
        S *dy = dY + A3(i, k), acc[NL];
        LANES put(acc[l], dy[l]);
        for (int p = 0; p < NW; p++) {
          const S *wpi = w_row(p, i), *dw = dWY + A3(p, k);
          LANES acc[l] += wpi[l] * dw[l];
        }
        LANES put(dy[l], acc[l]);
      }
    // attention: ∂/∂S_kj = P_kj (dY_k·X_j − dY_k·Y_k); ∂/∂X_j += Σ_k P_kj dY_k + ∂S_kj L_k; ∂/∂L_k = Σ_j ∂S_kj X_j
    for (int i = 0; i < R * K; i++) LANES dX[(size_t)i * NL + l] = zero<S>();
    for (int k = 0; k < K; k++) {
      S delta[NL];
      LANES put(delta[l], zero<S>());
      for (int r = 0; r < R; r++) {
        const S *dy = dY + A3(r, k), *y = Y + A3(r, k);
        LANES delta[l] += dy[l] * y[l];
      }
      for (int j = 0; j < K; j++) {
        S *ds = dS + A2(j), acc[NL];
        const S *pj = P + PK(k, j);
        LANES put(acc[l], -delta[l]);
        for (int r = 0; r < R; r++) {
          const S *dy = dY + A3(r, k), *xr = X + A3(r, j);
          LANES acc[l] += dy[l] * xr[l];
        }
        LANES put(ds[l], acc[l] * pj[l]);
      }
      for (int r = 0; r < R; r++) {
        const S *dy = dY + A3(r, k), *lr = L + A3(r, k);
        S *dl = dL + A3(r, k), acc[NL];
        LANES put(acc[l], zero<S>());
        for (int j = 0; j < K; j++) {
          const S *pj = P + PK(k, j), *ds = dS + A2(j), *xr = X + A3(r, j);
          S *dx = dX + A3(r, j);
          LANES {
            dx[l] += pj[l] * dy[l] + ds[l] * lr[l];
            acc[l] += ds[l] * xr[l];
          }
        }
        LANES put(dl[l], acc[l]);
      }
    }
    for (int r = 0; r < R; r++) {  // L = BT X + b
      S *dbr = db + A2(r), acc[NL];
      LANES put(acc[l], zero<S>());
      for (int k = 0; k < K; k++) {
        const S *dl = dL + A3(r, k);
        LANES acc[l] += dl[l];
      }
      LANES put(dbr[l], acc[l]);
      for (int qq = 0; qq < R; qq++) {
        S *dbt = dBT + A2(r * R + qq);
        LANES put(acc[l], zero<S>());
        for (int k = 0; k < K; k++) {
          const S *dl = dL + A3(r, k), *xq = X + A3(qq, k);
          LANES acc[l] += dl[l] * xq[l];
        }
        LANES put(dbt[l], acc[l]);
      }
    }
    for (int qq = 0; qq < R; qq++)
      for (int k = 0; k < K; k++) {
        S *dx = dX + A3(qq, k), acc[NL];
        LANES put(acc[l], dx[l]);
        for (int r = 0; r < R; r++) {
          const S *bt = BT + A2(r * R + qq), *dl = dL + A3(r, k);
          LANES acc[l] += bt[l] * dl[l];
        }
        LANES put(dx[l], acc[l]);
      }
    // X_k = s_k [1, ρ_k, u_k], s_k = (var_k / c + eps_t)^-1/2
    for (int i = 0; i < 25; i++) LANES dGV[A2(i) + l] = zero<S>();
    S *dgv[25];
    const S *gv[25];
    for (int i = 0; i < 25; i++) dgv[i] = dGV + A2(i), gv[i] = GV + A2(i);
    for (int k = 0; k < K; k++) {
      const T u0 = u[k], u1 = u[K + k], u2 = u[2 * K + k];
      const S *sk = s + A2(k), *rk = rho + A2(k), *dx0 = dX + A3(0, k), *dx1 = dX + A3(1, k), *dx2 = dX + A3(2, k),
              *dx3 = dX + A3(3, k), *dx4 = dX + A3(4, k);
      S *dr = drho + A2(k);
      LANES {
        const S ds = dx0[l] + dx1[l] * rk[l] + dx2[l] * u0 + dx3[l] * u1 + dx4[l] * u2;
        const S dv = ds * (sk[l] * sk[l] * sk[l] * h);
        const S vr = T(2) * (gv[5][l] + gv[7][l] * u0 + gv[8][l] * u1 + gv[9][l] * u2);
        put(dr[l], dx1[l] * sk[l] + dv * (vr + T(2) * rk[l] * gv[6][l]));
        dgv[0][l] += dv;
        dgv[5][l] += T(2) * dv * rk[l];
        dgv[6][l] += dv * rk[l] * rk[l];
        dgv[2][l] += T(2) * u0 * dv;
        dgv[3][l] += T(2) * u1 * dv;
        dgv[4][l] += T(2) * u2 * dv;
        dgv[7][l] += T(2) * dv * rk[l] * u0;
        dgv[8][l] += T(2) * dv * rk[l] * u1;
        dgv[9][l] += T(2) * dv * rk[l] * u2;
        dgv[12][l] += (u0 * u0) * dv;
        dgv[13][l] += (u0 * u1) * dv;
        dgv[14][l] += (u0 * u2) * dv;
        dgv[17][l] += (u1 * u0) * dv;
        dgv[18][l] += (u1 * u1) * dv;
        dgv[19][l] += (u1 * u2) * dv;
        dgv[22][l] += (u2 * u0) * dv;
        dgv[23][l] += (u2 * u1) * dv;
        dgv[24][l] += (u2 * u2) * dv;
      }
    }
  }
};

// x: the 7 inputs [E, n_i]; xt: their tangents (or null); gy [E, K] (or null: forward only);
// y, yt: ȳ and its tangent (either may be null); dx, dxt: the VJP and its tangent (null: not wanted)
template <class S, class T>
int run(long E, int K, const T *u, const T *lw, double c, double eps_t, double eps_a, double eps_o,
        const T *const *x, const T *const *xt, const T *gy, T *y, T *yt, T *const *dx, T *const *dxt) {
  Pass<S, T> p{K, u, lw, (T)c, (T)eps_t, (T)eps_a, (T)eps_o};
  if (!p.alloc()) return -1;
  for (long e0 = 0; e0 < E; e0 += NL) {
    const int nl = E - e0 < NL ? (int)(E - e0) : NL;
    for (int i = 0; i < 7; i++) Pass<S, T>::gather(x[i], xt ? xt[i] : nullptr, e0, nl, p.width(i), p.input(i));
    p.forward();
    if (y || yt) Pass<S, T>::scatter(p.ybar, e0, nl, K, y, yt);
    if (!gy) continue;
    Pass<S, T>::gather(gy, nullptr, e0, nl, K, p.gy);
    p.vjp();
    for (int i = 0; i < 7; i++)
      Pass<S, T>::scatter(p.grad(i), e0, nl, p.width(i), dx ? dx[i] : nullptr, dxt ? dxt[i] : nullptr);
  }
  free(p.buf);
  return 0;
}

}  // namespace

#define ENTRY(T, SUFFIX)                                                                                          \
  extern "C" int grid_pass_forward_##SUFFIX(long E, int K, const T *u, const T *lw, double c, double eps_t,     \
                                            double eps_a, double eps_o, const T *const *x, T *y) {             \
    return run<T, T>(E, K, u, lw, c, eps_t, eps_a, eps_o, x, nullptr, nullptr, y, nullptr, nullptr, nullptr);  \
  }                                                                                                             \
  extern "C" int grid_pass_vjp_##SUFFIX(long E, int K, const T *u, const T *lw, double c, double eps_t,         \
                                        double eps_a, double eps_o, const T *const *x, const T *gy,            \
                                        T *const *dx) {                                                         \
    return run<T, T>(E, K, u, lw, c, eps_t, eps_a, eps_o, x, nullptr, gy, nullptr, nullptr, dx, nullptr);      \
  }                                                                                                             \
  extern "C" int grid_pass_vjp_tangent_##SUFFIX(long E, int K, const T *u, const T *lw, double c, double eps_t, \
                                                double eps_a, double eps_o, const T *const *x, const T *const *v, \
                                                const T *gy, T *jv, T *const *hv) {                            \
    return run<Dual<T>, T>(E, K, u, lw, c, eps_t, eps_a, eps_o, x, v, gy, nullptr, jv, nullptr, hv);           \
  }

ENTRY(float, f32)
ENTRY(double, f64)
