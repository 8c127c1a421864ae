/* The finest decoder level and the heads of a Light-Weight RefineNet multi-task network, fused.
 *
 * ONNX Runtime runs this level as some 170 operators, each a pass over a 1/4-resolution map.
 * Here every channel plane (~100 KB at a 400 x 1024 input) goes through the whole chain while it
 * sits in the core's own cache:
 *
 *   mtd_finest:  y = proj . f0 + upsample_bilinear(a8)      the level's input sum
 *                x = relu6(y); top = x; a = x
 *                per CRP stage: top = s * maxpool(top); a += top
 *                per head with several outputs: relu6(d * a), packed for mtd_gemm
 *                per head with one output:      acc += conv3x3(relu6(d * a))
 *   mtd_gemm:    taps = A . packed    a head's 3x3 conv as a 1x1 conv to 9 tap maps per output
 *   mtd_gather_upsample: out[o] = bilinear(sum_t shift_t(taps[9 o + t]) + bias[o])
 *   mtd_upsample_bias:   out = bilinear(acc + bias)
 *
 * Bilinear resampling follows PyTorch's align_corners=False. The CRP max-pool (odd k, stride 1,
 * padding k / 2 that never wins) runs as a 1 x k then a k x 1 pass. Threads are pthreads
 * created per call, so nothing spins between calls. Every sum is over the same terms as the
 * network's; only the order of the additions differs.
 *
 * mtdense.fused compiles this file at first use: cc -O3 -march=native -shared -fPIC -pthread.
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
/* max without fmaxf's NaN rules, so the loops vectorize (maxps) */
#define MAXF(p, q) ((p) > (q) ? (p) : (q))
#define STRIP 16 /* pixels per packed column strip of the GEMM's right-hand side */

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

