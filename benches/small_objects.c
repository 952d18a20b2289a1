/*
 * small_objects: a single thread building and tearing down many small
 * linked objects, the way symbolic, bignum and logic-minimisation code does.
 *
 * Each round does three things:
 *   - trees: builds a binary tree of 32-byte nodes of random depth in
 *     [min_depth, max_depth], walks it (node count and value sum must match
 *     what was built) and frees it; a long-lived tree of depth max_depth
 *     lives for the whole run and is checked at the end;
 *   - bignums: `bn_ops` operations on a pool of 64 arbitrary-precision
 *     numbers (16..128-byte blocks: a 16-byte header and 1..28 32-bit limbs),
 *     each result freshly allocated and the replaced operand freed; every
 *     number carries its value mod 2^61-1, recomputed from its limbs and
 *     compared whenever it is freed;
 *   - lists: builds a list of `list_len` nodes of random sizes in 16..128
 *     bytes, then rebuilds it as a copy with every other node dropped
 *     (freeing the old list as it goes), checks and frees the copy.
 * Reports allocations per second (each allocation is also freed), and the
 * time spent in each of the three parts within the run.
 */
#include "bench_common.h"

static bench_param params[] = {
    BP_INT("rounds", 1200, 20, 1, 1e9),
    BP_INT("min_depth", 4, 4, 1, 30),
    BP_INT("max_depth", 14, 10, 1, 30),
    BP_INT("bn_ops", 10000, 2000, 0, 1e9),
    BP_INT("list_len", 10000, 2000, 0, 1e9),
    BP_INT("seed", 1, 1, 0, 1e18),
};

static uint64_t allocs;

static inline void *xmalloc(size_t n)
{
    void *p = malloc(n);
    BENCH_CHECK_ALLOC(p, n);
    allocs++;
    return p;
}

/* ---------------- trees ---------------- */

typedef struct node {
    struct node *l, *r;
    uint64_t v;
    uint64_t check; /* mix64(v) */
} node_t;

static node_t *tree_build(int depth, uint64_t v, uint64_t *sum)
{
    node_t *n = xmalloc(sizeof *n);
    n->v = v;
    n->check = mix64(v);
    *sum += v;
    if (depth > 0) {
        n->l = tree_build(depth - 1, mix64(v ^ 1), sum);
        n->r = tree_build(depth - 1, mix64(v ^ 2), sum);
    } else {
        n->l = n->r = NULL;
    }
    return n;
}

static uint64_t tree_walk(const node_t *n, uint64_t *sum)
{
    if (!n)
        return 0;
    if (n->check != mix64(n->v))
        bench_fail("tree node %p corrupted", (const void *)n);
    *sum += n->v;
    return 1 + tree_walk(n->l, sum) + tree_walk(n->r, sum);
}

static void tree_free(node_t *n)
{
    if (!n)
        return;
    tree_free(n->l);
    tree_free(n->r);
    free(n);
}

static void tree_round(int depth, uint64_t v, const char *what)
{
    uint64_t built = 0, walked = 0;
    node_t *t = tree_build(depth, v, &built);
    uint64_t count = tree_walk(t, &walked);
    if (count != (2ull << depth) - 1 || walked != built)
        bench_fail("%s of depth %d: %llu nodes, sums %s", what, depth, (unsigned long long)count,
                   walked == built ? "match" : "differ");
    tree_free(t);
}

/* ---------------- bignums ---------------- */

#define P61 ((1ull << 61) - 1)
#define BN_MAX_LIMBS 28 /* 16 + 4 * 28 = 128 bytes */

typedef struct {
    uint32_t n;      /* limbs in use, little-endian, top limb non-zero */
    uint32_t pad;
    uint64_t mod;    /* value mod 2^61-1, tracked through the operations */
    uint32_t limb[];
} bn_t;

static inline uint64_t mod61(unsigned __int128 x)
{
    uint64_t lo = (uint64_t)(x & P61), hi = (uint64_t)(x >> 61);
    uint64_t r = lo + hi; /* inputs stay below 2^122, so hi < 2^61: fold once more */
    r = (r & P61) + (r >> 61);
    return r >= P61 ? r - P61 : r;
}

static uint64_t bn_mod_of_limbs(const bn_t *a)
{
    uint64_t r = 0;
    for (uint32_t i = a->n; i-- > 0;)
        r = mod61(((unsigned __int128)r << 32) + a->limb[i]);
    return r;
}

