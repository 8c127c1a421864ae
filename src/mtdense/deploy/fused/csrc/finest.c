/* The finest decoder level and the heads of a Light-Weight RefineNet multi-task network, fused.
 *
 * ONNX Runtime runs this level as some 170 operators, each a pass over a 1/4-resolution map.
 * Here every channel plane (~100 KB at a 400 x 1024 input) goes through the whole chain while it
 * sits in the core's own cache:
 *
 *   mtd_finest:  y = proj . f0 + upsample_bilinear(a8)      the level's input sum
 *                x = relu6(y); top = x; a = x
 *                per CRP stage: top = s * maxpool(top); a += top
 *                per head with several outputs: hin = relu6(d * a), in the heads' layout
 *                per head with one output:      acc += conv3x3(relu6(d * a))
 *   mtd_winograd: logits = conv3x3(hin) + bias    Winograd F(4x4, 3x3): 36 GEMMs on 4 x 4 tiles
 *   mtd_upsample: out = bilinear(logits), or bilinear(acc + bias)
 *   mtd_upsample_argmax: labels = argmax over classes of bilinear(logits), as uint8, without
 *                 writing the full-resolution logits (19 x 4 bytes a pixel) at all
 *
 * Bilinear resampling follows PyTorch's align_corners=False. The CRP max-pool (odd k, stride 1,
 * padding k / 2 that never wins) runs as a 1 x k then a k x 1 pass. Threads are pthreads
 * created per call, so nothing spins between calls. Every sum but the Winograd convolution's is
 * over the same terms as the network's, only added in another order; the Winograd transforms
 * add float rounding of about 1e-6 of the logits' size.
 *
 * mtdense.deploy.fused compiles this file at first use: cc -O3 -march=native -shared -fPIC -pthread.
 */
#include <math.h>
#include <stdint.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#define MAXT 64
#if defined(__GNUC__)
#define PREFETCH(p) __builtin_prefetch((p), 0, 2) /* for reading, into the L2 */
#else
#define PREFETCH(p) ((void)(p))
#endif
/* max without fmaxf's NaN rules, so the loops vectorize (maxps) */
#define MAXF(p, q) ((p) > (q) ? (p) : (q))

#define MINF(p, q) ((p) < (q) ? (p) : (q))
static inline float relu6f(float v) { return MINF(MAXF(v, 0.f), 6.f); }

/* -- threads ------------------------------------------------------------------------------ */
typedef void (*task_fn)(void *arg, int tid, int nt);
typedef struct { task_fn fn; void *arg; int tid, nt; } task_t;

static void *task_main(void *p) {
    task_t *t = (task_t *)p;
    t->fn(t->arg, t->tid, t->nt);
    return NULL;
}

static void run_parallel(task_fn fn, void *arg, int nt) {
    if (nt < 1) nt = 1;
    if (nt > MAXT) nt = MAXT;
    pthread_t th[MAXT];
    task_t tasks[MAXT];
    int started[MAXT] = {0};
    for (int i = 1; i < nt; i++) {
        tasks[i] = (task_t){fn, arg, i, nt};
        started[i] = pthread_create(&th[i], NULL, task_main, &tasks[i]) == 0;
    }
    fn(arg, 0, nt);
    for (int i = 1; i < nt; i++) {
        if (started[i]) pthread_join(th[i], NULL);
        else fn(arg, i, nt); /* could not start a thread: do its share here */
    }
}

/* out[p] = relu6(d * a[p]) */
static void relu6_scaled(const float *restrict a, float d, float *restrict out, size_t n) {
    size_t p = 0;
#if defined(__AVX2__) && defined(__FMA__)
    __m256 vd = _mm256_set1_ps(d), zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.f);
    for (; p + 8 <= n; p += 8)
        _mm256_storeu_ps(out + p, _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(vd, _mm256_loadu_ps(a + p)), zero), six));
#endif
    for (; p < n; p++) out[p] = relu6f(d * a[p]);
}

/* -- bilinear resampling (PyTorch, align_corners=False) ----------------------------------- */
typedef struct { int i0, i1; float l0, l1; } lerp_t;

static void lerp_table(int in, int out, lerp_t *t) {
    float scale = (float)in / (float)out;
    for (int o = 0; o < out; o++) {
        if (in == out) { t[o] = (lerp_t){o, o, 1.f, 0.f}; continue; }
        float src = scale * ((float)o + 0.5f) - 0.5f;
        if (src < 0.f) src = 0.f;
        int i0 = (int)floorf(src);
        if (i0 > in - 1) i0 = in - 1;
        float l1 = src - (float)i0;
        if (l1 > 1.f) l1 = 1.f;
        t[o] = (lerp_t){i0, i0 + (i0 < in - 1 ? 1 : 0), 1.f - l1, l1};
    }
}

