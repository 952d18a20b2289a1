/*
 * bench_common.h - shared helpers for the AethAlloc benchmark programs.
 *
 * Header-only. Every program in benches/ is one C file compiled with
 *     cc -O2 -pthread -o NAME benches/NAME.c -lm
 *
 * Contract shared by all programs (see benches/README.md):
 *   - arguments are key=value pairs overriding numeric defaults; quick=1
 *     shrinks the defaults; an unknown key or a bad value exits 2 with one
 *     line on stderr;
 *   - a verification failure prints "FAIL: ..." on stderr and exits 1;
 *   - on success exactly one JSON line is printed on stdout:
 *     {"bench":"NAME","params":{...},"metrics":{...}}
 *
 * The instrument itself keeps out of the allocator under test where it can:
 * latency sample arrays and other bookkeeping of unbounded size are mmap'd
 * (bench_map), and /proc is read with open/read into stack buffers, so that
 * reading RSS never calls malloc.
 */
#ifndef AETH_BENCH_COMMON_H
#define AETH_BENCH_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define BENCH_HAVE_TSC 1
#else
#define BENCH_HAVE_TSC 0
#endif

#define BENCH_UNUSED __attribute__((unused))
#define BENCH_NOINLINE __attribute__((noinline))
#define BENCH_LIKELY(x) __builtin_expect(!!(x), 1)
#define BENCH_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ------------------------------------------------------------------------ */
/* Failure and usage errors                                                 */
/* ------------------------------------------------------------------------ */

static const char *bench_name_ = "bench";

/* Verification failure: "FAIL: ..." on stderr, exit 1. */
static BENCH_UNUSED __attribute__((noreturn, format(printf, 1, 2)))
void bench_fail(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "FAIL: %s: %s\n", bench_name_, buf);
    fflush(stderr);
    _exit(1);
}

/* Bad command line: one line on stderr, exit 2. */
static BENCH_UNUSED __attribute__((noreturn, format(printf, 1, 2)))
void bench_usage(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: %s\n", bench_name_, buf);
    fflush(stderr);
    exit(2);
}

/* An allocator returning NULL is a failure of the run. */
#define BENCH_CHECK_ALLOC(p, sz)                                              \
    do {                                                                      \
        if (BENCH_UNLIKELY((p) == NULL))                                      \
            bench_fail("allocation of %zu bytes returned NULL (line %d)",     \
                       (size_t)(sz), __LINE__);                               \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Parameters                                                               */
/* ------------------------------------------------------------------------ */

typedef struct {
    const char *name;
    double def;       /* full-run default */
    double quick;     /* default under quick=1 */
    double min, max;  /* accepted range (inclusive) */
    int is_int;       /* value must be integral */
    /* filled in by bench_parse */
    double val;
    int given;
} bench_param;

#define BP_INT(n, d, q, lo, hi) { (n), (d), (q), (lo), (hi), 1, 0, 0 }
#define BP_REAL(n, d, q, lo, hi) { (n), (d), (q), (lo), (hi), 0, 0, 0 }

static bench_param *bench_params_;
static size_t bench_nparams_;
static int bench_quick_;

static int bench_parse_value_(const char *s, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno != 0 || !isfinite(v))
        return -1;
    /* optional decimal suffixes: k, M, G (x1e3, x1e6, x1e9) */
    if (*end == 'k' || *end == 'K') { v *= 1e3; end++; }
    else if (*end == 'M') { v *= 1e6; end++; }
    else if (*end == 'G' || *end == 'g') { v *= 1e9; end++; }
    if (*end != '\0')
        return -1;
    *out = v;
    return 0;
}

/*
 * Parses argv against the program's parameter table. "quick" is implicit in
 * every program. Exits 2 on an unknown key, malformed pair or bad value.
 */
