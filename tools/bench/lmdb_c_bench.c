/* The baseline for `make bench`: the same LMDB workloads as kdcache-bench, through LMDB's C API.
 *
 *   lmdb_c_bench write PATH N SIZE   bulk load N records of SIZE bytes, 8-byte big-endian keys,
 *                                    MDB_APPEND, 100k records per transaction, durable commits
 *   lmdb_c_bench scan  PATH          cursor over every record, summing one byte of each value
 *   lmdb_c_bench get   PATH N COUNT SEED   COUNT random gets, each copied into a batch row
 *   lmdb_c_bench decode PATH         cursor over every record, reading it as u32 words and summing them
 *
 * Prints "<seconds> <checksum>" so the driver can check both sides did the same work.
 */
#include <lmdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHECK(x) do { int rc_ = (x); if (rc_) { fprintf(stderr, "%s: %s\n", #x, mdb_strerror(rc_)); exit(1); } } while (0)

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

static void be64(uint64_t v, unsigned char out[8]) { for (int i = 7; i >= 0; i--) { out[i] = v & 0xff; v >>= 8; } }

static MDB_env *open_env(const char *path, unsigned flags) {
    MDB_env *env;
    CHECK(mdb_env_create(&env));
    CHECK(mdb_env_set_mapsize(env, (size_t)64 << 30));
    CHECK(mdb_env_set_maxdbs(env, 4));
    CHECK(mdb_env_open(env, path, MDB_NOSUBDIR | flags, 0644));
    return env;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: see the comment at the top\n"); return 2; }
    const char *mode = argv[1], *path = argv[2];
    if (!strcmp(mode, "write")) {
        long n = atol(argv[3]), size = atol(argv[4]);
        unlink(path);
        MDB_env *env = open_env(path, 0);
        unsigned char *value = malloc(size), key[8];
        double t0 = now();
        MDB_txn *txn; MDB_dbi dbi;
        CHECK(mdb_txn_begin(env, NULL, 0, &txn));
        CHECK(mdb_dbi_open(txn, "bench", MDB_CREATE, &dbi));
        for (long i = 0; i < n; i++) {
            if (i > 0 && i % 100000 == 0) { CHECK(mdb_txn_commit(txn)); CHECK(mdb_txn_begin(env, NULL, 0, &txn)); }
            memset(value, (int)(i & 0xff), size);
            be64((uint64_t)i, key);
            MDB_val k = {8, key}, v = {(size_t)size, value};
            CHECK(mdb_put(txn, dbi, &k, &v, MDB_APPEND));
        }
        CHECK(mdb_txn_commit(txn));
        printf("%.6f %ld\n", now() - t0, n);
        mdb_env_close(env);
    } else if (!strcmp(mode, "scan")) {
        MDB_env *env = open_env(path, MDB_RDONLY);
        MDB_txn *txn; MDB_dbi dbi; MDB_cursor *cur; MDB_val k, v;
        double t0 = now();
        CHECK(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn));
        CHECK(mdb_dbi_open(txn, "bench", 0, &dbi));
        CHECK(mdb_cursor_open(txn, dbi, &cur));
        uint64_t sum = 0; int rc;
        while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) sum += ((unsigned char *)v.mv_data)[v.mv_size - 1] + v.mv_size;
        if (rc != MDB_NOTFOUND) CHECK(rc);
        mdb_cursor_close(cur);
        mdb_txn_abort(txn);
        printf("%.6f %llu\n", now() - t0, (unsigned long long)sum);
        mdb_env_close(env);
    } else if (!strcmp(mode, "decode")) {
        MDB_env *env = open_env(path, MDB_RDONLY);
        MDB_txn *txn; MDB_dbi dbi; MDB_cursor *cur; MDB_val k, v;
        double t0 = now();
        CHECK(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn));
        CHECK(mdb_dbi_open(txn, "bench", 0, &dbi));
        CHECK(mdb_cursor_open(txn, dbi, &cur));
        uint64_t sum = 0; int rc;
        while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
            const unsigned char *p = v.mv_data;
            for (size_t i = 0; i + 4 <= v.mv_size; i += 4) { uint32_t w; memcpy(&w, p + i, 4); sum += w; }
        }
        if (rc != MDB_NOTFOUND) CHECK(rc);
        mdb_cursor_close(cur);
        mdb_txn_abort(txn);
        printf("%.6f %llu\n", now() - t0, (unsigned long long)sum);
        mdb_env_close(env);
    } else if (!strcmp(mode, "get")) {
        long n = atol(argv[3]), count = atol(argv[4]);
        uint64_t state = strtoull(argv[5], NULL, 10) * 0x9E3779B97F4A7C15ULL + 1;
        MDB_env *env = open_env(path, MDB_RDONLY);
        MDB_txn *txn; MDB_dbi dbi; MDB_val k, v;
        unsigned char key[8], *batch = malloc(1 << 20);
        double t0 = now();
        CHECK(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn));
        CHECK(mdb_dbi_open(txn, "bench", 0, &dbi));
        uint64_t sum = 0;
        for (long i = 0; i < count; i++) {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;   /* xorshift64 */
            be64(state % (uint64_t)n, key);
            k.mv_size = 8; k.mv_data = key;
            CHECK(mdb_get(txn, dbi, &k, &v));
            memcpy(batch + (i % 256) * 4096 % (1 << 20), v.mv_data, v.mv_size > 4096 ? 4096 : v.mv_size);
            sum += batch[(i % 256) * 4096 % (1 << 20)] + v.mv_size;
        }
        mdb_txn_abort(txn);
        printf("%.6f %llu\n", now() - t0, (unsigned long long)sum);
        mdb_env_close(env);
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    return 0;
}
