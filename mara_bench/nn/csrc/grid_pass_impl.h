/* Body of grid_pass.c for one floating-point type: included once per type with T, SUFFIX, EXP and SQRT defined.
 * Edges are processed NL at a time, one per SIMD lane: every array below has the lane as its last axis, so each
 * statement is a vector operation over NL edges (the compiler vectorises the `LANES` loops; exponentials through
 * glibc's libmvec; no fast-math, so every lane rounds as the scalar code would). A last, partial block repeats its
 * last edge in the idle lanes and stores only the real ones. */
#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUFFIX)
#define LANES _Pragma("omp simd") for (int l = 0; l < NL; l++)
#define A3(a, k) (((a) * K + (k)) * NL)        /* [rows][K][NL] */
#define A2(i) ((i) * NL)                       /* [n][NL] */
#define PK(k, j) ((((size_t)(k)) * K + (j)) * NL) /* [K][K][NL] */

typedef struct {
  /* per-lane inputs */
  T *rho, *GV, *BT, *b, *Ga, *Go, *g;
  /* forward intermediates */
  T *X, *L, *P, *Y, *WY, *s, *sa, *so, *qo, *ybar;
} FN(block);

static T *FN(alloc)(int K, FN(block) * w) {
  size_t n = (size_t)NL * ((size_t)K * (1 + R + R + M + NW + 5) + 25 + 25 + 5 + 36 + 49 + 7 + (size_t)K * K);
  T *p = (T *)malloc(n * sizeof(T));
  if (!p) return NULL;
  T *q = p;
#define TAKE(field, count) w->field = q, q += (size_t)(count) * NL
  TAKE(rho, K); TAKE(GV, 25); TAKE(BT, 25); TAKE(b, 5); TAKE(Ga, 36); TAKE(Go, 49); TAKE(g, 7);
  TAKE(X, R * K); TAKE(L, R * K); TAKE(Y, M * K); TAKE(WY, NW * K);
  TAKE(s, K); TAKE(sa, K); TAKE(so, K); TAKE(qo, K); TAKE(ybar, K);
  TAKE(P, (size_t)K * K);
#undef TAKE
  return p;
}

/* copy n-entry rows of edges e0 .. e0 + nl - 1 into lane-major [n][NL] (idle lanes repeat the last edge) */
static void FN(gather)(const T *src, long e0, int nl, int n, T *dst) {
  for (int l = 0; l < NL; l++) {
    const T *row = src + (e0 + (l < nl ? l : nl - 1)) * n;
    for (int i = 0; i < n; i++) dst[A2(i) + l] = row[i];
  }
}

static void FN(load)(const T *rho, const T *GV, const T *BT, const T *b, const T *Ga, const T *Go, const T *g,
                     long e0, int nl, int K, FN(block) * w) {
  FN(gather)(rho, e0, nl, K, w->rho);
  FN(gather)(GV, e0, nl, 25, w->GV);
  FN(gather)(BT, e0, nl, 25, w->BT);
  FN(gather)(b, e0, nl, 5, w->b);
  FN(gather)(Ga, e0, nl, 36, w->Ga);
  FN(gather)(Go, e0, nl, 49, w->Go);
  FN(gather)(g, e0, nl, 7, w->g);
}

/* W = [Ga; Go[1:,1:]; Go[0,1:]; g[1:]] (14 × 6): the lanes of entry (p, i) */
static inline T *FN(w_row)(const FN(block) * w, int p, int i) {
  if (p < M) return w->Ga + A2(p * M + i);
  if (p < 2 * M) return w->Go + A2((1 + p - M) * 7 + 1 + i);
  if (p == 12) return w->Go + A2(1 + i);
  return w->g + A2(1 + i);
}

