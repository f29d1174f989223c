/* Self-attention of short bf16 sequences (a ViT's 50 tokens) on AMX tiles, one thread.
 *
 * Per image and head: Q K^T and P V on AMX (bf16 products, fp32 sums), the softmax in fp32 on AVX-512,
 * the probabilities rounded to bf16 before P V and the row sums divided out afterwards, as torch's CPU
 * flash kernel does. K is laid out once per head as bf16 pairs across key columns and V as pairs of key
 * rows (the layout AMX takes its B operand in); Q and P are read as they are.
 *
 * Input [images][tokens][3][heads][dim] (the fused q, k, v projection), output [images][tokens][heads][dim],
 * dim 32 or 64.
 */
#include <cpuid.h>
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ROWS 16 /* rows of a tile: queries, or key pairs */
#define KEY_STEP 32 /* keys per tile row of P (64 bytes of bf16) */
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

typedef struct {
    uint8_t palette;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* 1 when this CPU has AMX-BF16 with AVX-512 F, BW and BF16, and Linux grants this process the tiles. */
int capsearch_amx_ready(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    int amx = (d >> 22 & 1) && (d >> 24 & 1), avx512bw = (b >> 16 & 1) && (b >> 30 & 1);
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
    int avx512bf16 = a >> 5 & 1;
    if (!(amx && avx512bw && avx512bf16)) return 0;
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

static inline __m512 exp2_of(__m512 t) {
    /* 2^t as 2^n * 2^f, n the nearest integer, f in [-1/2, 1/2] by 2^f's degree-5 Taylor polynomial
     * (relative error under 3e-6, against bf16's 4e-3 for the probabilities it becomes). */
    __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(t, n);
    __m512 p = _mm512_set1_ps(1.3333558e-3f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504109e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022651e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

static inline __mmask16 lanes_below(int limit, int start) {
    int k = limit - start;
    return k >= 16 ? (__mmask16)0xFFFF : k <= 0 ? 0 : (__mmask16)((1u << k) - 1);
}

/* Scratch, padded to whole tiles. The keys and values past the tokens, and the queries past them in a last,
 * partial block, stay zero; the probabilities of those queries are stale but finite (and not written out). */
typedef struct {
    int padded; /* tokens rounded up to KEY_STEP */
    int dim; /* a head's width: 32 or 64 */
    uint16_t *q; /* [16][dim] bf16: the queries of a last, partial tile */
    uint32_t *kt; /* [dim / 2][padded] bf16 pairs of K's columns, per key */
    uint32_t *vp; /* [padded / 2][dim] bf16 pairs of consecutive keys, per column */
    float *s; /* [16][padded] one block of queries' scores */
    uint16_t *p; /* [16][padded] their bf16 probabilities, unnormalized */
    float *o; /* [16][dim] their P V */
    float *inv_sum; /* [16] */
} scratch;

static void *zeroed(size_t bytes) {
    size_t rounded = (bytes + 63) / 64 * 64;
    void *ptr = aligned_alloc(64, rounded);
    if (ptr) memset(ptr, 0, rounded);
    return ptr;
}

static inline void transpose_16x16(__m512i r[16]) {
    /* rows of 16 32-bit elements to columns: pairs, then quadruples within 128-bit lanes, then lanes. */
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int c = 0; c < 4; c++) { /* r[4g + c] holds rows 4g..4g+3 of column 4L + c in lane L */
        __m512i x0 = _mm512_shuffle_i32x4(r[c], r[4 + c], 0x44), x1 = _mm512_shuffle_i32x4(r[c], r[4 + c], 0xEE);
        __m512i y0 = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0x44);
        __m512i y1 = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0xEE);
        t[c] = _mm512_shuffle_i32x4(x0, y0, 0x88);
        t[4 + c] = _mm512_shuffle_i32x4(x0, y0, 0xDD);
        t[8 + c] = _mm512_shuffle_i32x4(x1, y1, 0x88);
        t[12 + c] = _mm512_shuffle_i32x4(x1, y1, 0xDD);
    }
    for (int i = 0; i < 16; i++) r[i] = t[i];
}

static void pack_head(const uint16_t *k, const uint16_t *v, int tokens, int stride, scratch *w) {
    /* K^T as pairs: kt[p][j] = (k[j][2p], k[j][2p + 1]), 16 keys by 16 pairs at a time. */
    for (int j0 = 0; j0 < tokens; j0 += 16) {
        for (int p0 = 0; p0 < w->dim / 2; p0 += 16) {
            __m512i r[16];
            for (int j = 0; j < 16; j++)
                r[j] = j0 + j < tokens ? _mm512_loadu_si512(k + (size_t)(j0 + j) * stride + 2 * p0)
                                       : _mm512_setzero_si512();
            transpose_16x16(r);
            for (int p = 0; p < 16; p++) _mm512_storeu_si512(w->kt + (p0 + p) * w->padded + j0, r[p]);
        }
    }
    /* V as pairs of keys: vp[r][c] = (v[2r][c], v[2r + 1][c]). */
    __m512i low = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7, 38, 6, 37, 5,
                                   36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
    __m512i high = _mm512_add_epi16(low, _mm512_set1_epi16(16));
    for (int r = 0; r < (tokens + 1) / 2; r++) {
        for (int half = 0; half < w->dim / 32; half++) {
            const uint16_t *first = v + (size_t)(2 * r) * stride + half * 32;
            __m512i a = _mm512_loadu_si512(first);
            __m512i b = 2 * r + 1 < tokens ? _mm512_loadu_si512(first + stride) : _mm512_setzero_si512();
            uint32_t *dst = w->vp + r * w->dim + half * 32;
            _mm512_storeu_si512(dst, _mm512_permutex2var_epi16(a, low, b));
            _mm512_storeu_si512(dst + 16, _mm512_permutex2var_epi16(a, high, b));
        }
    }
}

static void scores(const uint16_t *a, int lda, int tokens, scratch *w) {
    /* One block of 16 queries against every key: s[r][j], r < 16. */
    const int blocks = (tokens + ROWS - 1) / ROWS, ld = w->padded * 4, wide = w->dim == 64;
    _tile_loadd(2, a, lda);
    if (wide) _tile_loadd(3, a + 32, lda);
    for (int cb = 0; cb < blocks; cb++) {
        const uint32_t *b = w->kt + cb * 16;
        _tile_loadd(4, b, ld);
        _tile_zero(0);
        _tile_dpbf16ps(0, 2, 4);
        if (wide) {
            _tile_loadd(5, b + ROWS * w->padded, ld);
            _tile_dpbf16ps(0, 3, 5);
        }
        _tile_stored(0, w->s + cb * 16, ld);
    }
}

static void softmax_rows(int rows, int tokens, float scale, scratch *w) {
    for (int i = 0; i < rows; i++) {
        const float *s = w->s + i * w->padded;
        __m512 top = _mm512_set1_ps(-__builtin_inff());
        for (int j = 0; j < tokens; j += 16)
            top = _mm512_max_ps(top, _mm512_mask_loadu_ps(top, lanes_below(tokens, j), s + j));
        /* e^(scale (s - max)) = 2^(s c - max c), c = scale log2(e) */
        const __m512 c = _mm512_set1_ps(scale * 1.44269504f);
        __m512 shift = _mm512_mul_ps(_mm512_set1_ps(_mm512_reduce_max_ps(top)), c), sum = _mm512_setzero_ps();
        for (int j = 0; j < w->padded; j += 16) {
            __mmask16 valid = lanes_below(tokens, j);
            __m512 t = _mm512_fmsub_ps(_mm512_maskz_loadu_ps(valid, s + j), c, shift);
            __m512 e = _mm512_maskz_mov_ps(valid, exp2_of(t));
            sum = _mm512_add_ps(sum, e);
            _mm256_storeu_si256((__m256i *)(w->p + i * w->padded + j), (__m256i)_mm512_cvtneps_pbh(e));
        }
        w->inv_sum[i] = 1.0f / _mm512_reduce_add_ps(sum);
    }
}

static void weighted_values(int rows, uint16_t *out, int out_stride, scratch *w) {
    /* The block's P V, divided by its rows' sums: rows of out, out_stride bf16 apart. */
    const int ld = 4 * w->dim, wide = w->dim == 64;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(4);
    _tile_zero(5);
    for (int kk = 0; kk < w->padded / KEY_STEP; kk++) {
        const uint32_t *b = w->vp + kk * ROWS * w->dim;
        _tile_loadd(2, w->p + kk * KEY_STEP, 2 * w->padded);
        _tile_loadd(3, b, ld);
        _tile_dpbf16ps(0, 2, 3);
        _tile_loadd(6, b + 16, ld);
        _tile_dpbf16ps(1, 2, 6);
        if (wide) {
            _tile_loadd(7, b + 32, ld);
            _tile_dpbf16ps(4, 2, 7);
            _tile_loadd(3, b + 48, ld);
            _tile_dpbf16ps(5, 2, 3);
        }
    }
    _tile_stored(0, w->o, ld);
    _tile_stored(1, w->o + 16, ld);
    if (wide) {
        _tile_stored(4, w->o + 32, ld);
        _tile_stored(5, w->o + 48, ld);
    }
    for (int r = 0; r < rows; r++) {
        __m512 inv = _mm512_set1_ps(w->inv_sum[r]);
        for (int c = 0; c < w->dim; c += 16) {
            __m512 x = _mm512_mul_ps(_mm512_loadu_ps(w->o + r * w->dim + c), inv);
            _mm256_storeu_si256((__m256i *)(out + (size_t)r * out_stride + c), (__m256i)_mm512_cvtneps_pbh(x));
        }
    }
}

static void attend_head(const uint16_t *q, const uint16_t *k, const uint16_t *v, uint16_t *out, int tokens,
                        int heads, float scale, scratch *w) {
    /* Block by block of 16 queries, whole blocks read in place, the last, partial one from a zero-padded
     * copy; the scores and probabilities of one block at a time. */
    const int stride = 3 * heads * w->dim, whole = tokens / ROWS;
    pack_head(k, v, tokens, stride, w);
    for (int i = whole * ROWS; i < tokens; i++)
        memcpy(w->q + (i - whole * ROWS) * w->dim, q + (size_t)i * stride, 2 * w->dim);
    for (int rb = 0; rb * ROWS < tokens; rb++) {
        const int rows = tokens - rb * ROWS < ROWS ? tokens - rb * ROWS : ROWS;
        if (rb < whole)
            scores(q + (size_t)rb * ROWS * stride, 2 * stride, tokens, w);
        else
            scores(w->q, 2 * w->dim, tokens, w);
        softmax_rows(rows, tokens, scale, w);
        weighted_values(rows, out + (size_t)rb * ROWS * heads * w->dim, heads * w->dim, w);
    }
}

/* Attention over each image's tokens (heads of dim 32 or 64: one or two tile rows); 0 on success, -1 when
 * scratch cannot be allocated, -2 for another dim. Call capsearch_amx_ready first, once per process. */
int capsearch_attention(const uint16_t *qkv, uint16_t *out, int images, int tokens, int heads, int dim,
                        float scale) {
    if (dim != 32 && dim != 64) return -2;
    scratch w;
    w.padded = (tokens + KEY_STEP - 1) / KEY_STEP * KEY_STEP;
    w.dim = dim;
    size_t n = (size_t)w.padded;
    w.q = zeroed(ROWS * dim * 2);
    w.kt = zeroed(dim / 2 * n * 4);
    w.vp = zeroed(n / 2 * dim * 4);
    w.s = zeroed(ROWS * n * 4);
    w.p = zeroed(ROWS * n * 2);
    w.o = zeroed(ROWS * dim * 4);
    w.inv_sum = zeroed(ROWS * 4);
    int status = -1;
    if (w.q && w.kt && w.vp && w.s && w.p && w.o && w.inv_sum) {
        tile_config config = {.palette = 1};
        for (int t = 0; t < 8; t++) {
            config.rows[t] = ROWS;
            config.colsb[t] = 64;
        }
        _tile_loadconfig(&config);
        const int stride = 3 * heads * dim; /* bf16 between consecutive tokens */
        for (int image = 0; image < images; image++) {
            const uint16_t *in = qkv + (size_t)image * tokens * stride;
            uint16_t *dst = out + (size_t)image * tokens * heads * dim;
            /* The next image's q, k and v into L2, a share per head: its rows lie a page apart, too far
             * for the hardware to prefetch them (7-10% of the kernel's time on the AMX Xeon). */
            const char *next = (const char *)(in + (size_t)tokens * stride);
            const size_t share = (size_t)tokens * stride * 2 / heads;
            for (int head = 0; head < heads; head++) {
                for (size_t at = head * share; image + 1 < images && at < (head + 1) * share; at += 64)
                    _mm_prefetch(next + at, _MM_HINT_T1);
                const uint16_t *q = in + head * dim, *k = q + heads * dim, *v = k + heads * dim;
                attend_head(q, k, v, dst + head * dim, tokens, heads, scale, &w);
            }
        }
        _tile_release();
        status = 0;
    }
    free(w.q);
    free(w.kt);
    free(w.vp);
    free(w.s);
    free(w.p);
    free(w.o);
    free(w.inv_sum);
    return status;
}