static bn_t *bn_alloc(uint32_t n)
{
    bn_t *b = xmalloc(sizeof(bn_t) + 4 * (size_t)n);
    b->n = n;
    b->pad = 0x5EED1234u;
    return b;
}

static void bn_free(bn_t *b)
{
    if (b->pad != 0x5EED1234u || b->n == 0 || b->n > BN_MAX_LIMBS + 1 || bn_mod_of_limbs(b) != b->mod)
        bench_fail("bignum %p corrupted (%u limbs)", (void *)b, b->n);
    free(b);
}

static bn_t *bn_small(uint32_t v)
{
    bn_t *b = bn_alloc(1);
    b->limb[0] = v ? v : 1;
    b->mod = b->limb[0];
    return b;
}

static void bn_trim(bn_t *b)
{
    while (b->n > 1 && b->limb[b->n - 1] == 0)
        b->n--;
}

static bn_t *bn_add(const bn_t *a, const bn_t *b)
{
    uint32_t n = (a->n > b->n ? a->n : b->n) + 1;
    bn_t *c = bn_alloc(n);
    uint64_t carry = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t s = carry;
        if (i < a->n) s += a->limb[i];
        if (i < b->n) s += b->limb[i];
        c->limb[i] = (uint32_t)s;
        carry = s >> 32;
    }
    bn_trim(c);
    c->mod = mod61((unsigned __int128)a->mod + b->mod);
    return c;
}

static bn_t *bn_mul_small(const bn_t *a, uint32_t m)
{
    bn_t *c = bn_alloc(a->n + 1);
    uint64_t carry = 0;
    for (uint32_t i = 0; i < a->n; i++) {
        uint64_t p = (uint64_t)a->limb[i] * m + carry;
        c->limb[i] = (uint32_t)p;
        carry = p >> 32;
    }
    c->limb[a->n] = (uint32_t)carry;
    bn_trim(c);
    c->mod = mod61((unsigned __int128)a->mod * m);
    return c;
}

static bn_t *bn_mul(const bn_t *a, const bn_t *b)
{
    uint32_t n = a->n + b->n;
    bn_t *c = bn_alloc(n);
    memset(c->limb, 0, 4 * (size_t)n);
    for (uint32_t i = 0; i < a->n; i++) {
        uint64_t carry = 0;
        for (uint32_t j = 0; j < b->n; j++) {
            uint64_t p = (uint64_t)a->limb[i] * b->limb[j] + c->limb[i + j] + carry;
            c->limb[i + j] = (uint32_t)p;
            carry = p >> 32;
        }
        c->limb[i + b->n] = (uint32_t)carry;
    }
    bn_trim(c);
    c->mod = mod61((unsigned __int128)a->mod * b->mod);
    return c;
}

#define BN_POOL 64

static void bn_round(bn_t **pool, uint64_t ops, rng_t *rng)
{
    for (uint64_t k = 0; k < ops; k++) {
        uint64_t i = rng_below(rng, BN_POOL), j = rng_below(rng, BN_POOL);
        uint64_t kind = rng_below(rng, 4);
        bn_t *c;
        if (kind == 0 && pool[i]->n + pool[j]->n <= BN_MAX_LIMBS)
            c = bn_mul(pool[i], pool[j]);
        else if (kind == 1)
            c = bn_add(pool[i], pool[j]);
        else if (pool[i]->n < BN_MAX_LIMBS)
            c = bn_mul_small(pool[i], (uint32_t)rng_next(rng) | 1);
        else
            c = bn_small((uint32_t)rng_next(rng));
        if (c->n > BN_MAX_LIMBS) {
            bn_free(c);
            c = bn_small((uint32_t)rng_next(rng));
        }
        uint64_t dst = rng_below(rng, BN_POOL);
        bn_free(pool[dst]);
        pool[dst] = c;
    }
}

/* ---------------- lists ---------------- */

typedef struct lnode {
    struct lnode *next;
    uint32_t size;
    uint32_t seq;
    /* then size - 16 payload bytes; the last 8 hold a check word */
} lnode_t;

static inline uint64_t lcheck(const lnode_t *n) { return mix64(((uint64_t)n->seq << 32) | n->size); }

static lnode_t *lnode_new(uint32_t size, uint32_t seq)
{
    lnode_t *n = xmalloc(size);
    n->next = NULL;
    n->size = size;
    n->seq = seq;
    uint64_t c = lcheck(n);
    memcpy((char *)n + size - 8, &c, 8);
    return n;
}