/* d (ow) = the horizontal bilinear resampling of one input row s (iw) */
static void hlerp_row(const float *restrict s, int iw, float *restrict d, int ow, const lerp_t *tx) {
    {
        int f = iw > 2 && ow % iw == 0 ? ow / iw : 0;
        if (f == 2 || f == 4 || f == 8) {
            /* power-of-2 factor: every interior input column gives f outputs with the same
               weights (exact in float), so no index table is read in the loop */
            float wl[8], wr[8];
            int off[8];
            for (int ph = 0; ph < f; ph++) {
                const lerp_t *t = tx + f + ph; /* input column 1 is interior */
                wl[ph] = t->l0; wr[ph] = t->l1; off[ph] = t->i0 - 1;
            }
            for (int j = 0; j < f; j++) d[j] = tx[j].l0 * s[tx[j].i0] + tx[j].l1 * s[tx[j].i1];
            int i = 1;
#if defined(__AVX2__) && defined(__FMA__)
            /* 8 input columns at a time: the f phase vectors, interleaved into 8 f outputs */
            if (f == 2 && off[0] == -1 && off[1] == 0) {
                __m256 w0 = _mm256_set1_ps(wl[0]), w1 = _mm256_set1_ps(wr[0]), w2 = _mm256_set1_ps(wl[1]), w3 = _mm256_set1_ps(wr[1]);
                for (; i + 8 < iw; i += 8) {
                    __m256 sm = _mm256_loadu_ps(s + i - 1), s0 = _mm256_loadu_ps(s + i), sp = _mm256_loadu_ps(s + i + 1);
                    __m256 e = _mm256_fmadd_ps(w0, sm, _mm256_mul_ps(w1, s0)), o = _mm256_fmadd_ps(w2, s0, _mm256_mul_ps(w3, sp));
                    __m256 lo = _mm256_unpacklo_ps(e, o), hi = _mm256_unpackhi_ps(e, o);
                    _mm256_storeu_ps(d + 2 * i, _mm256_permute2f128_ps(lo, hi, 0x20));
                    _mm256_storeu_ps(d + 2 * i + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
                }
            } else if (f == 4 && off[0] == -1 && off[1] == -1 && off[2] == 0 && off[3] == 0) {
                __m256 a0 = _mm256_set1_ps(wl[0]), b0 = _mm256_set1_ps(wr[0]), a1 = _mm256_set1_ps(wl[1]), b1 = _mm256_set1_ps(wr[1]);
                __m256 a2 = _mm256_set1_ps(wl[2]), b2 = _mm256_set1_ps(wr[2]), a3 = _mm256_set1_ps(wl[3]), b3 = _mm256_set1_ps(wr[3]);
                for (; i + 8 < iw; i += 8) {
                    __m256 sm = _mm256_loadu_ps(s + i - 1), s0 = _mm256_loadu_ps(s + i), sp = _mm256_loadu_ps(s + i + 1);
                    __m256 p0 = _mm256_fmadd_ps(a0, sm, _mm256_mul_ps(b0, s0)), p1 = _mm256_fmadd_ps(a1, sm, _mm256_mul_ps(b1, s0));
                    __m256 p2 = _mm256_fmadd_ps(a2, s0, _mm256_mul_ps(b2, sp)), p3 = _mm256_fmadd_ps(a3, s0, _mm256_mul_ps(b3, sp));
                    __m256 t0 = _mm256_unpacklo_ps(p0, p1), t1 = _mm256_unpacklo_ps(p2, p3);
                    __m256 t2 = _mm256_unpackhi_ps(p0, p1), t3 = _mm256_unpackhi_ps(p2, p3);
                    __m256 u0 = _mm256_shuffle_ps(t0, t1, 0x44), u1 = _mm256_shuffle_ps(t0, t1, 0xEE);
                    __m256 u2 = _mm256_shuffle_ps(t2, t3, 0x44), u3 = _mm256_shuffle_ps(t2, t3, 0xEE);
                    _mm256_storeu_ps(d + 4 * i, _mm256_permute2f128_ps(u0, u1, 0x20));
                    _mm256_storeu_ps(d + 4 * i + 8, _mm256_permute2f128_ps(u2, u3, 0x20));
                    _mm256_storeu_ps(d + 4 * i + 16, _mm256_permute2f128_ps(u0, u1, 0x31));
                    _mm256_storeu_ps(d + 4 * i + 24, _mm256_permute2f128_ps(u2, u3, 0x31));
                }
            }
#endif
            for (; i < iw - 1; i++)
                for (int ph = 0; ph < f; ph++) d[f * i + ph] = wl[ph] * s[i + off[ph]] + wr[ph] * s[i + off[ph] + 1];
            for (int j = ow - f; j < ow; j++) d[j] = tx[j].l0 * s[tx[j].i0] + tx[j].l1 * s[tx[j].i1];
        } else {
            for (int j = 0; j < ow; j++) d[j] = tx[j].l0 * s[tx[j].i0] + tx[j].l1 * s[tx[j].i1];
        }
    }
}

/* dst (oh x ow) = bilinear(src (ih x iw)); tmp holds ih x ow floats. stream: dst is not read
 * again here, so its aligned rows are written past the caches (the caller issues the sfence). */
static void resize_plane(const float *restrict src, int ih, int iw, float *restrict dst, int oh, int ow,
                         const lerp_t *ty, const lerp_t *tx, float *restrict tmp, int stream) {
    for (int r = 0; r < ih; r++) hlerp_row(src + (size_t)r * iw, iw, tmp + (size_t)r * ow, ow, tx);
    for (int i = 0; i < oh; i++) {
        const float *restrict s0 = tmp + (size_t)ty[i].i0 * ow;
        const float *restrict s1 = tmp + (size_t)ty[i].i1 * ow;
        float l0 = ty[i].l0, l1 = ty[i].l1;
        float *restrict d = dst + (size_t)i * ow;
        int j = 0;
        (void)stream;
#if defined(__AVX2__) && defined(__FMA__)
        if (stream && ((uintptr_t)d & 31) == 0) {
            __m256 v0 = _mm256_set1_ps(l0), v1 = _mm256_set1_ps(l1);
            for (; j + 8 <= ow; j += 8)
                _mm256_stream_ps(d + j, _mm256_fmadd_ps(v0, _mm256_loadu_ps(s0 + j), _mm256_mul_ps(v1, _mm256_loadu_ps(s1 + j))));
        }
#endif
        for (; j < ow; j++) d[j] = l0 * s0[j] + l1 * s1[j];
    }
}

/* -- max-pooling ---------------------------------------------------------------------------- */
/* 1 x k max of each row (padding k / 2); rowbuf holds w + k - 1 floats. */
static void pool_rows(const float *restrict src, float *restrict dst, int h, int w, int k, float *restrict rowbuf) {
    int p = k / 2;
    for (int j = 0; j < p; j++) rowbuf[j] = rowbuf[w + p + j] = -INFINITY;
    for (int i = 0; i < h; i++) {
        const float *restrict sr = src + (size_t)i * w;
        float *restrict d = dst + (size_t)i * w;
        if (k == 5 && w >= 4) {
            /* the interior straight from the row; two columns at each border see fewer inputs */
            for (int j = 2; j < w - 2; j++) {
                float m = MAXF(MAXF(sr[j - 2], sr[j - 1]), MAXF(sr[j], sr[j + 1]));
                d[j] = MAXF(m, sr[j + 2]);
            }
            d[0] = MAXF(MAXF(sr[0], sr[1]), sr[2]);
            d[1] = MAXF(MAXF(sr[0], sr[1]), MAXF(sr[2], sr[3]));
            d[w - 2] = MAXF(MAXF(sr[w - 4], sr[w - 3]), MAXF(sr[w - 2], sr[w - 1]));
            d[w - 1] = MAXF(MAXF(sr[w - 3], sr[w - 2]), sr[w - 1]);
        } else {
            memcpy(rowbuf + p, sr, sizeof(float) * w);
            for (int j = 0; j < w; j++) d[j] = rowbuf[j];
            for (int t = 1; t < k; t++)
                for (int j = 0; j < w; j++) d[j] = MAXF(d[j], rowbuf[j + t]);
        }
    }
}

/* top = s * (k x 1 max of src, padding k / 2); a += top. Rows past the border are clamped:
 * a repeated row cannot change a maximum, which is what padding that never wins means. */
static void pool_cols_scale_add(const float *restrict src, float *restrict top, float *restrict a, int h, int w, int k, float s) {
    int p = k / 2;
    for (int i = 0; i < h; i++) {
        float *restrict t = top + (size_t)i * w;
        float *restrict acc = a + (size_t)i * w;
        if (k == 5) {
            const float *r[5];
            for (int d = 0; d < 5; d++) {
                int row = i - 2 + d;
                row = row < 0 ? 0 : (row > h - 1 ? h - 1 : row);
                r[d] = src + (size_t)row * w;
            }
            const float *restrict r0 = r[0], *restrict r1 = r[1], *restrict r2 = r[2], *restrict r3 = r[3], *restrict r4 = r[4];
            for (int j = 0; j < w; j++) {
                float m = MAXF(MAXF(r0[j], r1[j]), MAXF(r2[j], r3[j]));
                m = MAXF(m, r4[j]) * s;
                t[j] = m;
                acc[j] += m;
            }
            continue;
        }
        int r0 = i - p < 0 ? 0 : i - p, r1 = i + p > h - 1 ? h - 1 : i + p;
        const float *restrict s0 = src + (size_t)r0 * w;
        for (int j = 0; j < w; j++) t[j] = s0[j];
        for (int r = r0 + 1; r <= r1; r++) {
            const float *restrict sr = src + (size_t)r * w;
            for (int j = 0; j < w; j++) t[j] = MAXF(t[j], sr[j]);
        }
        for (int j = 0; j < w; j++) { t[j] *= s; acc[j] += t[j]; }
    }
}

/* acc (h x w) += 3x3 conv (padding 1) of one input plane with kernel k[9] (row-major). */
static void conv3x3_acc(const float *restrict src, float *restrict acc, int h, int w, const float *k) {
    for (int i = 0; i < h; i++) {
        float *restrict d = acc + (size_t)i * w;
        for (int di = -1; di <= 1; di++) {
            int r = i + di;
            if (r < 0 || r >= h) continue;
            const float *restrict s = src + (size_t)r * w;
            float k0 = k[(di + 1) * 3], k1 = k[(di + 1) * 3 + 1], k2 = k[(di + 1) * 3 + 2];
            if (w == 1) { d[0] += k1 * s[0]; continue; }
            d[0] += k1 * s[0] + k2 * s[1];
            for (int j = 1; j < w - 1; j++) d[j] += k0 * s[j - 1] + k1 * s[j] + k2 * s[j + 1];
            d[w - 1] += k0 * s[w - 2] + k1 * s[w - 1];
        }
    }
}

/* xs[b] += proj[b] . f0 for the nb (<= 8) channels of a block: one read of f0 per block. */
static void proj_block(const float *restrict f0, int cin, size_t plane, const float *restrict proj, int nb, float *restrict xs) {
    size_t p = 0;
#if defined(__AVX2__) && defined(__FMA__)
    if (nb == 8) {
        for (; p + 8 <= plane; p += 8) {
            __m256 acc0 = _mm256_loadu_ps(xs + 0 * plane + p), acc1 = _mm256_loadu_ps(xs + 1 * plane + p);
            __m256 acc2 = _mm256_loadu_ps(xs + 2 * plane + p), acc3 = _mm256_loadu_ps(xs + 3 * plane + p);
            __m256 acc4 = _mm256_loadu_ps(xs + 4 * plane + p), acc5 = _mm256_loadu_ps(xs + 5 * plane + p);
            __m256 acc6 = _mm256_loadu_ps(xs + 6 * plane + p), acc7 = _mm256_loadu_ps(xs + 7 * plane + p);
            for (int k = 0; k < cin; k++) {
                __m256 f = _mm256_loadu_ps(f0 + (size_t)k * plane + p);
                acc0 = _mm256_fmadd_ps(_mm256_broadcast_ss(proj + 0 * cin + k), f, acc0);
                acc1 = _mm256_fmadd_ps(_mm256_broadcast_ss(proj + 1 * cin + k), f, acc1);
                acc2 = _mm256_fmadd_ps(_mm256_broadcast_ss(proj + 2 * cin + k), f, acc2);
                acc3 = _mm256_fmadd_ps(_mm256_broadcast_ss(proj + 3 * cin + k), f, acc3);
                acc4 = _mm256_fmadd_ps(_mm256_broadcast_ss(proj + 4 * cin + k), f, acc4);
                acc5 = _mm256_fmadd_ps(_mm256_broadcast_ss(proj + 5 * cin + k), f, acc5);
                acc6 = _mm256_fmadd_ps(_mm256_broadcast_ss(proj + 6 * cin + k), f, acc6);
                acc7 = _mm256_fmadd_ps(_mm256_broadcast_ss(proj + 7 * cin + k), f, acc7);
            }
            _mm256_storeu_ps(xs + 0 * plane + p, acc0); _mm256_storeu_ps(xs + 1 * plane + p, acc1);
            _mm256_storeu_ps(xs + 2 * plane + p, acc2); _mm256_storeu_ps(xs + 3 * plane + p, acc3);
            _mm256_storeu_ps(xs + 4 * plane + p, acc4); _mm256_storeu_ps(xs + 5 * plane + p, acc5);
            _mm256_storeu_ps(xs + 6 * plane + p, acc6); _mm256_storeu_ps(xs + 7 * plane + p, acc7);
        }
    }
#endif
    /* the rest (or everything, without AVX2/FMA): 64-pixel chunks the compiler vectorizes */
    for (; p < plane; p += 64) {
        int n = plane - p < 64 ? (int)(plane - p) : 64;
        for (int b = 0; b < nb; b++) {
            float acc[64];
            float *restrict x = xs + b * plane + p;
            for (int j = 0; j < n; j++) acc[j] = x[j];
            for (int k = 0; k < cin; k++) {
                const float *restrict f = f0 + (size_t)k * plane + p;
                float wk = proj[(size_t)b * cin + k];
                for (int j = 0; j < n; j++) acc[j] += wk * f[j];
            }
            for (int j = 0; j < n; j++) x[j] = acc[j];
        }
    }
}

/* -- the heads' 3x3 convolutions: Winograd F(4x4, 3x3) ----------------------------------------
 * A 3x3 conv (padding 1) over c channels to m outputs, computed on 4 x 4 output tiles:
 *   Y = A^T [ sum_c U[c] (.) V[c] ] A,   U[c] = G g[c] G^T (6 x 6),   V[c] = B^T d[c] B
 * where d[c] is the tile's 6 x 6 input window. The sum over c is, for each of the 36 (.)-products
 * xi, a GEMM U_xi [m, c] . V_xi [c, tiles]: 2.25 multiplications per output instead of 9.
 *
 * The head's input (written by mtd_finest) is kept in a layout that makes the window columns of
 * neighbouring tiles contiguous, and a tile row's windows one sequential read: padded row by
 * padded row (image row + 1, zero rows around), channel by channel, the four column phases x % 4,
 * each a run of x / 4 with a zero before and zeros after (to whole blocks of NB tiles). */
#define NB 16 /* tiles per GEMM column block (two AVX2 vectors) */

typedef struct { int c, TY, LW, rows; } hlayout_t;

static hlayout_t head_layout(int c, int h, int w) {
    hlayout_t L;
    int tiles = (w + 3) / 4;
    L.c = c;
    L.TY = (h + 3) / 4;
    L.LW = (tiles + NB - 1) / NB * NB + 4; /* tiles rounded up to whole blocks, a zero before and
                                              after; 4 LW floats are whole 64-byte lines */
    L.rows = 4 * L.TY + 2;
    return L;
}

/* row rp (padded) of channel ch */
static inline size_t head_row(hlayout_t L, int rp, int ch) { return ((size_t)rp * L.c + ch) * 4 * L.LW; }

/* floats in the head layout of a c x h x w map */
size_t mtd_head_size(int c, int h, int w) {
    hlayout_t L = head_layout(c, h, w);
    return head_row(L, L.rows, 0);
}

/* channel ch of hin (the head layout) = relu6(d * a), a an h x w plane; its pads are zeroed.
 * Each padded row's four runs are built in stage (4 LW floats, 64-byte aligned) and then
 * streamed past the caches as whole lines: the Winograd pass reads them only after every
 * channel is done, so caching them would only evict the chain's planes (and read each line
 * before overwriting it). */
static void write_head_plane(const float *restrict a, float d, float *restrict hin, int ch, int h, int w, hlayout_t L,
                             float *restrict stage) {
    int LW = L.LW, quads = w / 4;
    size_t run = (size_t)4 * LW;
    float *restrict g0 = stage, *restrict g1 = g0 + LW, *restrict g2 = g1 + LW, *restrict g3 = g2 + LW;
    for (int rp = 0; rp < L.rows; rp++) {
        float *restrict dst = hin + head_row(L, rp, ch);
        int i = rp - 1;
        if (i < 0 || i >= h) {
            memset(stage, 0, sizeof(float) * run);
        } else {
            const float *restrict s = a + (size_t)i * w;
            for (int t = 0; t < quads; t++) {
                g0[t + 1] = relu6f(d * s[4 * t]);
                g1[t + 1] = relu6f(d * s[4 * t + 1]);
                g2[t + 1] = relu6f(d * s[4 * t + 2]);
                g3[t + 1] = relu6f(d * s[4 * t + 3]);
            }
            for (int k = 0; k < 4; k++) {
                float *restrict g = g0 + (size_t)k * LW;
                g[0] = 0.f;
                int t = quads;
                if (4 * t + k < w) { g[t + 1] = relu6f(d * s[4 * t + k]); t++; }
                for (; t + 1 < LW; t++) g[t + 1] = 0.f;
            }
        }
        size_t p = 0;
#if defined(__AVX2__) && defined(__FMA__)
        if (((uintptr_t)dst & 31) == 0)
            for (; p + 8 <= run; p += 8) _mm256_stream_ps(dst + p, _mm256_load_ps(stage + p));
#endif
        for (; p < run; p++) dst[p] = stage[p];
    }
}

/* -- the level ------------------------------------------------------------------------------ */
#define CBLOCK 8 /* channels whose input sums are formed together (one read of f0 per block) */

typedef struct {
    const float *f0, *a8, *proj, *crp;
    int cin, h8, w8, c, h, w, stages, pool;
    int ngemm, ndirect;
    const float *dgemm, *ddir, *kdir;
    float *const *hin;
    hlayout_t L;
    float *dir_parts;
    const lerp_t *ty, *tx;
    int failed;
} finest_t;

static void finest_task(void *arg, int tid, int nt) {
    finest_t *q = (finest_t *)arg;
    int h = q->h, w = q->w, c = q->c;
    size_t plane = (size_t)h * w;
    float *buf = malloc(sizeof(float) * ((CBLOCK + 3) * plane + (size_t)q->h8 * w + w + q->pool));
    float *stage = aligned_alloc(64, ((size_t)16 * q->L.LW + 63) / 64 * 64);
    if (!buf || !stage) { free(buf); free(stage); q->failed = 1; return; }
    float *xs = buf, *top = xs + CBLOCK * plane, *a = top + plane, *tmp = a + plane;
    float *rs = tmp + plane, *rowbuf = rs + (size_t)q->h8 * w;
    for (int c0 = tid * CBLOCK; c0 < c; c0 += nt * CBLOCK) {
        int nb = c - c0 < CBLOCK ? c - c0 : CBLOCK;
        /* input sums of the block: the upsampled coarser map plus the projection of f0 */
        for (int b = 0; b < nb; b++)
            resize_plane(q->a8 + (size_t)(c0 + b) * q->h8 * q->w8, q->h8, q->w8, xs + b * plane, h, w, q->ty, q->tx, rs, 0);
        proj_block(q->f0, q->cin, plane, q->proj + (size_t)c0 * q->cin, nb, xs);
        for (int b = 0; b < nb; b++) {
            int ch = c0 + b;
            const float *restrict x = xs + b * plane;
            relu6_scaled(x, 1.f, a, plane);
            /* stage input (x, then top) -> rows pooled into tmp -> columns pooled, scaled into
               top and summed into a */
            for (int s = 0; s < q->stages; s++) {
                pool_rows(s == 0 ? a : top, tmp, h, w, q->pool, rowbuf);
                pool_cols_scale_add(tmp, top, a, h, w, q->pool, q->crp[(size_t)s * c + ch]);
            }
            for (int g = 0; g < q->ngemm; g++)
                write_head_plane(a, q->dgemm[(size_t)g * c + ch], q->hin[g], ch, h, w, q->L, stage);
            for (int r = 0; r < q->ndirect; r++) {
                float d = q->ddir[(size_t)r * c + ch];
                relu6_scaled(a, d, tmp, plane);
                conv3x3_acc(tmp, q->dir_parts + ((size_t)tid * q->ndirect + r) * plane, h, w, q->kdir + ((size_t)r * c + ch) * 9);
            }
        }
    }
    free(buf);
    free(stage);
#if defined(__AVX2__) && defined(__FMA__)
    _mm_sfence(); /* the streamed stores are visible before the threads join */
#endif
}

/* One image.
 *   f0    [cin, h, w]        the level's encoder features
 *   a8    [c, h8, w8]        the coarser level's adapted output (resampled here to h x w)
 *   proj  [c, cin]           1x1 projection of f0
 *   crp   [stages, c]        the CRP's depthwise scales; pool: its max-pool size (odd)
 *   dgemm [ngemm, c]         depthwise scales of the heads with several outputs
 *   hin[g]                   out: relu6(dgemm[g] * crp_out) in the heads' layout (see
 *                            mtd_winograd), mtd_head_size(c, h, w) floats
 *   ddir  [ndirect, c]       depthwise scales of the heads with one output
 *   kdir  [ndirect, c, 9]    their 3x3 kernels
 *   dir   [ndirect, h, w]    out: their 3x3 convs over all channels (no bias)
 * Returns 0, or 1 when out of memory. */
int mtd_finest(const float *f0, int cin, const float *a8, int h8, int w8, int c, int h, int w,
               const float *proj, const float *crp, int stages, int pool,
               int ngemm, const float *dgemm, float *const *hin,
               int ndirect, const float *ddir, const float *kdir, float *dir, int threads) {
    size_t plane = (size_t)h * w;
    int nt = threads < 1 ? 1 : (threads > MAXT ? MAXT : threads);
    lerp_t *ty = malloc(sizeof(lerp_t) * h), *tx = malloc(sizeof(lerp_t) * w);
    float *parts = calloc((size_t)nt * (ndirect > 0 ? ndirect : 1) * plane, sizeof(float));
    if (!ty || !tx || !parts) { free(ty); free(tx); free(parts); return 1; }
    lerp_table(h8, h, ty);
    lerp_table(w8, w, tx);
    finest_t q = {f0, a8, proj, crp, cin, h8, w8, c, h, w, stages, pool, ngemm, ndirect, dgemm, ddir, kdir, hin, head_layout(c, h, w), parts, ty, tx, 0};
    run_parallel(finest_task, &q, nt);
    if (!q.failed) {
        for (int r = 0; r < ndirect; r++) {
            float *d = dir + (size_t)r * plane;
            memcpy(d, parts + (size_t)r * plane, sizeof(float) * plane);
            for (int t = 1; t < nt; t++)
                for (size_t p = 0; p < plane; p++) d[p] += parts[((size_t)t * ndirect + r) * plane + p];
        }
    }
    free(ty); free(tx); free(parts);
    return q.failed;
}

/* B^T x for the six rows x[0..5] of NB lanes: y[u] = sum_v BT[u][v] x[v] */
#define BT6(Y, X)                                                                                      \
    for (int l = 0; l < NB; l++) {                                                                     \
        float x0 = (X)[0][l], x1 = (X)[1][l], x2 = (X)[2][l], x3 = (X)[3][l], x4 = (X)[4][l], x5 = (X)[5][l]; \
        (Y)[0][l] = 4.f * x0 - 5.f * x2 + x4;                                                          \
        (Y)[1][l] = -4.f * (x1 + x2) + x3 + x4;                                                        \
        (Y)[2][l] = 4.f * (x1 - x2) - x3 + x4;                                                         \
        (Y)[3][l] = 2.f * (x3 - x1) - x2 + x4;                                                         \
        (Y)[4][l] = 2.f * (x1 - x3) - x2 + x4;                                                         \
        (Y)[5][l] = 4.f * x1 - 5.f * x3 + x5;                                                          \
    }

/* A^T x for six rows: y[j] = sum_v AT[j][v] x[v] */
#define AT6(Y, X)                                                                                      \
    for (int l = 0; l < NB; l++) {                                                                     \
        float x0 = (X)[0][l], x1 = (X)[1][l], x2 = (X)[2][l], x3 = (X)[3][l], x4 = (X)[4][l], x5 = (X)[5][l]; \
        float p12 = x1 + x2, m12 = x1 - x2, p34 = x3 + x4, m34 = x3 - x4;                              \
        (Y)[0][l] = x0 + p12 + p34;                                                                    \
        (Y)[1][l] = m12 + 2.f * m34;                                                                   \
        (Y)[2][l] = p12 + 4.f * p34;                                                                   \
        (Y)[3][l] = m12 + 8.f * m34 + x5;                                                              \
    }

/* M [mr, NB] (+)= A [mr, k] (packed as [k][mr]) . B [k, NB]; acc: add to M instead of setting it */
static inline __attribute__((always_inline)) void ukernel(int mr, const float *restrict ap, const float *restrict b, int k, float *restrict out, int acc) {
#if defined(__AVX2__) && defined(__FMA__)
    __m256 c0[6], c1[6];
    for (int r = 0; r < mr; r++) {
        c0[r] = acc ? _mm256_loadu_ps(out + r * NB) : _mm256_setzero_ps();
        c1[r] = acc ? _mm256_loadu_ps(out + r * NB + 8) : _mm256_setzero_ps();
    }
    for (int kk = 0; kk < k; kk++) {
        __m256 b0 = _mm256_load_ps(b + (size_t)kk * NB), b1 = _mm256_load_ps(b + (size_t)kk * NB + 8);
        for (int r = 0; r < mr; r++) {
            __m256 x = _mm256_broadcast_ss(ap + (size_t)kk * mr + r);
            c0[r] = _mm256_fmadd_ps(x, b0, c0[r]);
            c1[r] = _mm256_fmadd_ps(x, b1, c1[r]);
        }
    }
    for (int r = 0; r < mr; r++) { _mm256_storeu_ps(out + r * NB, c0[r]); _mm256_storeu_ps(out + r * NB + 8, c1[r]); }
#else
    float sum[6][NB];
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < NB; j++) sum[r][j] = acc ? out[r * NB + j] : 0.f;
    for (int kk = 0; kk < k; kk++)
        for (int r = 0; r < mr; r++)
            for (int j = 0; j < NB; j++) sum[r][j] += ap[(size_t)kk * mr + r] * b[(size_t)kk * NB + j];
    for (int r = 0; r < mr; r++) memcpy(out + r * NB, sum[r], sizeof(float) * NB);
#endif
}