static BENCH_UNUSED void bench_parse(const char *name, int argc, char **argv,
                                     bench_param *params, size_t n)
{
    bench_name_ = name;
    bench_params_ = params;
    bench_nparams_ = n;
    int quick = 0;

    /* first pass: quick, so that defaults are known before overrides */
    for (int i = 1; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        if (!eq || eq == argv[i])
            bench_usage("bad argument '%s' (expected key=value)", argv[i]);
        if ((size_t)(eq - argv[i]) == 5 && strncmp(argv[i], "quick", 5) == 0) {
            double v;
            if (bench_parse_value_(eq + 1, &v) != 0 || (v != 0 && v != 1))
                bench_usage("bad value for quick: '%s' (expected 0 or 1)", eq + 1);
            quick = (int)v;
        }
    }
    bench_quick_ = quick;
    for (size_t k = 0; k < n; k++) {
        params[k].val = quick ? params[k].quick : params[k].def;
        params[k].given = 0;
    }
    for (int i = 1; i < argc; i++) {
        const char *eq = strchr(argv[i], '=');
        size_t klen = (size_t)(eq - argv[i]);
        if (klen == 5 && strncmp(argv[i], "quick", 5) == 0)
            continue;
        size_t k;
        for (k = 0; k < n; k++)
            if (strlen(params[k].name) == klen && strncmp(params[k].name, argv[i], klen) == 0)
                break;
        if (k == n)
            bench_usage("unknown parameter '%.*s'", (int)klen, argv[i]);
        double v;
        if (bench_parse_value_(eq + 1, &v) != 0)
            bench_usage("bad value for %s: '%s' (expected a number)", params[k].name, eq + 1);
        if (params[k].is_int && v != floor(v))
            bench_usage("bad value for %s: '%s' (expected an integer)", params[k].name, eq + 1);
        if (v < params[k].min || v > params[k].max)
            bench_usage("bad value for %s: %g (allowed %g..%g)", params[k].name, v,
                        params[k].min, params[k].max);
        params[k].val = v;
        params[k].given = 1;
    }
}

static bench_param *bench_find_param_(const char *name)
{
    for (size_t k = 0; k < bench_nparams_; k++)
        if (strcmp(bench_params_[k].name, name) == 0)
            return &bench_params_[k];
    fprintf(stderr, "%s: internal error: no parameter '%s'\n", bench_name_, name);
    exit(2);
}

static BENCH_UNUSED double bench_get(const char *name) { return bench_find_param_(name)->val; }
static BENCH_UNUSED long long bench_geti(const char *name) { return (long long)bench_find_param_(name)->val; }
static BENCH_UNUSED int bench_given(const char *name) { return bench_find_param_(name)->given; }
static BENCH_UNUSED void bench_set(const char *name, double v) { bench_find_param_(name)->val = v; }
static BENCH_UNUSED int bench_is_quick(void) { return bench_quick_; }

/* ------------------------------------------------------------------------ */
/* JSON result line                                                         */
/* ------------------------------------------------------------------------ */

static char bench_metrics_[8192];
static size_t bench_metrics_len_;

static void bench_fmt_num_(char *buf, size_t cap, double v)
{
    if (v == floor(v) && fabs(v) < 1e15)
        snprintf(buf, cap, "%.0f", v);
    else if (fabs(v) >= 1000)
        snprintf(buf, cap, "%.1f", v);
    else
        snprintf(buf, cap, "%.6g", v);
}

/* Appends one numeric metric; non-finite values are a bug of the bench. */
static BENCH_UNUSED void bench_metric(const char *name, double v)
{
    if (!isfinite(v)) {
        fprintf(stderr, "%s: internal error: metric %s is not finite\n", bench_name_, name);
        exit(3);
    }
    char num[64];
    bench_fmt_num_(num, sizeof num, v);
    int w = snprintf(bench_metrics_ + bench_metrics_len_, sizeof bench_metrics_ - bench_metrics_len_,
                     "%s\"%s\":%s", bench_metrics_len_ ? "," : "", name, num);
    if (w < 0 || (size_t)w >= sizeof bench_metrics_ - bench_metrics_len_) {
        fprintf(stderr, "%s: internal error: metrics overflow\n", bench_name_);
        exit(3);
    }
    bench_metrics_len_ += (size_t)w;
}

