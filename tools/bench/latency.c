// Memory latency of random rows in a table of a given size (the sweep benchmark's limit estimate).
//
//   latency BYTES ROW_BYTES [LOADS]
//
// The table is BYTES of ROW_BYTES-sized rows (rounded down), linked into one random cycle (Sattolo's
// shuffle, fixed seed). Each row's first 8 bytes hold the address of the next. With k chains, k
// pointers walk the cycle from k evenly spaced starts in one loop: each load depends on its own
// chain's previous load only, so up to k misses can be in flight. Prints one line per k in
// 1, 2, 4, 8, 16, 32: "k ns_per_load" (wall time / total loads, LOADS loads in all, default 2^22).
// k = 1 is the dependent-load latency; the smallest ns_per_load over k gives the rows in flight
// the core sustains: latency(1) / ns_per_load(k).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t next_random(void) {
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return rng_state;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: latency BYTES ROW_BYTES [LOADS]\n"); return 2; }
    size_t bytes = strtoull(argv[1], NULL, 10), row = strtoull(argv[2], NULL, 10);
    size_t loads = argc > 3 ? strtoull(argv[3], NULL, 10) : (1u << 22);
    if (row < sizeof(void *) || row % sizeof(void *) != 0) { fprintf(stderr, "latency: ROW_BYTES must be a multiple of %zu, got %zu\n", sizeof(void *), row); return 2; }
    size_t n = bytes / row;
    if (n < 64) { fprintf(stderr, "latency: BYTES must hold at least 64 rows of %zu bytes, got %zu bytes\n", row, bytes); return 2; }
    char *table = aligned_alloc(4096, (n * row + 4095) / 4096 * 4096);
    size_t *order = malloc(n * sizeof(size_t));
    if (!table || !order) { fprintf(stderr, "latency: cannot allocate %zu bytes\n", n * row); return 1; }
    for (size_t i = 0; i < n; i++) order[i] = i;
    for (size_t i = n - 1; i > 0; i--) {          // Sattolo: one cycle through every row
        size_t j = next_random() % i, t = order[i];
        order[i] = order[j]; order[j] = t;
    }
    for (size_t i = 0; i < n * row; i += 64) table[i] = 0;   // fault every page in
    for (size_t i = 0; i < n; i++) *(void **)(table + order[i] * row) = table + order[(i + 1) % n] * row;
    static const int chains[] = {1, 2, 4, 8, 16, 32};
    uintptr_t checksum = 0;
    for (size_t c = 0; c < sizeof chains / sizeof chains[0]; c++) {
        int k = chains[c];
        void *p[32];
        for (int j = 0; j < k; j++) p[j] = table + order[(n / (size_t)k) * (size_t)j] * row;
        size_t rounds = loads / (size_t)k;
        double t0 = now();
        for (size_t r = 0; r < rounds; r++)
            for (int j = 0; j < k; j++) p[j] = *(void **)p[j];
        double t = now() - t0;
        for (int j = 0; j < k; j++) checksum += (uintptr_t)p[j];
        printf("%d %.2f\n", k, 1e9 * t / (double)(rounds * (size_t)k));
    }
    fprintf(stderr, "checksum %lu\n", (unsigned long)(checksum & 0xFFFF));
    free(order); free(table);
    return 0;
}