static void ukernel_mr(int mr, const float *ap, const float *b, int k, float *out, int acc) {
    switch (mr) { /* constant row counts, so the accumulators stay in registers */
    case 1: ukernel(1, ap, b, k, out, acc); break;
    case 2: ukernel(2, ap, b, k, out, acc); break;
    case 3: ukernel(3, ap, b, k, out, acc); break;
    case 4: ukernel(4, ap, b, k, out, acc); break;
    case 5: ukernel(5, ap, b, k, out, acc); break;
    default: ukernel(6, ap, b, k, out, acc); break;
    }
}

#if defined(__AVX2__) && defined(__FMA__)
/* B^T x for six vectors */
static inline __attribute__((always_inline)) void bt6_avx(__m256 x0, __m256 x1, __m256 x2, __m256 x3, __m256 x4, __m256 x5, __m256 *y) {
    const __m256 four = _mm256_set1_ps(4.f), mfour = _mm256_set1_ps(-4.f), two = _mm256_set1_ps(2.f), mfive = _mm256_set1_ps(-5.f);
    y[0] = _mm256_fmadd_ps(four, x0, _mm256_fmadd_ps(mfive, x2, x4));
    y[1] = _mm256_fmadd_ps(mfour, _mm256_add_ps(x1, x2), _mm256_add_ps(x3, x4));
    y[2] = _mm256_fmadd_ps(four, _mm256_sub_ps(x1, x2), _mm256_sub_ps(x4, x3));
    y[3] = _mm256_fmadd_ps(two, _mm256_sub_ps(x3, x1), _mm256_sub_ps(x4, x2));
    y[4] = _mm256_fmadd_ps(two, _mm256_sub_ps(x1, x3), _mm256_sub_ps(x4, x2));
    y[5] = _mm256_fmadd_ps(four, x1, _mm256_fmadd_ps(mfive, x3, x5));
}
#endif