/* Prints the single result line: all effective params, then the metrics. */
static BENCH_UNUSED void bench_emit(void)
{
    char line[16384];
    size_t len = 0;
    char num[64];
    len += (size_t)snprintf(line + len, sizeof line - len, "{\"bench\":\"%s\",\"params\":{\"quick\":%d",
                            bench_name_, bench_quick_);
    for (size_t k = 0; k < bench_nparams_; k++) {
        bench_fmt_num_(num, sizeof num, bench_params_[k].val);
        len += (size_t)snprintf(line + len, sizeof line - len, ",\"%s\":%s", bench_params_[k].name, num);
    }
    len += (size_t)snprintf(line + len, sizeof line - len, "},\"metrics\":{%s}}\n", bench_metrics_);
    if (len >= sizeof line) {
        fprintf(stderr, "%s: internal error: result line too long\n", bench_name_);
        exit(3);
    }
    fwrite(line, 1, len, stdout);
    fflush(stdout);
}

/* ------------------------------------------------------------------------ */
/* Time                                                                     */
/* ------------------------------------------------------------------------ */

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static BENCH_UNUSED void sleep_until_ns(uint64_t t)
{
    struct timespec ts = { (time_t)(t / 1000000000ull), (long)(t % 1000000000ull) };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/*
 * Cheap per-operation clock for latency samples: the TSC (invariant on any
 * machine this is meant for), calibrated once against CLOCK_MONOTONIC.
 * lat_begin/lat_end fence so that the timed region cannot leak out.
 * Elsewhere it falls back to clock_gettime.
 */
static double lat_ns_per_tick_ = 1.0;
static double lat_resolution_ns_ = 0;

static inline uint64_t lat_begin(void)
{
#if BENCH_HAVE_TSC
    _mm_lfence();
    uint64_t t = __rdtsc();
    _mm_lfence();
    return t;
#else
    return now_ns();
#endif
}

static inline uint64_t lat_end(void)
{
#if BENCH_HAVE_TSC
    unsigned aux;
    uint64_t t = __rdtscp(&aux);
    _mm_lfence();
    return t;
#else
    return now_ns();
#endif
}

static inline double lat_ticks_to_ns(uint64_t ticks) { return (double)ticks * lat_ns_per_tick_; }

static int cmp_u64_(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/*
 * Calibrates the tick clock (about 20 ms, 5 ms in quick mode), measures its
 * resolution (the smallest step seen; virtual machines often step the TSC
 * coarsely) and returns the median cost in ns of an empty lat_begin/lat_end
 * pair (timer overhead, reported as timer_overhead_ns, never subtracted from
 * samples).
 */
static BENCH_UNUSED double lat_calibrate(void)
{
#if BENCH_HAVE_TSC
    uint64_t span = bench_quick_ ? 5000000ull : 20000000ull;
    uint64_t t0 = now_ns(), c0 = __rdtsc();
    uint64_t t1, c1;
    do {
        t1 = now_ns();
        c1 = __rdtsc();
    } while (t1 - t0 < span);
    if (c1 > c0)
        lat_ns_per_tick_ = (double)(t1 - t0) / (double)(c1 - c0);
#endif
    /* resolution: smallest non-zero step between consecutive reads */
    uint64_t res = UINT64_MAX, prev = lat_begin();
    for (int i = 0; i < 1000; i++) {
        uint64_t t = lat_begin();
        if (t > prev && t - prev < res)
            res = t - prev;
        prev = t;
    }
    lat_resolution_ns_ = res == UINT64_MAX ? 0 : lat_ticks_to_ns(res);
    uint64_t d[101];
    for (int i = 0; i < 101; i++) {
        uint64_t a = lat_begin();
        uint64_t b = lat_end();
        d[i] = b - a;
    }
    qsort(d, 101, sizeof d[0], cmp_u64_);
    return lat_ticks_to_ns(d[50]);
}

/* Emits timer_overhead_ns (from lat_calibrate) and timer_resolution_ns. */
static BENCH_UNUSED void lat_emit_timer(double overhead_ns)
{
    bench_metric("timer_overhead_ns", round(overhead_ns * 10) / 10);
    bench_metric("timer_resolution_ns", round(lat_resolution_ns_ * 10) / 10);
}

/* ------------------------------------------------------------------------ */
/* Memory outside the allocator under test                                  */
/* ------------------------------------------------------------------------ */

/* Anonymous mapping for bookkeeping; prefault=1 touches every page now. */
static BENCH_UNUSED void *bench_map(size_t bytes, int prefault)
{
    if (bytes == 0)
        bytes = 1;
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "%s: cannot map %zu bytes of bookkeeping memory\n", bench_name_, bytes);
        exit(3);
    }
    if (prefault)
        memset(p, 0, bytes);
    return p;
}