static void lnode_check(const lnode_t *n, const char *what)
{
    uint64_t c;
    memcpy(&c, (const char *)n + n->size - 8, 8);
    if (n->size < 24 || n->size > 128 || c != lcheck(n))
        bench_fail("%s: list node %p corrupted", what, (const void *)n);
}

static void list_round(uint64_t len, rng_t *rng)
{
    lnode_t *head = NULL, **tail = &head;
    for (uint64_t i = 0; i < len; i++) {
        lnode_t *n = lnode_new((uint32_t)rng_range(rng, 24, 128), (uint32_t)i);
        *tail = n;
        tail = &n->next;
    }
    /* copy the odd-numbered nodes, freeing the old list as we go */
    lnode_t *copy = NULL, **ctail = &copy;
    uint64_t seen = 0;
    for (lnode_t *n = head; n;) {
        lnode_check(n, "original list");
        if (n->seq != seen++)
            bench_fail("list node out of order");
        if (n->seq & 1) {
            lnode_t *c = lnode_new(n->size, n->seq);
            *ctail = c;
            ctail = &c->next;
        }
        lnode_t *next = n->next;
        free(n);
        n = next;
    }
    uint64_t kept = 0;
    for (lnode_t *n = copy; n;) {
        lnode_check(n, "copied list");
        if (n->seq != 2 * kept + 1)
            bench_fail("copied list node out of order");
        kept++;
        lnode_t *next = n->next;
        free(n);
        n = next;
    }
    if (seen != len || kept != len / 2)
        bench_fail("list of %llu nodes: saw %llu, kept %llu", (unsigned long long)len, (unsigned long long)seen,
                   (unsigned long long)kept);
}

int main(int argc, char **argv)
{
    bench_parse("small_objects", argc, argv, params, sizeof params / sizeof params[0]);
    uint64_t rounds = (uint64_t)bench_geti("rounds");
    int min_depth = (int)bench_geti("min_depth"), max_depth = (int)bench_geti("max_depth");
    uint64_t bn_ops = (uint64_t)bench_geti("bn_ops"), list_len = (uint64_t)bench_geti("list_len");
    if (min_depth > max_depth)
        bench_usage("min_depth (%d) must not exceed max_depth (%d)", min_depth, max_depth);
    rng_t rng = rng_seed((uint64_t)bench_geti("seed"), 0);

    uint64_t t0 = now_ns();
    uint64_t long_sum = 0;
    node_t *long_lived = tree_build(max_depth, rng_next(&rng), &long_sum);
    bn_t *pool[BN_POOL];
    for (int i = 0; i < BN_POOL; i++)
        pool[i] = bn_small((uint32_t)rng_next(&rng));
    /* Time spent in each part, summed over the rounds: the parts share the
     * heap, so a part measured alone can behave differently. */
    uint64_t trees_ns = 0, bignums_ns = 0, lists_ns = 0;
    for (uint64_t r = 0; r < rounds; r++) {
        int depth = (int)rng_range(&rng, (uint64_t)min_depth, (uint64_t)max_depth);
        uint64_t a = now_ns();
        tree_round(depth, rng_next(&rng), "short-lived tree");
        uint64_t b = now_ns();
        bn_round(pool, bn_ops, &rng);
        uint64_t c = now_ns();
        list_round(list_len, &rng);
        uint64_t d = now_ns();
        trees_ns += b - a;
        bignums_ns += c - b;
        lists_ns += d - c;
    }
    for (int i = 0; i < BN_POOL; i++)
        bn_free(pool[i]);
    uint64_t walked = 0;
    uint64_t count = tree_walk(long_lived, &walked);
    if (count != (2ull << max_depth) - 1 || walked != long_sum)
        bench_fail("long-lived tree: %llu nodes, sums %s", (unsigned long long)count,
                   walked == long_sum ? "match" : "differ");
    tree_free(long_lived);
    uint64_t t1 = now_ns();

    bench_metric_throughput((double)allocs, t1 - t0);
    bench_metric("allocations", (double)allocs);
    bench_metric("trees_ms", (double)trees_ns / 1e6);
    bench_metric("bignums_ms", (double)bignums_ns / 1e6);
    bench_metric("lists_ms", (double)lists_ns / 1e6);
    bench_metric("peak_rss_kb", (double)peak_rss_kb());
    bench_emit();
    return 0;
}