static void FN(forward_block)(int K, const T *u, const T *lw, T c, T eps_t, T eps_a, T eps_o, FN(block) * w) {
  T *X = w->X, *L = w->L, *Y = w->Y, *WY = w->WY;
  /* token variance: var_k = cu·φ_k + ρ_k (cr·[1, u_k] + ρ_k GV11), with cu, cr the entries of GV as in
     kernels._grid_pass (cu: GV00, 2 GV0a, GVab; cr: 2 GV10, 2 GV1a; a, b over the u rows 2-4) */
  const T *gv[25];
  for (int i = 0; i < 25; i++) gv[i] = w->GV + A2(i);
  for (int k = 0; k < K; k++) {
    const T u0 = u[k], u1 = u[K + k], u2 = u[2 * K + k]; /* u coordinate-major [3, K] */
    const T *rk = w->rho + A2(k);
    T *s = w->s + A2(k), *x0 = X + A3(0, k), *x1 = X + A3(1, k), *x2 = X + A3(2, k), *x3 = X + A3(3, k),
      *x4 = X + A3(4, k);
    LANES {
      const T vu = gv[0][l] + 2 * (gv[2][l] * u0 + gv[3][l] * u1 + gv[4][l] * u2) +
                   u0 * (gv[12][l] * u0 + gv[13][l] * u1 + gv[14][l] * u2) +
                   u1 * (gv[17][l] * u0 + gv[18][l] * u1 + gv[19][l] * u2) +
                   u2 * (gv[22][l] * u0 + gv[23][l] * u1 + gv[24][l] * u2);
      const T vr = 2 * (gv[5][l] + gv[7][l] * u0 + gv[8][l] * u1 + gv[9][l] * u2);
      const T var = vu + rk[l] * (vr + rk[l] * gv[6][l]);
      const T sk = 1 / SQRT(var / c + eps_t);
      s[l] = sk;
      x0[l] = sk;
      x1[l] = sk * rk[l];
      x2[l] = sk * u0;
      x3[l] = sk * u1;
      x4[l] = sk * u2;
    }
  }
  /* L_k = BT X_k + b */
  for (int r = 0; r < R; r++)
    for (int k = 0; k < K; k++) {
      T *lk = L + A3(r, k);
      const T *br = w->b + A2(r);
      LANES lk[l] = br[l];
      for (int q = 0; q < R; q++) {
        const T *bt = w->BT + A2(r * R + q), *xq = X + A3(q, k);
        LANES lk[l] += bt[l] * xq[l];
      }
    }
  /* P_k = softmax_j(L_k·X_j + lw_j), Y_k = Σ_j P_kj X_j */
  for (int k = 0; k < K; k++) {
    T mx[NL], sum[NL];
    for (int j = 0; j < K; j++) {
      T *pj = w->P + PK(k, j);
      const T lwj = lw[j];
      LANES pj[l] = lwj;
      for (int r = 0; r < R; r++) {
        const T *lr = L + A3(r, k), *xr = X + A3(r, j);
        LANES pj[l] += lr[l] * xr[l];
      }
      if (j == 0) LANES mx[l] = pj[l];
      else LANES mx[l] = pj[l] > mx[l] ? pj[l] : mx[l];
    }
    LANES sum[l] = 0;
    for (int j = 0; j < K; j++) {
      T *pj = w->P + PK(k, j);
      LANES {
        pj[l] = EXP(pj[l] - mx[l]);
        sum[l] += pj[l];
      }
    }
    LANES sum[l] = 1 / sum[l];
    for (int j = 0; j < K; j++) {
      T *pj = w->P + PK(k, j);
      LANES pj[l] *= sum[l];
    }
    for (int r = 0; r < R; r++) {
      T *yr = Y + A3(r, k);
      LANES yr[l] = 0;
      for (int j = 0; j < K; j++) {
        const T *pj = w->P + PK(k, j), *xr = X + A3(r, j);
        LANES yr[l] += pj[l] * xr[l];
      }
    }
    T *y5 = Y + A3(R, k);
    LANES y5[l] = 1;
  }
  /* WY = W Ŷ, the readout's quadratic forms and ȳ */
  for (int p = 0; p < NW; p++)
    for (int k = 0; k < K; k++) {
      T *wy = WY + A3(p, k);
      LANES wy[l] = 0;
      for (int i = 0; i < M; i++) {
        const T *wpi = FN(w_row)(w, p, i), *yi = Y + A3(i, k);
        LANES wy[l] += wpi[l] * yi[l];
      }
    }
  for (int k = 0; k < K; k++) {
    T qa[NL], qo[NL];
    LANES qa[l] = qo[l] = 0;
    for (int i = 0; i < M; i++) {
      const T *wa = WY + A3(i, k), *wo = WY + A3(M + i, k), *yi = Y + A3(i, k);
      LANES {
        qa[l] += wa[l] * yi[l];
        qo[l] += wo[l] * yi[l];
      }
    }
    const T *go0 = w->Go, *g0 = w->g, *wy12 = WY + A3(12, k), *wy13 = WY + A3(13, k);
    T *sa = w->sa + A2(k), *so = w->so + A2(k), *qok = w->qo + A2(k), *yb = w->ybar + A2(k);
    LANES {
      const T a = 1 / SQRT(qa[l] / c + eps_a);
      const T o = 1 / SQRT((go0[l] + a * (2 * wy12[l] + a * qo[l])) / c + eps_o);
      sa[l] = a;
      so[l] = o;
      qok[l] = qo[l];
      yb[l] = o * (g0[l] + a * wy13[l]) / c;
    }
  }
}

