/*
 * packet_churn: packet-processing allocation pattern.
 *
 * A ring of `ring` in-flight packets of `size` bytes (64 by default). Each
 * operation retires the oldest packet (verify, free) and receives a new one
 * into its slot (malloc, write the whole packet). After `warmup` untimed
 * operations, a throughput phase of `ops` operations is timed as a whole,
 * then a latency phase of `lat_ops` operations times each free+malloc pair
 * individually (the verify and fill stay outside the timed window).
 */
#include "bench_common.h"

static bench_param params[] = {
    BP_INT("ops", 150000000, 300000, 1, 1e12),
    BP_INT("lat_ops", 2000000, 100000, 1, 1e9),
    BP_INT("warmup", 200000, 10000, 0, 1e12),
    BP_INT("ring", 1024, 1024, 1, 1 << 26),
    BP_INT("size", 64, 64, 1, 1 << 30),
    BP_INT("seed", 1, 1, 0, 1e18),
};

typedef struct {
    unsigned char **pkt;
    uint64_t ring;
    size_t size;
    uint64_t seq; /* sequence number of the next packet received */
    uint64_t salt;
} ring_t;

static inline uint64_t pkt_tag(const ring_t *r, uint64_t seq) { return seq ^ r->salt; }

static inline void pkt_fill(unsigned char *p, size_t n, uint64_t tag)
{
    memset(p, (int)(tag & 0xFF) | 1, n); /* touch the whole packet */
    blk_fill(p, n, tag);
}

static inline void pkt_verify(const unsigned char *p, size_t n, uint64_t tag)
{
    blk_check(p, n, tag, "retired packet");
    if (n >= 32 && p[n / 2] != ((unsigned char)(tag & 0xFF) | 1))
        blk_fail_(p, n, tag, "retired packet payload");
}

/* One operation: retire the oldest packet, receive a new one. */
static inline void step(ring_t *r)
{
    uint64_t slot = r->seq % r->ring;
    unsigned char *old = r->pkt[slot];
    pkt_verify(old, r->size, pkt_tag(r, r->seq - r->ring));
    free(old);
    unsigned char *p = malloc(r->size);
    BENCH_CHECK_ALLOC(p, r->size);
    pkt_fill(p, r->size, pkt_tag(r, r->seq));
    r->pkt[slot] = p;
    r->seq++;
}

int main(int argc, char **argv)
{
    bench_parse("packet_churn", argc, argv, params, sizeof params / sizeof params[0]);
    uint64_t ops = (uint64_t)bench_geti("ops");
    uint64_t lat_ops = (uint64_t)bench_geti("lat_ops");
    uint64_t warmup = (uint64_t)bench_geti("warmup");
    ring_t r = { 0 };
    r.ring = (uint64_t)bench_geti("ring");
    r.size = (size_t)bench_geti("size");
    rng_t rng = rng_seed((uint64_t)bench_geti("seed"), 0);
    r.salt = rng_next(&rng);

    double timer_overhead = lat_calibrate();
    uint64_t *samples = bench_map(lat_ops * sizeof(uint64_t), 1);
    uint64_t *scratch = bench_map(lat_ops * sizeof(uint64_t), 0);
    r.pkt = bench_map(r.ring * sizeof(unsigned char *), 1);

    /* fill the ring: packets seq 0..ring-1 are in flight */
    for (r.seq = 0; r.seq < r.ring; r.seq++) {
        unsigned char *p = malloc(r.size);
        BENCH_CHECK_ALLOC(p, r.size);
        pkt_fill(p, r.size, pkt_tag(&r, r.seq));
        r.pkt[r.seq] = p;
    }
    for (uint64_t i = 0; i < warmup; i++)
        step(&r);

    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < ops; i++)
        step(&r);
    uint64_t t1 = now_ns();

    for (uint64_t i = 0; i < lat_ops; i++) {
        uint64_t slot = r.seq % r.ring;
        unsigned char *old = r.pkt[slot];
        pkt_verify(old, r.size, pkt_tag(&r, r.seq - r.ring));
        uint64_t a = lat_begin();
        free(old);
        unsigned char *p = malloc(r.size);
        uint64_t b = lat_end();
        BENCH_CHECK_ALLOC(p, r.size);
        pkt_fill(p, r.size, pkt_tag(&r, r.seq));
        r.pkt[slot] = p;
        r.seq++;
        samples[i] = b - a;
    }

    /* drain: every packet still in flight must be intact */
    for (uint64_t s = r.seq - r.ring; s < r.seq; s++) {
        unsigned char *p = r.pkt[s % r.ring];
        pkt_verify(p, r.size, pkt_tag(&r, s));
        free(p);
    }
    long peak = peak_rss_kb();

    bench_metric_throughput((double)ops, t1 - t0);
    lat_emit(samples, scratch, lat_ops, "50,95,99,999,max");
    lat_emit_timer(timer_overhead);
    bench_metric("peak_rss_kb", (double)peak);
    bench_emit();
    return 0;
}