/* v [36, NB]: B^T d B for NB tiles of one channel; base points at the window's first padded row,
 * rs: floats between padded rows, t0: the first tile; stride: floats between the 36 outputs. */
static void input_transform(const float *base, size_t rs, int LW, int t0, float *v, size_t stride) {
#if defined(__AVX2__) && defined(__FMA__)
    for (int half = 0; half < NB; half += 8) {
        __m256 rt[6][6];
        for (int r = 0; r < 6; r++) {
            const float *g0 = base + r * rs + t0 + half, *g1 = g0 + LW, *g2 = g1 + LW, *g3 = g2 + LW;
            bt6_avx(_mm256_loadu_ps(g3), _mm256_loadu_ps(g0 + 1), _mm256_loadu_ps(g1 + 1), _mm256_loadu_ps(g2 + 1),
                    _mm256_loadu_ps(g3 + 1), _mm256_loadu_ps(g0 + 2), rt[r]);
        }
        for (int b = 0; b < 6; b++) {
            __m256 y[6];
            bt6_avx(rt[0][b], rt[1][b], rt[2][b], rt[3][b], rt[4][b], rt[5][b], y);
            for (int a = 0; a < 6; a++) _mm256_store_ps(v + (size_t)(a * 6 + b) * stride + half, y[a]);
        }
    }
#else
    float rt[6][6][NB];
    for (int r = 0; r < 6; r++) {
        const float *g0 = base + r * rs, *g1 = g0 + LW, *g2 = g1 + LW, *g3 = g2 + LW;
        const float *x[6] = {g3 + t0, g0 + t0 + 1, g1 + t0 + 1, g2 + t0 + 1, g3 + t0 + 1, g0 + t0 + 2};
        BT6(rt[r], x)
    }
    for (int b = 0; b < 6; b++) {
        float col[6][NB], y[6][NB];
        for (int r = 0; r < 6; r++) memcpy(col[r], rt[r][b], sizeof(col[r]));
        BT6(y, col)
        for (int a = 0; a < 6; a++) memcpy(v + (size_t)(a * 6 + b) * stride, y[a], sizeof(y[a]));
    }
#endif
}

