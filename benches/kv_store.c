/*
 * kv_store: an in-memory key-value store whose values churn in size.
 *
 * A chained hash table with heap-allocated string keys (8..40 bytes), entry
 * nodes and values. Keys are drawn from a key space of `keys` with a hot
 * set (80% of operations go to the first 20% of keys). Each operation is a
 * set (set_pct%: insert, or replace the value with realloc to a new
 * log-uniform size in [vmin, vmax] and rewrite it), a delete (del_pct%) or
 * a get (the rest; verifies the value's ends). Values are fully written.
 * At the end the whole operation stream is replayed without allocating
 * (a per-key shadow of presence, version and length) and the table must
 * match it exactly, every value byte included.
 */
#include "bench_common.h"

static bench_param params[] = {
    BP_INT("keys", 200000, 5000, 1, 1 << 28),
    BP_INT("ops", 3000000, 100000, 1, 1e11),
    BP_INT("set_pct", 50, 50, 0, 100),
    BP_INT("del_pct", 20, 20, 0, 100),
    BP_INT("vmin", 8, 8, 1, 1 << 30),
    BP_INT("vmax", 4096, 4096, 1, 1 << 30),
    BP_INT("seed", 1, 1, 0, 1e18),
};

typedef struct entry {
    struct entry *next;
    char *key;
    uint64_t hash;
    uint32_t klen;
    uint32_t idx;      /* key index in the key space */
    unsigned char *val;
    size_t vlen;
    uint64_t version;  /* operation number of the last set */
    uint64_t check;    /* node_check(): catches an overwritten node before its next is followed */
} entry_t;

static inline uint64_t node_check(const entry_t *e) { return mix64(e->hash ^ ((uint64_t)e->idx << 32) ^ e->klen); }

static entry_t **buckets;
static uint64_t bmask;
static uint64_t nitems;

static size_t make_key(char *buf, uint64_t idx)
{
    static const char pad[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    int n = snprintf(buf, 64, "key:%llu:", (unsigned long long)idx);
    size_t extra = (size_t)(mix64(idx) % 23);
    memcpy(buf + n, pad + (idx % 7), extra);
    buf[n + extra] = '\0';
    return (size_t)n + extra;
}

static inline uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 0xCBF29CE484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001B3ull;
    }
    return h;
}

static inline uint64_t val_tag(uint64_t idx, uint64_t version) { return (idx << 40) ^ version; }
static inline unsigned char val_byte(uint64_t tag) { return (unsigned char)(mix64(tag) >> 56); }

static void val_fill(unsigned char *v, size_t n, uint64_t tag)
{
    memset(v, val_byte(tag), n);
    blk_fill(v, n, tag);
}

static void val_check_full(const unsigned char *v, size_t n, uint64_t tag)
{
    blk_check(v, n, tag, "value");
    if (n >= 16) {
        unsigned char b = val_byte(tag);
        for (size_t i = 8; i < n - 8; i++)
            if (v[i] != b)
                blk_fail_(v, n, tag, "value body");
    }
}

static entry_t **find(const char *key, size_t klen, uint64_t h)
{
    entry_t **pp = &buckets[h & bmask];
    while (*pp) {
        entry_t *e = *pp;
        if (BENCH_UNLIKELY(e->check != node_check(e)))
            bench_fail("hash table node %p corrupted", (void *)e);
        if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0)
            return pp;
        pp = &e->next;
    }
    return pp;
}

static inline uint64_t pick_key(rng_t *r, uint64_t keys)
{
    if (keys >= 5 && rng_chance(r, 80, 100))
        return rng_below(r, keys / 5);
    return rng_below(r, keys);
}

