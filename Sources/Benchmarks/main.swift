// kdcache-bench: the Swift side of `make bench`, the same workloads as tools/bench/lmdb_c_bench.c
// through the LMDB wrapper, and through the KDStore record codecs.
//
//   kdcache-bench write PATH N SIZE         bulk load: 8-byte big-endian keys, MDB_APPEND, 100k per txn
//   kdcache-bench scan  PATH                cursor over every record, summing one byte of each value
//   kdcache-bench get   PATH N COUNT SEED   COUNT random gets, each copied into a batch row
//   kdcache-bench decode PATH               cursor over every record, reading it as u32 words and summing them
//   kdcache-bench softlabels PATH N C       write N dense f16 C-class soft-label records (SoftLabelWriter)
//   kdcache-bench softlabel-table PATH      open the cache's table: every record's CRC and value checks
//   kdcache-bench fused DATA TEACHER K EPOCHS [ALONE]  K linear KD students fused in one group vs ALONE of them run one by one
//   kdcache-bench token-train V d B POSITIONS   the token student (issue 13) on synthetic records: "token-train positions/s: N"
//   kdcache-bench token-loss INPUT.json         one position's token loss and gradient (tools/python/tests/test_token_loss.py)
//
// Prints "<seconds> <checksum>"; tools/bench/run_bench.py compares it with the C and Python runs.
import Foundation

let arguments = CommandLine.arguments
guard arguments.count >= 3 else {
    FileHandle.standardError.write(Data("usage: see the header of main.swift\n".utf8))
    exit(2)
}
try Workloads.run(arguments)
