// A cache prefetch hint, which Swift does not expose. Swift inlines this `static inline` function
// into its callers, so it costs one instruction (prefetchw / prefetcht0 on x86-64, prfm on arm64).
//
// The optimizer and the forward pass of the students and the built-in teacher touch rows of a
// large parameter table in random order; asking for row k+4 while row k is updated hides much of
// the memory latency (PERF-NOTES: a dependent miss costs 370–510 ns here).
#ifndef KD_PREFETCH_H
#define KD_PREFETCH_H

#include <stddef.h>

/// Asks the CPU to bring the `bytes` bytes at `p` into cache, for writing (`write` ≠ 0) or reading.
static inline void kd_prefetch(const void *p, size_t bytes, int write) {
    const char *c = (const char *)p;
    for (size_t offset = 0; offset < bytes; offset += 64) {
        if (write) __builtin_prefetch(c + offset, 1, 3);
        else __builtin_prefetch(c + offset, 0, 3);
    }
}

#endif