#define KB 16 /* channels per block: for a row of 64 tiles (a 256-wide map) the block's transformed
                 inputs (157 KB) and the sums (184 KB at 19 outputs) stay in a 512 KB L2 */
#define VSTRIDE (KB * NB + 16) /* floats between the 36 products: not a multiple of 4 KB, so the
                                  transform's stores do not all fall in one L1 set */

typedef struct {
    const float *hin, *upack, *bias;
    float *out;
    int m, mr, panels, h, w;
    hlayout_t L;
    int failed;
} wino_t;

/* Tile row ty (its blocks of NB tiles): channel block by channel block, transform the inputs,
 * then add their products into the sums; then transform the sums into the outputs. While the
 * sums grow, tile row next_ty (if >= 0) is prefetched. */
static void wino_row(const wino_t *q, int ty, int next_ty, float *v, float *mm) {
    int c = q->L.c, m = q->m, mr = q->mr, mpad = q->mr * q->panels, LW = q->L.LW, h = q->h, w = q->w;
    int blocks = (LW - 2) / NB;
    size_t rs = head_row(q->L, 1, 0), vchunk = (size_t)36 * VSTRIDE, mchunk = (size_t)36 * mpad * NB;
    for (int k0 = 0; k0 < c; k0 += KB) {
        int kn = c - k0 < KB ? c - k0 : KB;
        for (int kk = 0; kk < kn; kk++) {
            const float *base = q->hin + head_row(q->L, 4 * ty, k0 + kk);
            for (int j = 0; j < blocks; j++) input_transform(base, rs, LW, j * NB, v + j * vchunk + (size_t)kk * NB, VSTRIDE);
        }
        /* while the GEMM computes, the next block's input rows are fetched: six runs of
           consecutive memory (the layout puts a padded row's channels one after the other) */
        int nty = k0 + KB < c ? ty : next_ty, nk0 = k0 + KB < c ? k0 + KB : 0, nkn = c - nk0 < KB ? c - nk0 : KB;
        size_t lines = nty < 0 ? 0 : ((size_t)nkn * 4 * LW + 15) / 16, sent = 0;
        size_t per_step = (6 * lines + 36 * (size_t)blocks - 1) / (36 * (size_t)blocks);
        const float *next = nty < 0 ? NULL : q->hin + head_row(q->L, 4 * nty, nk0);
        for (int j = 0; j < blocks; j++)
            for (int xi = 0; xi < 36; xi++) {
                for (size_t e = 0; e < per_step && sent < 6 * lines; e++, sent++)
                    PREFETCH(next + (sent / lines) * rs + (sent % lines) * 16);
                for (int p = 0; p < q->panels; p++)
                    ukernel_mr(mr, q->upack + (((size_t)xi * q->panels + p) * c + k0) * mr, v + j * vchunk + (size_t)xi * VSTRIDE, kn,
                               mm + j * mchunk + ((size_t)xi * mpad + (size_t)p * mr) * NB, k0 > 0);
            }
    }
    /* Y = A^T M A + bias, written where the tiles lie in the image */
    for (int j = 0; j < blocks; j++) {
        const float *mj = mm + j * mchunk;
        int t0 = j * NB, ncol = w - 4 * t0 < 4 * NB ? w - 4 * t0 : 4 * NB;
        if (ncol <= 0) continue;
        for (int o = 0; o < m; o++) {
            float z[6][4][NB], y[4][4][NB], rowbuf[4 * NB];
            for (int a = 0; a < 6; a++) {
                float x[6][NB];
                for (int b = 0; b < 6; b++) memcpy(x[b], mj + ((size_t)(a * 6 + b) * mpad + o) * NB, sizeof(x[b]));
                AT6(z[a], x)
            }
            for (int jj = 0; jj < 4; jj++) {
                float x[6][NB], yy[4][NB];
                for (int a = 0; a < 6; a++) memcpy(x[a], z[a][jj], sizeof(x[a]));
                AT6(yy, x)
                for (int i = 0; i < 4; i++) memcpy(y[i][jj], yy[i], sizeof(yy[i]));
            }
            float bo = q->bias ? q->bias[o] : 0.f;
            for (int i = 0; i < 4 && 4 * ty + i < h; i++) {
                for (int l = 0; l < NB; l++)
                    for (int jj = 0; jj < 4; jj++) rowbuf[4 * l + jj] = y[i][jj][l] + bo;
                memcpy(q->out + ((size_t)o * h + 4 * ty + i) * w + 4 * t0, rowbuf, sizeof(float) * ncol);
            }
        }
    }
}