/* scatter lane-major [n][NL] back to rows of the nl real edges */
static void FN(scatter)(const T *src, long e0, int nl, int n, T *dst) {
  for (int l = 0; l < nl; l++) {
    T *row = dst + (e0 + l) * n;
    for (int i = 0; i < n; i++) row[i] = src[A2(i) + l];
  }
}

int FN(grid_pass_forward)(long E, int K, const T *u, const T *lw, double c, double eps_t, double eps_a,
                          double eps_o, const T *rho, const T *GV, const T *BT, const T *b, const T *Ga,
                          const T *Go, const T *g, T *ybar) {
  FN(block) w;
  T *buf = FN(alloc)(K, &w);
  if (!buf) return -1;
  for (long e0 = 0; e0 < E; e0 += NL) {
    const int nl = E - e0 < NL ? (int)(E - e0) : NL;
    FN(load)(rho, GV, BT, b, Ga, Go, g, e0, nl, K, &w);
    FN(forward_block)(K, u, lw, (T)c, (T)eps_t, (T)eps_a, (T)eps_o, &w);
    FN(scatter)(w.ybar, e0, nl, K, ybar);
  }
  free(buf);
  return 0;
}

int FN(grid_pass_vjp)(long E, int K, const T *u, const T *lw, double c_, double eps_t, double eps_a,
                      double eps_o, const T *rho, const T *GV, const T *BT, const T *b, const T *Ga, const T *Go,
                      const T *g, const T *gy, T *drho, T *dGV, T *dBT, T *db, T *dGa, T *dGo, T *dg) {
  FN(block) w;
  T *buf = FN(alloc)(K, &w);
  /* gradients, lane-major: gy, dX, dL, dŶ, dWY [rows][K][NL]; dS [K][NL]; per-edge ones [n][NL] */
  size_t n = (size_t)NL * ((size_t)K * (2 + R + R + M + NW + 1) + 25 + 25 + 5 + 36 + 49 + 7 + 14);
  T *gbuf = (T *)malloc(n * sizeof(T));
  if (!buf || !gbuf) {
    free(buf);
    free(gbuf);
    return -1;
  }
  T *q = gbuf;
  T *gyl = q; q += (size_t)K * NL;
  T *dX = q; q += (size_t)R * K * NL;
  T *dL = q; q += (size_t)R * K * NL;
  T *dY = q; q += (size_t)M * K * NL;
  T *dWY = q; q += (size_t)NW * K * NL;
  T *dS = q; q += (size_t)K * NL;
  T *drhol = q; q += (size_t)K * NL;
  T *dGVl = q; q += 25 * NL;
  T *dBTl = q; q += 25 * NL;
  T *dbl = q; q += 5 * NL;
  T *dGal = q; q += 36 * NL;
  T *dGol = q; q += 49 * NL;
  T *dgl = q; q += 7 * NL;
  const T c = (T)c_;
  for (long e0 = 0; e0 < E; e0 += NL) {
    const int nl = E - e0 < NL ? (int)(E - e0) : NL;
    FN(load)(rho, GV, BT, b, Ga, Go, g, e0, nl, K, &w);
    FN(gather)(gy, e0, nl, K, gyl);
    FN(forward_block)(K, u, lw, c, (T)eps_t, (T)eps_a, (T)eps_o, &w);
    const T *X = w.X, *L = w.L, *Y = w.Y, *WY = w.WY;
    /* readout: ȳ = so (g0 + sa WY13) / c, so = ((Go00 + sa (2 WY12 + sa qo)) / c + eps_o)^-1/2,
       sa = (qa / c + eps_a)^-1/2, qa = Σ_i WY_i Ŷ_i, qo = Σ_i WY_{6+i} Ŷ_i */
    for (int i = 0; i < 49; i++) LANES dGol[A2(i) + l] = 0;
    LANES dgl[l] = 0;
    for (int k = 0; k < K; k++) {
      const T *sa = w.sa + A2(k), *so = w.so + A2(k), *qo = w.qo + A2(k), *wyo = WY + A3(12, k),
              *wyg = WY + A3(13, k), *gyk = gyl + A2(k), *g0 = w.g;
      T dqa[NL], dqo[NL];
      T *dwyo = dWY + A3(12, k), *dwyg = dWY + A3(13, k);
      LANES {
        const T t = g0[l] + sa[l] * wyg[l];
        const T d_so = gyk[l] * t / c, d_t = gyk[l] * so[l] / c;
        dgl[l] += d_t;
        const T d_z = d_so * (-so[l] * so[l] * so[l] / (2 * c));
        dGol[l] += d_z;
        const T d_sa = d_t * wyg[l] + d_z * (2 * wyo[l] + 2 * sa[l] * qo[l]);
        dqa[l] = d_sa * (-sa[l] * sa[l] * sa[l] / (2 * c));
        dqo[l] = d_z * sa[l] * sa[l];
        dwyo[l] = d_z * 2 * sa[l];
        dwyg[l] = d_t * sa[l];
      }
      for (int i = 0; i < M; i++) {
        const T *yi = Y + A3(i, k), *wa = WY + A3(i, k), *wo = WY + A3(M + i, k);
        T *da = dWY + A3(i, k), *dox = dWY + A3(M + i, k), *dy = dY + A3(i, k);
        LANES {
          da[l] = dqa[l] * yi[l];
          dox[l] = dqo[l] * yi[l];
          dy[l] = dqa[l] * wa[l] + dqo[l] * wo[l];
        }
      }
    }
    /* WY = W Ŷ: ∂/∂W = Σ_k dWY Ŷᵀ, ∂/∂Ŷ += Wᵀ dWY */
    for (int p = 0; p < NW; p++)
      for (int i = 0; i < M; i++) {
        T *acc = p < M ? dGal + A2(p * M + i)
                       : p < 2 * M ? dGol + A2((1 + p - M) * 7 + 1 + i) : p == 12 ? dGol + A2(1 + i) : dgl + A2(1 + i);
        LANES acc[l] = 0;
        for (int k = 0; k < K; k++) {
          const T *dw = dWY + A3(p, k), *yi = Y + A3(i, k);
          LANES acc[l] += dw[l] * yi[l];
        }
      }
    for (int i = 0; i < R; i++)
      for (int k = 0; k < K; k++) {
        T *dy = dY + A3(i, k);
        for (int p = 0; p < NW; p++) {
          const T *wpi = FN(w_row)(&w, p, i), *dw = dWY + A3(p, k);
          LANES dy[l] += wpi[l] * dw[l];
        }
      }
    /* attention: ∂/∂S_kj = P_kj (dY_k·X_j − dY_k·Y_k); ∂/∂X_j += Σ_k P_kj dY_k + ∂S_kj L_k; ∂/∂L_k = Σ_j ∂S_kj X_j */
    for (int i = 0; i < R * K; i++) LANES dX[i * NL + l] = 0;
    for (int k = 0; k < K; k++) {
      T delta[NL];
      LANES delta[l] = 0;
      for (int r = 0; r < R; r++) {
        const T *dy = dY + A3(r, k), *y = Y + A3(r, k);
        LANES delta[l] += dy[l] * y[l];
      }
      for (int j = 0; j < K; j++) {
        T *ds = dS + A2(j);
        const T *pj = w.P + PK(k, j);
        LANES ds[l] = -delta[l];
        for (int r = 0; r < R; r++) {
          const T *dy = dY + A3(r, k), *xr = X + A3(r, j);
          LANES ds[l] += dy[l] * xr[l];
        }
        LANES ds[l] *= pj[l];
      }
      for (int r = 0; r < R; r++) {
        const T *dy = dY + A3(r, k), *lr = L + A3(r, k);
        T *dl = dL + A3(r, k);
        LANES dl[l] = 0;
        for (int j = 0; j < K; j++) {
          const T *pj = w.P + PK(k, j), *ds = dS + A2(j), *xr = X + A3(r, j);
          T *dx = dX + A3(r, j);
          LANES {
            dx[l] += pj[l] * dy[l] + ds[l] * lr[l];
            dl[l] += ds[l] * xr[l];
          }
        }
      }
    }
    /* L = BT X + b */
    for (int r = 0; r < R; r++) {
      T *dbr = dbl + A2(r);
      LANES dbr[l] = 0;
      for (int k = 0; k < K; k++) {
        const T *dl = dL + A3(r, k);
        LANES dbr[l] += dl[l];
      }
      for (int qq = 0; qq < R; qq++) {
        T *dbt = dBTl + A2(r * R + qq);
        LANES dbt[l] = 0;
        for (int k = 0; k < K; k++) {
          const T *dl = dL + A3(r, k), *xq = X + A3(qq, k);
          LANES dbt[l] += dl[l] * xq[l];
        }
      }
    }
    for (int qq = 0; qq < R; qq++)
      for (int k = 0; k < K; k++) {
        T *dx = dX + A3(qq, k);
        for (int r = 0; r < R; r++) {
          const T *bt = w.BT + A2(r * R + qq), *dl = dL + A3(r, k);
          LANES dx[l] += bt[l] * dl[l];
        }
      }
    /* X_k = s_k [1, ρ_k, u_k], s_k = (var_k / c + eps_t)^-1/2 */
    for (int i = 0; i < 25; i++) LANES dGVl[A2(i) + l] = 0;
    T *dgv[25];
    const T *gv[25];
    for (int i = 0; i < 25; i++) dgv[i] = dGVl + A2(i), gv[i] = w.GV + A2(i);
    for (int k = 0; k < K; k++) {
      const T u0 = u[k], u1 = u[K + k], u2 = u[2 * K + k];
      const T *s = w.s + A2(k), *rk = w.rho + A2(k), *dx0 = dX + A3(0, k), *dx1 = dX + A3(1, k),
              *dx2 = dX + A3(2, k), *dx3 = dX + A3(3, k), *dx4 = dX + A3(4, k);
      T *dr = drhol + A2(k);
      LANES {
        const T ds = dx0[l] + dx1[l] * rk[l] + dx2[l] * u0 + dx3[l] * u1 + dx4[l] * u2;
        const T dv = ds * (-s[l] * s[l] * s[l] / (2 * c));
        const T vr = 2 * (gv[5][l] + gv[7][l] * u0 + gv[8][l] * u1 + gv[9][l] * u2);
        dr[l] = dx1[l] * s[l] + dv * (vr + 2 * rk[l] * gv[6][l]);
        dgv[0][l] += dv;
        dgv[5][l] += 2 * dv * rk[l];
        dgv[6][l] += dv * rk[l] * rk[l];
        dgv[2][l] += 2 * dv * u0;
        dgv[3][l] += 2 * dv * u1;
        dgv[4][l] += 2 * dv * u2;
        dgv[7][l] += 2 * dv * rk[l] * u0;
        dgv[8][l] += 2 * dv * rk[l] * u1;
        dgv[9][l] += 2 * dv * rk[l] * u2;
        dgv[12][l] += dv * u0 * u0;
        dgv[13][l] += dv * u0 * u1;
        dgv[14][l] += dv * u0 * u2;
        dgv[17][l] += dv * u1 * u0;
        dgv[18][l] += dv * u1 * u1;
        dgv[19][l] += dv * u1 * u2;
        dgv[22][l] += dv * u2 * u0;
        dgv[23][l] += dv * u2 * u1;
        dgv[24][l] += dv * u2 * u2;
      }
    }
    FN(scatter)(drhol, e0, nl, K, drho);
    FN(scatter)(dGVl, e0, nl, 25, dGV);
    FN(scatter)(dBTl, e0, nl, 25, dBT);
    FN(scatter)(dbl, e0, nl, 5, db);
    FN(scatter)(dGal, e0, nl, 36, dGa);
    FN(scatter)(dGol, e0, nl, 49, dGo);
    FN(scatter)(dgl, e0, nl, 7, dg);
  }
  free(buf);
  free(gbuf);
  return 0;
}

#undef FN
#undef CAT
#undef CAT_
#undef LANES
#undef A3
#undef A2
#undef PK