static BENCH_UNUSED void bench_unmap(void *p, size_t bytes)
{
    if (p)
        munmap(p, bytes ? bytes : 1);
}

/* ------------------------------------------------------------------------ */
/* RSS (never calls malloc)                                                 */
/* ------------------------------------------------------------------------ */

static ssize_t bench_read_file_(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = 0;
    while (len + 1 < cap) {
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    return (ssize_t)len;
}

/* Current resident set size in KiB (statm resident pages * page size). */
static BENCH_UNUSED long rss_kb(void)
{
    char buf[256];
    if (bench_read_file_("/proc/self/statm", buf, sizeof buf) <= 0)
        return -1;
    unsigned long size = 0, resident = 0;
    if (sscanf(buf, "%lu %lu", &size, &resident) != 2)
        return -1;
    return (long)(resident * (unsigned long)sysconf(_SC_PAGESIZE) / 1024ul);
}

/* Value in kB of a "Key:   N kB" line of /proc/self/status. */
static long bench_status_kb_(const char *key)
{
    char buf[8192];
    if (bench_read_file_("/proc/self/status", buf, sizeof buf) <= 0)
        return -1;
    size_t klen = strlen(key);
    for (char *line = buf; line && *line;) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':')
            return strtol(line + klen + 1, NULL, 10);
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return -1;
}

/* Peak resident set size in KiB: VmHWM, or the current RSS if larger (the
 * kernel folds per-thread RSS counters into VmHWM lazily). */
static BENCH_UNUSED long peak_rss_kb(void)
{
    long hwm = bench_status_kb_("VmHWM"), cur = rss_kb();
    return hwm > cur ? hwm : cur;
}

/* ------------------------------------------------------------------------ */
/* Deterministic PRNG (splitmix64)                                          */
/* ------------------------------------------------------------------------ */

typedef struct { uint64_t s; } rng_t;

static inline uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline rng_t rng_seed(uint64_t seed, uint64_t stream)
{
    rng_t r = { mix64(seed * 0x9E3779B97F4A7C15ull + mix64(stream + 0x632BE59BD9B4E019ull)) };
    return r;
}

static inline uint64_t rng_next(rng_t *r)
{
    r->s += 0x9E3779B97F4A7C15ull;
    return mix64(r->s);
}

/* Uniform in [0, n) (n > 0), multiply-shift reduction. */
static inline uint64_t rng_below(rng_t *r, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)rng_next(r) * n) >> 64);
}

/* Uniform in [lo, hi]. */
static inline uint64_t rng_range(rng_t *r, uint64_t lo, uint64_t hi)
{
    return lo + rng_below(r, hi - lo + 1);
}

