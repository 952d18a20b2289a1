/*
 * bignum: arbitrary-precision arithmetic over expression trees, the shape of
 * a Python or Lisp program doing integer maths: millions of short-lived
 * blocks of 16..200 bytes, each used for a little real work.
 *
 * Each of `trees` rounds builds a random expression tree of `leaves`
 * (64) leaves (random bignums of 1..4 limbs) joined by + and * nodes (tree
 * nodes are heap blocks too), evaluates it bottom-up, allocating a new
 * number for every node's result and freeing the operands as soon as they
 * are consumed, then frees the tree. A number is a header word plus its
 * 64-bit limbs, malloc'd at its exact size; results are kept modulo
 * 2^(64*`limbs`) (24 limbs: at most 200 bytes), as a fixed-width big
 * integer type would. Truncation keeps the low limb exact, so every
 * result's low limb is checked against the same tree evaluated in wrapping
 * 64-bit arithmetic. `ops_per_sec` counts tree nodes evaluated (each one a
 * malloc and a free of its result, plus those of the tree itself).
 */
#include "bench_common.h"

static bench_param params[] = {
    BP_INT("trees", 100000, 5000, 1, 1e12),
    BP_INT("leaves", 64, 64, 2, 1 << 20),
    BP_INT("limbs", 24, 24, 2, 1 << 16),
    BP_INT("seed", 1, 1, 0, 1e18),
};

typedef struct {
    uint64_t n; /* limbs in use, >= 1 */
    uint64_t limb[];
} num_t;

typedef struct node {
    struct node *left, *right; /* both NULL for a leaf */
    num_t *value;              /* the leaf's number; NULL for an operator */
    uint64_t op;               /* 0: +, 1: * */
} node_t;

static uint64_t max_limbs_;
static uint64_t evaluated_;

static num_t *num_new(uint64_t n)
{
    num_t *x = malloc(sizeof(num_t) + n * sizeof(uint64_t));
    BENCH_CHECK_ALLOC(x, sizeof(num_t) + n * sizeof(uint64_t));
    x->n = n;
    return x;
}

/* Drops leading zero limbs (keeping one) so sizes vary as real bignums do. */
static void num_trim(num_t *x)
{
    while (x->n > 1 && x->limb[x->n - 1] == 0)
        x->n--;
}

static num_t *num_add(const num_t *a, const num_t *b)
{
    uint64_t n = (a->n > b->n ? a->n : b->n) + 1;
    if (n > max_limbs_)
        n = max_limbs_;
    num_t *r = num_new(n);
    unsigned __int128 carry = 0;
    for (uint64_t i = 0; i < n; i++) {
        unsigned __int128 s = carry;
        if (i < a->n) s += a->limb[i];
        if (i < b->n) s += b->limb[i];
        r->limb[i] = (uint64_t)s;
        carry = s >> 64;
    }
    num_trim(r);
    return r;
}

static num_t *num_mul(const num_t *a, const num_t *b)
{
    uint64_t n = a->n + b->n;
    if (n > max_limbs_)
        n = max_limbs_;
    num_t *r = num_new(n);
    memset(r->limb, 0, n * sizeof(uint64_t));
    for (uint64_t i = 0; i < a->n && i < n; i++) {
        unsigned __int128 carry = 0;
        for (uint64_t j = 0; j < b->n && i + j < n; j++) {
            unsigned __int128 t = (unsigned __int128)a->limb[i] * b->limb[j] + r->limb[i + j] + carry;
            r->limb[i + j] = (uint64_t)t;
            carry = t >> 64;
        }
        if (i + b->n < n)
            r->limb[i + b->n] = (uint64_t)carry;
    }
    num_trim(r);
    return r;
}

static node_t *node_new(void)
{
    node_t *x = malloc(sizeof *x);
    BENCH_CHECK_ALLOC(x, sizeof *x);
    return x;
}

/* A random tree over `leaves` leaves; *check gets its value mod 2^64. */
static node_t *build(rng_t *rng, uint64_t leaves, uint64_t *check)
{
    node_t *x = node_new();
    if (leaves == 1) {
        uint64_t n = 1 + rng_below(rng, 4);
        num_t *v = num_new(n);
        for (uint64_t i = 0; i < n; i++)
            v->limb[i] = rng_next(rng) | (i + 1 == n ? 1 : 0);
        x->left = x->right = NULL;
        x->value = v;
        x->op = 0;
        *check = v->limb[0];
        return x;
    }
    uint64_t l = 1 + rng_below(rng, leaves - 1), cl, cr;
    x->op = rng_below(rng, 2);
    x->value = NULL;
    x->left = build(rng, l, &cl);
    x->right = build(rng, leaves - l, &cr);
    *check = x->op ? cl * cr : cl + cr;
    return x;
}

/* Evaluates and frees the tree; returns its value (a new number). */
static num_t *eval(node_t *x)
{
    num_t *r;
    if (!x->left) {
        r = x->value;
    } else {
        num_t *a = eval(x->left), *b = eval(x->right);
        r = x->op ? num_mul(a, b) : num_add(a, b);
        free(a);
        free(b);
    }
    free(x);
    evaluated_++;
    return r;
}

int main(int argc, char **argv)
{
    bench_parse("bignum", argc, argv, params, sizeof params / sizeof params[0]);
    uint64_t trees = (uint64_t)bench_geti("trees"), leaves = (uint64_t)bench_geti("leaves");
    max_limbs_ = (uint64_t)bench_geti("limbs");
    rng_t rng = rng_seed((uint64_t)bench_geti("seed"), 0);

    uint64_t t0 = now_ns(), digest = 0;
    for (uint64_t t = 0; t < trees; t++) {
        uint64_t want;
        node_t *root = build(&rng, leaves, &want);
        num_t *v = eval(root);
        if (BENCH_UNLIKELY(v->limb[0] != want))
            bench_fail("tree %llu: low limb %#llx, expected %#llx", (unsigned long long)t,
                       (unsigned long long)v->limb[0], (unsigned long long)want);
        digest ^= mix64(v->limb[0] ^ v->n);
        free(v);
    }
    uint64_t t1 = now_ns();

    bench_metric_throughput((double)evaluated_, t1 - t0);
    bench_metric("digest_low_bits", (double)(digest & 0xFFFF));
    bench_metric("peak_rss_kb", (double)peak_rss_kb());
    bench_emit();
    return 0;
}