/* dst (oh x ow) = bilinear(src (ih x iw)) [+ bias]; tmp holds ih x ow floats. */
static void resize_plane(const float *restrict src, int ih, int iw, float *restrict dst, int oh, int ow,
                         const lerp_t *ty, const lerp_t *tx, float *restrict tmp) {
    for (int r = 0; r < ih; r++) {
        const float *restrict s = src + (size_t)r * iw;
        float *restrict d = tmp + (size_t)r * ow;
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
    for (int i = 0; i < oh; i++) {
        const float *restrict s0 = tmp + (size_t)ty[i].i0 * ow;
        const float *restrict s1 = tmp + (size_t)ty[i].i1 * ow;
        float l0 = ty[i].l0, l1 = ty[i].l1;
        float *restrict d = dst + (size_t)i * ow;
        for (int j = 0; j < ow; j++) d[j] = l0 * s0[j] + l1 * s1[j];
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

/* -- the level ------------------------------------------------------------------------------ */
#define CBLOCK 8 /* channels whose input sums are formed together (one read of f0 per block) */

typedef struct {
    const float *f0, *a8, *proj, *crp;
    int cin, h8, w8, c, h, w, stages, pool;
    int ngemm, ndirect;
    const float *dgemm, *ddir, *kdir;
    float *const *packed;
    float *dir_parts;
    const lerp_t *ty, *tx;
    int failed;
} finest_t;

static void finest_task(void *arg, int tid, int nt) {
    finest_t *q = (finest_t *)arg;
    int h = q->h, w = q->w, c = q->c;
    size_t plane = (size_t)h * w, strips = (plane + STRIP - 1) / STRIP;
    float *buf = malloc(sizeof(float) * ((CBLOCK + 3) * plane + (size_t)q->h8 * w + w + q->pool));
    if (!buf) { q->failed = 1; return; }
    float *xs = buf, *top = xs + CBLOCK * plane, *a = top + plane, *tmp = a + plane;
    float *rs = tmp + plane, *rowbuf = rs + (size_t)q->h8 * w;
    for (int c0 = tid * CBLOCK; c0 < c; c0 += nt * CBLOCK) {
        int nb = c - c0 < CBLOCK ? c - c0 : CBLOCK;
        /* input sums of the block: the upsampled coarser map plus the projection of f0 */
        for (int b = 0; b < nb; b++)
            resize_plane(q->a8 + (size_t)(c0 + b) * q->h8 * q->w8, q->h8, q->w8, xs + b * plane, h, w, q->ty, q->tx, rs);
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
            for (int g = 0; g < q->ngemm; g++) {
                /* packed: strip s holds pixels 16 s .. 16 s + 15 of every channel */
                float d = q->dgemm[(size_t)g * c + ch];
                float *restrict hs = q->packed[g] + (size_t)ch * STRIP;
                for (size_t sidx = 0; sidx < strips; sidx++) {
                    float *restrict dst = hs + sidx * (size_t)c * STRIP;
                    size_t p0 = sidx * STRIP;
                    if (p0 + STRIP <= plane) {
#if defined(__AVX2__) && defined(__FMA__)
                        if (((uintptr_t)dst & 31) == 0) {
                            /* written once, read by the GEMM after every channel: stream past the caches
                               (no read-for-ownership of 26 MB at 400 x 1024) */
                            __m256 vd = _mm256_set1_ps(d), zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.f);
                            _mm256_stream_ps(dst, _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(vd, _mm256_loadu_ps(a + p0)), zero), six));
                            _mm256_stream_ps(dst + 8, _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(vd, _mm256_loadu_ps(a + p0 + 8)), zero), six));
                            continue;
                        }
#endif
                        relu6_scaled(a + p0, d, dst, STRIP);
                    } else {
                        for (int j = 0; j < STRIP; j++) dst[j] = p0 + j < plane ? relu6f(d * a[p0 + j]) : 0.f;
                    }
                }
            }
            for (int r = 0; r < q->ndirect; r++) {
                float d = q->ddir[(size_t)r * c + ch];
                relu6_scaled(a, d, tmp, plane);
                conv3x3_acc(tmp, q->dir_parts + ((size_t)tid * q->ndirect + r) * plane, h, w, q->kdir + ((size_t)r * c + ch) * 9);
            }
        }
    }
    free(buf);
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
 *   packed[g]                out: relu6(dgemm[g] * crp_out) as [ceil(h w / 16), c, 16]
 *   ddir  [ndirect, c]       depthwise scales of the heads with one output
 *   kdir  [ndirect, c, 9]    their 3x3 kernels
 *   dir   [ndirect, h, w]    out: their 3x3 convs over all channels (no bias)
 * Returns 0, or 1 when out of memory. */