/* True with probability num/den. */
static inline int rng_chance(rng_t *r, uint64_t num, uint64_t den)
{
    return rng_below(r, den) < num;
}

static inline unsigned bench_log2_(uint64_t x) { return 63u - (unsigned)__builtin_clzll(x); }

/*
 * Log-uniform size in [lo, hi]: a power-of-two band chosen uniformly, then a
 * uniform size inside it. Skews toward small sizes the way real programs do.
 */
static inline size_t rng_size_log(rng_t *r, size_t lo, size_t hi)
{
    unsigned a = bench_log2_(lo), b = bench_log2_(hi);
    unsigned e = a + (unsigned)rng_below(r, b - a + 1);
    size_t blo = (size_t)1 << e, bhi = ((size_t)2 << e) - 1;
    if (blo < lo) blo = lo;
    if (bhi > hi) bhi = hi;
    return (size_t)rng_range(r, blo, bhi);
}

/* ------------------------------------------------------------------------ */
/* Block patterns                                                           */
/* ------------------------------------------------------------------------ */

/* A block a bench holds: where it is, its size, and the tag its pattern was
 * written with (blk_fill / blk_check). */
typedef struct {
    void *p;
    size_t size;
    uint64_t tag;
} bench_obj;

/*
 * A block of n bytes tagged `tag` carries a header word mix64(tag) in its
 * first 8 bytes and a size-dependent word in its last 8 bytes (for n >= 16;
 * smaller blocks get every byte patterned). Detects blocks handed out twice,
 * overlapping blocks, and metadata written into live blocks.
 */
static inline uint64_t blk_head_(uint64_t tag) { return mix64(tag ^ 0xA0761D6478BD642Full); }
static inline uint64_t blk_tail_(uint64_t head, size_t n)
{
    return (head * 0xE7037ED1A0B428DBull) ^ (uint64_t)n ^ 0x8EBC6AF09C88C6E3ull;
}

static inline void blk_fill(void *p, size_t n, uint64_t tag)
{
    uint64_t h = blk_head_(tag);
    unsigned char *c = (unsigned char *)p;
    if (BENCH_LIKELY(n >= 16)) {
        uint64_t t = blk_tail_(h, n);
        memcpy(c, &h, 8);
        memcpy(c + n - 8, &t, 8);
    } else {
        for (size_t i = 0; i < n; i++)
            c[i] = (unsigned char)((h >> (8 * (i & 7))) ^ i);
    }
}

static inline int blk_ok(const void *p, size_t n, uint64_t tag)
{
    uint64_t h = blk_head_(tag);
    const unsigned char *c = (const unsigned char *)p;
    if (BENCH_LIKELY(n >= 16)) {
        uint64_t a, b;
        memcpy(&a, c, 8);
        memcpy(&b, c + n - 8, 8);
        return a == h && b == blk_tail_(h, n);
    }
    for (size_t i = 0; i < n; i++)
        if (c[i] != (unsigned char)((h >> (8 * (i & 7))) ^ i))
            return 0;
    return 1;
}

static BENCH_NOINLINE BENCH_UNUSED void blk_fail_(const void *p, size_t n, uint64_t tag, const char *what)
{
    uint64_t a = 0, b = 0;
    if (n >= 16) {
        memcpy(&a, p, 8);
        memcpy(&b, (const char *)p + n - 8, 8);
    }
    bench_fail("%s: block %p of %zu bytes (tag %#llx) corrupted: head %#llx tail %#llx", what, p, n,
               (unsigned long long)tag, (unsigned long long)a, (unsigned long long)b);
}

/* Verifies the pattern, FAILs with `what` in the message if broken. */
static inline void blk_check(const void *p, size_t n, uint64_t tag, const char *what)
{
    if (BENCH_UNLIKELY(!blk_ok(p, n, tag)))
        blk_fail_(p, n, tag, what);
}

/* The pattern plus the tag at every 4 KiB offset from the start, so every
 * page of a large block is written (RSS reflects it) and checked. */