static void wino_task(void *arg, int tid, int nt) {
    wino_t *q = (wino_t *)arg;
    int blocks = (q->L.LW - 2) / NB, mpad = q->mr * q->panels;
    size_t bytes = sizeof(float) * (size_t)blocks * 36 * (VSTRIDE + (size_t)mpad * NB);
    float *v = aligned_alloc(64, (bytes + 63) / 64 * 64); /* a whole number of alignments, as C11 asks */
    if (!v) { q->failed = 1; return; }
    float *mm = v + (size_t)blocks * 36 * VSTRIDE;
    for (int ty = tid; ty < q->L.TY; ty += nt) wino_row(q, ty, ty + nt < q->L.TY ? ty + nt : -1, v, mm);
    free(v);
}

/* out [m, h, w] = 3x3 conv (padding 1) of hin (c channels in the head layout) + bias.
 *   u [36, m, c]: U = G g G^T of every kernel, element xi = 6 a + b of the 6 x 6 product.
 * Returns 0, or 1 when out of memory. */
int mtd_winograd(const float *hin, int c, int h, int w, const float *u, int m, const float *bias, float *out, int threads) {
    hlayout_t L = head_layout(c, h, w);
    int panels = (m + 5) / 6, mr = (m + panels - 1) / panels;
    float *upack = calloc((size_t)36 * panels * mr * c, sizeof(float));
    if (!upack) return 1;
    for (int xi = 0; xi < 36; xi++)
        for (int o = 0; o < m; o++)
            for (int k = 0; k < c; k++)
                upack[(((size_t)xi * panels + o / mr) * c + k) * mr + o % mr] = u[((size_t)xi * m + o) * c + k];
    wino_t q = {hin, upack, bias, out, m, mr, panels, h, w, L, 0};
    run_parallel(wino_task, &q, threads < L.TY ? threads : L.TY);
    free(upack);
    return q.failed;
}