int mtd_finest(const float *f0, int cin, const float *a8, int h8, int w8, int c, int h, int w,
               const float *proj, const float *crp, int stages, int pool,
               int ngemm, const float *dgemm, float *const *packed,
               int ndirect, const float *ddir, const float *kdir, float *dir, int threads) {
    size_t plane = (size_t)h * w;
    int nt = threads < 1 ? 1 : (threads > MAXT ? MAXT : threads);
    lerp_t *ty = malloc(sizeof(lerp_t) * h), *tx = malloc(sizeof(lerp_t) * w);
    float *parts = calloc((size_t)nt * (ndirect > 0 ? ndirect : 1) * plane, sizeof(float));
    if (!ty || !tx || !parts) { free(ty); free(tx); free(parts); return 1; }
    lerp_table(h8, h, ty);
    lerp_table(w8, w, tx);
    finest_t q = {f0, a8, proj, crp, cin, h8, w8, c, h, w, stages, pool, ngemm, ndirect, dgemm, ddir, kdir, packed, parts, ty, tx, 0};
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

/* -- GEMM: out [m, n] = A [m, k] . B, B packed as [ceil(n / 16), k, 16] ---------------------- */
#define MR 6

typedef struct {
    const float *apack, *b;
    float *out;
    int m, k, n, mtiles;
} gemm_t;

static void gemm_strip(const gemm_t *g, size_t s) {
    const float *bs = g->b + s * (size_t)g->k * STRIP;
    size_t n0 = s * STRIP;
    int cols = (size_t)g->n - n0 < STRIP ? (int)((size_t)g->n - n0) : STRIP;
    for (int mt = 0; mt < g->mtiles; mt++) {
        const float *ap = g->apack + (size_t)mt * g->k * MR;
        float acc[MR][STRIP];
#if defined(__AVX2__) && defined(__FMA__)
        __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps(), c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
        __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps(), c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
        __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps(), c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
        for (int kk = 0; kk < g->k; kk++) {
            __m256 b0 = _mm256_loadu_ps(bs + (size_t)kk * STRIP), b1 = _mm256_loadu_ps(bs + (size_t)kk * STRIP + 8);
            const float *av = ap + (size_t)kk * MR;
            __m256 x;
            x = _mm256_broadcast_ss(av + 0); c00 = _mm256_fmadd_ps(x, b0, c00); c01 = _mm256_fmadd_ps(x, b1, c01);
            x = _mm256_broadcast_ss(av + 1); c10 = _mm256_fmadd_ps(x, b0, c10); c11 = _mm256_fmadd_ps(x, b1, c11);
            x = _mm256_broadcast_ss(av + 2); c20 = _mm256_fmadd_ps(x, b0, c20); c21 = _mm256_fmadd_ps(x, b1, c21);
            x = _mm256_broadcast_ss(av + 3); c30 = _mm256_fmadd_ps(x, b0, c30); c31 = _mm256_fmadd_ps(x, b1, c31);
            x = _mm256_broadcast_ss(av + 4); c40 = _mm256_fmadd_ps(x, b0, c40); c41 = _mm256_fmadd_ps(x, b1, c41);
            x = _mm256_broadcast_ss(av + 5); c50 = _mm256_fmadd_ps(x, b0, c50); c51 = _mm256_fmadd_ps(x, b1, c51);
        }
        _mm256_storeu_ps(acc[0], c00); _mm256_storeu_ps(acc[0] + 8, c01);
        _mm256_storeu_ps(acc[1], c10); _mm256_storeu_ps(acc[1] + 8, c11);
        _mm256_storeu_ps(acc[2], c20); _mm256_storeu_ps(acc[2] + 8, c21);
        _mm256_storeu_ps(acc[3], c30); _mm256_storeu_ps(acc[3] + 8, c31);
        _mm256_storeu_ps(acc[4], c40); _mm256_storeu_ps(acc[4] + 8, c41);
        _mm256_storeu_ps(acc[5], c50); _mm256_storeu_ps(acc[5] + 8, c51);
#else
        for (int r = 0; r < MR; r++)
            for (int j = 0; j < STRIP; j++) acc[r][j] = 0.f;
        for (int kk = 0; kk < g->k; kk++) {
            const float *bv = bs + (size_t)kk * STRIP, *av = ap + (size_t)kk * MR;
            for (int r = 0; r < MR; r++)
                for (int j = 0; j < STRIP; j++) acc[r][j] += av[r] * bv[j];
        }
#endif
        for (int r = 0; r < MR; r++) {
            int row = mt * MR + r;
            if (row >= g->m) break;
            memcpy(g->out + (size_t)row * g->n + n0, acc[r], sizeof(float) * cols);
        }
    }
}

static void gemm_task(void *arg, int tid, int nt) {
    gemm_t *g = (gemm_t *)arg;
    size_t strips = ((size_t)g->n + STRIP - 1) / STRIP;
    size_t lo = strips * tid / nt, hi = strips * (tid + 1) / nt;
    for (size_t s = lo; s < hi; s++) gemm_strip(g, s);
}

int mtd_gemm(const float *a, int m, int k, const float *bpacked, int n, float *out, int threads) {
    int mtiles = (m + MR - 1) / MR;
    float *apack = calloc((size_t)mtiles * MR * k, sizeof(float));
    if (!apack) return 1;
    for (int r = 0; r < m; r++)
        for (int kk = 0; kk < k; kk++) apack[((size_t)(r / MR) * k + kk) * MR + r % MR] = a[(size_t)r * k + kk];
    gemm_t g = {apack, bpacked, out, m, k, n, mtiles};
    run_parallel(gemm_task, &g, threads);
    free(apack);
    return 0;
}

/* -- the outputs ------------------------------------------------------------------------------ */
typedef struct {
    const float *taps, *bias;
    float *out;
    int classes, h, w, oh, ow;
    const lerp_t *ty, *tx;
    int failed;
} gather_t;

static void gather_task(void *arg, int tid, int nt) {
    gather_t *q = (gather_t *)arg;
    int h = q->h, w = q->w;
    size_t plane = (size_t)h * w;
    float *lo = malloc(sizeof(float) * (plane + (size_t)h * q->ow));
    if (!lo) { q->failed = 1; return; }
    float *rs = lo + plane;
    for (int o = tid; o < q->classes; o += nt) {
        float b = q->bias ? q->bias[o] : 0.f;
        for (size_t p = 0; p < plane; p++) lo[p] = b;
        for (int t = 0; t < 9; t++) {
            int di = t / 3 - 1, dj = t % 3 - 1;
            const float *src = q->taps + ((size_t)o * 9 + t) * plane;
            for (int i = 0; i < h; i++) {
                int r = i + di;
                if (r < 0 || r >= h) continue;
                const float *restrict s = src + (size_t)r * w;
                float *restrict d = lo + (size_t)i * w;
                int j0 = dj < 0 ? 1 : 0, j1 = dj > 0 ? w - 1 : w;
                for (int j = j0; j < j1; j++) d[j] += s[j + dj];
            }
        }
        resize_plane(lo, h, w, q->out + (size_t)o * q->oh * q->ow, q->oh, q->ow, q->ty, q->tx, rs);
    }
    free(lo);
}

/* taps [classes * 9, h, w] (tap t of class o at row 9 o + t, row-major in the 3x3 window)
 * -> out [classes, oh, ow] = bilinear(sum_t shift_t(taps[9 o + t]) + bias[o]). */
int mtd_gather_upsample(const float *taps, int classes, int h, int w, const float *bias,
                        float *out, int oh, int ow, int threads) {
    lerp_t *ty = malloc(sizeof(lerp_t) * oh), *tx = malloc(sizeof(lerp_t) * ow);
    if (!ty || !tx) { free(ty); free(tx); return 1; }
    lerp_table(h, oh, ty);
    lerp_table(w, ow, tx);
    gather_t q = {taps, bias, out, classes, h, w, oh, ow, ty, tx, 0};
    run_parallel(gather_task, &q, threads < classes ? threads : classes);
    free(ty); free(tx);
    return q.failed;
}

/* out (oh x ow) = bilinear(src (h x w) + bias). */
int mtd_upsample_bias(const float *src, int h, int w, float bias, float *out, int oh, int ow) {
    lerp_t *ty = malloc(sizeof(lerp_t) * oh), *tx = malloc(sizeof(lerp_t) * ow);
    float *lo = malloc(sizeof(float) * ((size_t)h * w + (size_t)h * ow));
    if (!ty || !tx || !lo) { free(ty); free(tx); free(lo); return 1; }
    lerp_table(h, oh, ty);
    lerp_table(w, ow, tx);
    for (size_t p = 0; p < (size_t)h * w; p++) lo[p] = src[p] + bias;
    resize_plane(lo, h, w, out, oh, ow, ty, tx, lo + (size_t)h * w);
    free(ty); free(tx); free(lo);
    return 0;
}