static inline BENCH_UNUSED void blk_fill_pages(unsigned char *p, size_t n, uint64_t tag)
{
    blk_fill(p, n, tag);
    for (size_t off = 4096; off + 16 <= n; off += 4096)
        memcpy(p + off, &tag, 8);
}

static inline BENCH_UNUSED void blk_check_pages(const unsigned char *p, size_t n, uint64_t tag, const char *what)
{
    blk_check(p, n, tag, what);
    for (size_t off = 4096; off + 16 <= n; off += 4096) {
        uint64_t v;
        memcpy(&v, p + off, 8);
        if (BENCH_UNLIKELY(v != tag))
            blk_fail_(p, n, tag, what);
    }
}

/* ------------------------------------------------------------------------ */
/* Latency percentiles                                                      */
/* ------------------------------------------------------------------------ */

/* LSD radix sort of n tick samples (16-bit digits, only as many passes as
 * the largest value needs); tmp must hold n values. */
static BENCH_UNUSED void bench_sort_u64(uint64_t *a, uint64_t *tmp, size_t n)
{
    static size_t count[65536];
    uint64_t mx = 0;
    for (size_t i = 0; i < n; i++)
        if (a[i] > mx)
            mx = a[i];
    uint64_t *src = a, *dst = tmp;
    for (unsigned shift = 0; shift < 64 && (mx >> shift) != 0; shift += 16) {
        memset(count, 0, sizeof count);
        for (size_t i = 0; i < n; i++)
            count[(src[i] >> shift) & 0xFFFF]++;
        size_t sum = 0;
        for (size_t d = 0; d < 65536; d++) {
            size_t c = count[d];
            count[d] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; i++)
            dst[count[(src[i] >> shift) & 0xFFFF]++] = src[i];
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != a)
        memcpy(a, src, n * sizeof *a);
}

/* Nearest-rank percentile of sorted samples, in ns. */
static BENCH_UNUSED double lat_percentile_ns(const uint64_t *sorted, size_t n, double q)
{
    if (n == 0)
        return 0;
    double rank = ceil(q / 100.0 * (double)n);
    size_t idx = rank < 1 ? 0 : (size_t)rank - 1;
    if (idx >= n)
        idx = n - 1;
    return lat_ticks_to_ns(sorted[idx]);
}

/*
 * Sorts the samples (tmp: scratch of n values) and emits the percentile
 * metrics named in `which` (a comma list among 50,90,95,99,999,9999,max),
 * plus mean_ns.
 */
static BENCH_UNUSED void lat_emit(uint64_t *samples, uint64_t *tmp, size_t n, const char *which)
{
    bench_sort_u64(samples, tmp, n);
    static const struct { const char *key; const char *metric; double q; } tab[] = {
        { "50", "p50_ns", 50 },       { "90", "p90_ns", 90 },         { "95", "p95_ns", 95 },
        { "99", "p99_ns", 99 },       { "999", "p999_ns", 99.9 },     { "9999", "p9999_ns", 99.99 },
        { "max", "max_ns", 100 },
    };
    char list[128];
    snprintf(list, sizeof list, ",%s,", which);
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        char key[16];
        snprintf(key, sizeof key, ",%s,", tab[i].key);
        if (strstr(list, key)) {
            double v = lat_percentile_ns(samples, n, tab[i].q);
            bench_metric(tab[i].metric, round(v * 10) / 10);
        }
    }
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)samples[i];
    bench_metric("mean_ns", n ? round(lat_ticks_to_ns((uint64_t)(sum / (double)n)) * 10) / 10 : 0);
}

/* ------------------------------------------------------------------------ */
/* Threads                                                                  */
/* ------------------------------------------------------------------------ */

static BENCH_UNUSED void bench_thread_create(pthread_t *t, void *(*fn)(void *), void *arg)
{
    int rc = pthread_create(t, NULL, fn, arg);
    if (rc != 0) {
        fprintf(stderr, "%s: pthread_create failed: %s\n", bench_name_, strerror(rc));
        exit(3);
    }
}