/* -- the outputs ------------------------------------------------------------------------------ */
typedef struct {
    const float *src, *bias;
    float *out;
    int n, h, w, oh, ow;
    const lerp_t *ty, *tx;
    int failed;
} upsample_t;

static void upsample_task(void *arg, int tid, int nt) {
    upsample_t *q = (upsample_t *)arg;
    size_t plane = (size_t)q->h * q->w;
    float *lo = malloc(sizeof(float) * (plane + (size_t)q->h * q->ow));
    if (!lo) { q->failed = 1; return; }
    for (int o = tid; o < q->n; o += nt) {
        const float *s = q->src + (size_t)o * plane;
        if (q->bias) {
            for (size_t p = 0; p < plane; p++) lo[p] = s[p] + q->bias[o];
            s = lo;
        }
        resize_plane(s, q->h, q->w, q->out + (size_t)o * q->oh * q->ow, q->oh, q->ow, q->ty, q->tx, lo + plane, 1);
    }
    free(lo);
#if defined(__AVX2__) && defined(__FMA__)
    _mm_sfence();
#endif
}

/* out [n, oh, ow] = bilinear(src [n, h, w] (+ bias[o] when bias is not NULL)). */
int mtd_upsample(const float *src, int n, int h, int w, const float *bias, float *out, int oh, int ow, int threads) {
    lerp_t *ty = malloc(sizeof(lerp_t) * oh), *tx = malloc(sizeof(lerp_t) * ow);
    if (!ty || !tx) { free(ty); free(tx); return 1; }
    lerp_table(h, oh, ty);
    lerp_table(w, ow, tx);
    upsample_t q = {src, bias, out, n, h, w, oh, ow, ty, tx, 0};
    run_parallel(upsample_task, &q, threads < n ? threads : n);
    free(ty); free(tx);
    return q.failed;
}