int main(int argc, char **argv)
{
    bench_parse("kv_store", argc, argv, params, sizeof params / sizeof params[0]);
    uint64_t keys = (uint64_t)bench_geti("keys"), ops = (uint64_t)bench_geti("ops");
    uint64_t set_pct = (uint64_t)bench_geti("set_pct"), del_pct = (uint64_t)bench_geti("del_pct");
    size_t vmin = (size_t)bench_geti("vmin"), vmax = (size_t)bench_geti("vmax");
    uint64_t seed = (uint64_t)bench_geti("seed");
    if (set_pct + del_pct > 100)
        bench_usage("set_pct + del_pct must not exceed 100");
    if (vmin > vmax)
        bench_usage("vmin (%zu) must not exceed vmax (%zu)", vmin, vmax);

    uint64_t nb = 1;
    while (nb < keys)
        nb <<= 1;
    bmask = nb - 1;
    buckets = calloc(nb, sizeof *buckets);
    BENCH_CHECK_ALLOC(buckets, nb * sizeof *buckets);

    rng_t rng = rng_seed(seed, 0);
    char kbuf[96];
    uint64_t sets = 0, dels = 0, gets = 0, misses = 0;
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < ops; i++) {
        uint64_t idx = pick_key(&rng, keys);
        uint64_t kind = rng_below(&rng, 100);
        size_t vlen = kind < set_pct ? rng_size_log(&rng, vmin, vmax) : 0;
        size_t klen = make_key(kbuf, idx);
        uint64_t h = fnv1a(kbuf, klen);
        entry_t **pp = find(kbuf, klen, h);
        entry_t *e = *pp;
        if (kind < set_pct) {
            sets++;
            if (e) {
                blk_check(e->val, e->vlen, val_tag(idx, e->version), "value replaced");
                unsigned char *v = realloc(e->val, vlen);
                BENCH_CHECK_ALLOC(v, vlen);
                e->val = v;
            } else {
                e = malloc(sizeof *e);
                BENCH_CHECK_ALLOC(e, sizeof *e);
                e->key = malloc(klen + 1);
                BENCH_CHECK_ALLOC(e->key, klen + 1);
                memcpy(e->key, kbuf, klen + 1);
                e->klen = (uint32_t)klen;
                e->hash = h;
                e->idx = (uint32_t)idx;
                e->check = node_check(e);
                e->val = malloc(vlen);
                BENCH_CHECK_ALLOC(e->val, vlen);
                e->next = NULL;
                *pp = e;
                nitems++;
            }
            e->vlen = vlen;
            e->version = i;
            val_fill(e->val, vlen, val_tag(idx, i));
        } else if (kind < set_pct + del_pct) {
            dels++;
            if (e) {
                blk_check(e->val, e->vlen, val_tag(idx, e->version), "value deleted");
                *pp = e->next;
                free(e->val);
                free(e->key);
                free(e);
                nitems--;
            }
        } else {
            gets++;
            if (e)
                blk_check(e->val, e->vlen, val_tag(idx, e->version), "value read");
            else
                misses++;
        }
    }
    uint64_t t1 = now_ns();
    long peak = peak_rss_kb();
    long rss_end = rss_kb();

    /* recompute the expected final state without allocating */
    uint8_t *present = bench_map(keys, 1);
    uint64_t *version = bench_map(keys * sizeof(uint64_t), 1);
    size_t *length = bench_map(keys * sizeof(size_t), 1);
    rng = rng_seed(seed, 0);
    for (uint64_t i = 0; i < ops; i++) {
        uint64_t idx = pick_key(&rng, keys);
        uint64_t kind = rng_below(&rng, 100);
        if (kind < set_pct) {
            present[idx] = 1;
            version[idx] = i;
            length[idx] = rng_size_log(&rng, vmin, vmax);
        } else if (kind < set_pct + del_pct) {
            present[idx] = 0;
        }
    }
    uint64_t expect = 0, live_bytes = 0;
    for (uint64_t idx = 0; idx < keys; idx++) {
        if (!present[idx])
            continue;
        expect++;
        size_t klen = make_key(kbuf, idx);
        entry_t *e = *find(kbuf, klen, fnv1a(kbuf, klen));
        if (!e)
            bench_fail("key %s missing from the table", kbuf);
        if (e->idx != idx || e->version != version[idx] || e->vlen != length[idx])
            bench_fail("key %s: version %llu length %zu, expected %llu and %zu", kbuf,
                       (unsigned long long)e->version, e->vlen, (unsigned long long)version[idx], length[idx]);
        val_check_full(e->val, e->vlen, val_tag(idx, e->version));
        live_bytes += e->vlen;
    }
    if (expect != nitems)
        bench_fail("table holds %llu items, recomputation expects %llu", (unsigned long long)nitems,
                   (unsigned long long)expect);
    /* tear down: every chain must hold exactly the counted entries */
    uint64_t freed = 0;
    for (uint64_t b = 0; b < nb; b++) {
        entry_t *e = buckets[b];
        while (e) {
            entry_t *next = e->next;
            if (e->check != node_check(e))
                bench_fail("hash table node %p corrupted", (void *)e);
            if ((fnv1a(e->key, e->klen) & bmask) != b)
                bench_fail("entry with key %.40s in the wrong bucket", e->key);
            free(e->val);
            free(e->key);
            free(e);
            freed++;
            e = next;
        }
    }
    free(buckets);
    if (freed != nitems)
        bench_fail("freed %llu entries, table counted %llu", (unsigned long long)freed, (unsigned long long)nitems);

    bench_metric_throughput((double)ops, t1 - t0);
    bench_metric("peak_rss_kb", (double)peak);
    bench_metric("rss_end_kb", (double)rss_end);
    bench_metric("final_items", (double)nitems);
    bench_metric("live_value_kb", (double)(live_bytes / 1024));
    bench_metric("sets", (double)sets);
    bench_metric("deletes", (double)dels);
    bench_metric("gets", (double)gets);
    bench_metric("get_misses", (double)misses);
    bench_emit();
    return 0;
}