static BENCH_UNUSED void bench_thread_join(pthread_t t)
{
    int rc = pthread_join(t, NULL);
    if (rc != 0) {
        fprintf(stderr, "%s: pthread_join failed: %s\n", bench_name_, strerror(rc));
        exit(3);
    }
}

/* Result helpers most programs share. */
static BENCH_UNUSED void bench_metric_throughput(double ops, uint64_t ns)
{
    double s = (double)(ns ? ns : 1) / 1e9;
    bench_metric("ops_per_sec", round(ops / s));
    bench_metric("seconds", round(s * 1e6) / 1e6);
}

static double bench_tv_s_(struct timeval tv) { return (double)tv.tv_sec + (double)tv.tv_usec / 1e6; }

/* user_seconds, sys_seconds and minor_faults between two
 * getrusage(RUSAGE_SELF) readings (all threads of the process). */
static BENCH_UNUSED void bench_metric_rusage(const struct rusage *r0, const struct rusage *r1)
{
    bench_metric("user_seconds", round((bench_tv_s_(r1->ru_utime) - bench_tv_s_(r0->ru_utime)) * 1e6) / 1e6);
    bench_metric("sys_seconds", round((bench_tv_s_(r1->ru_stime) - bench_tv_s_(r0->ru_stime)) * 1e6) / 1e6);
    bench_metric("minor_faults", (double)(r1->ru_minflt - r0->ru_minflt));
}

/* ------------------------------------------------------------------------ */
/* Slot churn                                                               */
/* ------------------------------------------------------------------------ */

/*
 * A working set of `n` slots holding one block each, replaced at random:
 * `make` allocates and patterns a block for a tag, `check` verifies one
 * (`what` names the moment in a failure). The slots are built, then `ops`
 * replacements (check, free, make) are timed with getrusage around them,
 * then every block is checked and freed. The slot array is mapped, outside
 * the allocator under test.
 */
typedef struct {
    unsigned char *p;
    size_t size;
    uint64_t tag;
} bench_slot;

typedef struct {
    uint64_t ns;           /* the replacements' wall time */
    struct rusage r0, r1;  /* getrusage(RUSAGE_SELF) before and after them */
    long peak_rss_kb;      /* right after them */
} bench_churn_result;

static BENCH_UNUSED bench_churn_result bench_slot_churn(uint64_t n, uint64_t ops, rng_t *rng,
                                                        bench_slot (*make)(rng_t *, uint64_t),
                                                        void (*check)(const bench_slot *, const char *))
{
    bench_slot *s = bench_map(n * sizeof *s, 1);
    uint64_t tag = 0;
    for (uint64_t i = 0; i < n; i++)
        s[i] = make(rng, ++tag);

    bench_churn_result r;
    getrusage(RUSAGE_SELF, &r.r0);
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < ops; i++) {
        bench_slot *e = &s[rng_below(rng, n)];
        check(e, "block before free");
        free(e->p);
        *e = make(rng, ++tag);
    }
    r.ns = now_ns() - t0;
    getrusage(RUSAGE_SELF, &r.r1);
    r.peak_rss_kb = peak_rss_kb();

    for (uint64_t i = 0; i < n; i++) {
        check(&s[i], "block at the end");
        free(s[i].p);
    }
    bench_unmap(s, n * sizeof *s);
    return r;
}

/* The metrics of a slot churn of `ops` replacements. */
static BENCH_UNUSED void bench_metric_churn(const bench_churn_result *r, uint64_t ops)
{
    bench_metric_throughput((double)ops, r->ns);
    bench_metric_rusage(&r->r0, &r->r1);
    bench_metric("peak_rss_kb", (double)r->peak_rss_kb);
}

#endif /* AETH_BENCH_COMMON_H */