/* -- labels: argmax of the upsampled logits ------------------------------------------------ */
#define ARGMAX_ROWS 8 /* output rows per band: their running maximum stays in the L1/L2 cache */
typedef struct {
    const float *src;
    uint8_t *out;
    int n, h, w, oh, ow;
    const lerp_t *ty, *tx;
    int failed;
} argmax_t;

static void argmax_task(void *arg, int tid, int nt) {
    argmax_t *q = (argmax_t *)arg;
    int ow = q->ow, bands = (q->oh + ARGMAX_ROWS - 1) / ARGMAX_ROWS;
    int first = (int)((long)bands * tid / nt), last = (int)((long)bands * (tid + 1) / nt);
    /* hrows: the input rows one band reads, resampled horizontally; best / label: per output pixel */
    float *buf = malloc(sizeof(float) * (size_t)ow * ((size_t)q->h + 3 * ARGMAX_ROWS));
    if (!buf) { q->failed = 1; return; }
    float *best = buf, *val = best + (size_t)ow * ARGMAX_ROWS, *lab = val + (size_t)ow * ARGMAX_ROWS;
    float *hrows = lab + (size_t)ow * ARGMAX_ROWS;
    size_t plane = (size_t)q->h * q->w;
    for (int band = first; band < last; band++) {
        int r0 = band * ARGMAX_ROWS, r1 = r0 + ARGMAX_ROWS < q->oh ? r0 + ARGMAX_ROWS : q->oh;
        int i_lo = q->ty[r0].i0, i_hi = q->ty[r0].i1;
        for (int r = r0; r < r1; r++) {
            if (q->ty[r].i0 < i_lo) i_lo = q->ty[r].i0;
            if (q->ty[r].i1 > i_hi) i_hi = q->ty[r].i1;
        }
        for (int c = 0; c < q->n; c++) {
            const float *s = q->src + (size_t)c * plane;
            for (int i = i_lo; i <= i_hi; i++) hlerp_row(s + (size_t)i * q->w, q->w, hrows + (size_t)(i - i_lo) * ow, ow, q->tx);
            float fc = (float)c;
            for (int r = r0; r < r1; r++) {
                const float *restrict s0 = hrows + (size_t)(q->ty[r].i0 - i_lo) * ow;
                const float *restrict s1 = hrows + (size_t)(q->ty[r].i1 - i_lo) * ow;
                float l0 = q->ty[r].l0, l1 = q->ty[r].l1;
                float *restrict b = best + (size_t)(r - r0) * ow, *restrict v = val + (size_t)(r - r0) * ow;
                float *restrict lb = lab + (size_t)(r - r0) * ow;
                /* the value as mtd_upsample computes it, then a strict > so that ties keep the lower class */
                int j = 0;
#if defined(__AVX2__) && defined(__FMA__)
                __m256 v0 = _mm256_set1_ps(l0), v1 = _mm256_set1_ps(l1);
                for (; j + 8 <= ow; j += 8)
                    _mm256_storeu_ps(v + j, _mm256_fmadd_ps(v0, _mm256_loadu_ps(s0 + j), _mm256_mul_ps(v1, _mm256_loadu_ps(s1 + j))));
#endif
                for (; j < ow; j++) v[j] = l0 * s0[j] + l1 * s1[j];
                if (c == 0) {
                    memcpy(b, v, sizeof(float) * ow);
                    for (int j = 0; j < ow; j++) lb[j] = 0.f;
                } else {
                    for (int j = 0; j < ow; j++) {
                        int gt = v[j] > b[j];
                        b[j] = gt ? v[j] : b[j];
                        lb[j] = gt ? fc : lb[j];
                    }
                }
            }
        }
        for (int r = r0; r < r1; r++) {
            const float *restrict lb = lab + (size_t)(r - r0) * ow;
            uint8_t *restrict o = q->out + (size_t)r * ow;
            for (int j = 0; j < ow; j++) o[j] = (uint8_t)lb[j];
        }
    }
    free(buf);
}

/* out [oh, ow] (uint8) = argmax over n <= 256 classes of bilinear(src [n, h, w]); ties to the lower class. */
int mtd_upsample_argmax(const float *src, int n, int h, int w, uint8_t *out, int oh, int ow, int threads) {
    if (n < 1 || n > 256) return 2;
    lerp_t *ty = malloc(sizeof(lerp_t) * oh), *tx = malloc(sizeof(lerp_t) * ow);
    if (!ty || !tx) { free(ty); free(tx); return 1; }
    lerp_table(h, oh, ty);
    lerp_table(w, ow, tx);
    argmax_t q = {src, out, n, h, w, oh, ow, ty, tx, 0};
    int bands = (oh + ARGMAX_ROWS - 1) / ARGMAX_ROWS;
    run_parallel(argmax_task, &q, threads < bands ? threads : bands);
    free(ty); free(tx);
    return q.failed;
}
