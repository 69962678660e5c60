import Foundation
import Testing
import KDTestSupport

/// Through the built binary: a file that is not a store gets no lock file beside it, a damaged
/// store is an error naming the page (never a crash), and a full file system never raises SIGBUS.
@Suite struct SafeOpenCLITests {
    static let fortunes = repositoryRoot + "/fixtures/fortunes/fortunes.csv"

    func prepFortunes(in dir: String) throws -> String {
        let out = dir + "/f.lmdb"
        let prep = try kdcache(["prep", Self.fortunes, "--out", out, "--text-column", "text", "--label-column", "label",
                                "--id-column", "id", "--quiet"])
        #expect(prep.status == 0, "\(prep.output)")
        try? FileManager.default.removeItem(atPath: out + "-lock")
        return out
    }

    @Test func infoAndVerifyOnACSVLeaveNoLockFile() throws {
        let dir = try temporaryDirectory()
        let csv = dir + "/fortunes.csv"
        try FileManager.default.copyItem(atPath: Self.fortunes, toPath: csv)
        for command in ["info", "verify"] {
            let result = try kdcache([command, csv])
            #expect(result.status == 1, "\(command): \(result.output)")
            #expect(result.stderr.contains("fortunes.csv: not an LMDB file. Pass a store written by kdcache"), "\(result.stderr)")
        }
        #expect(directoryListing(dir) == ["fortunes.csv"])
    }

    @Test func aDamagedStoreIsAnErrorNamingThePageNotACrash() throws {
        let dir = try temporaryDirectory()
        let store = try prepFortunes(in: dir)
        // Zero every page whose header says it is a leaf: at least one of them is in use.
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: store)))
        var zeroed = 0
        for page in 2..<(bytes.count / 4096) where bytes[page * 4096 + 10] == 0x02 && page % 7 == 3 {
            for o in (page * 4096)..<((page + 1) * 4096) { bytes[o] = 0 }
            zeroed += 1
        }
        #expect(zeroed > 0)
        try writeFile(store, bytes)
        for arguments in [["info", store], ["verify", store], ["export", store, "--out", dir + "/x.jsonl"]] {
            let result = try kdcache(arguments)
            #expect(result.status == 1, "\(arguments[0]): \(result.output)")
            #expect(result.stderr.contains("f.lmdb: damaged LMDB file: page "), "\(arguments[0]): \(result.stderr)")
            // verify (and export, which verifies first) lists every page problem itself; info points to it.
            #expect(result.stderr.contains(arguments[0] != "info" ? "Copy the file again from its source" : "Run kdcache verify"), "\(result.stderr)")
        }
        #expect(directoryListing(dir) == ["f.lmdb"])
    }

    /// A real full file system: a tmpfs mounted in a private user and mount namespace (as the
    /// Python test of plan sizes does), filled to the last block. The store on it has no lock
    /// file. Readers open without one; a writer says there is no space; nothing raises SIGBUS.
    @Test func aFullFileSystemGivesNoSpaceErrorsNeverSIGBUS() throws {
        let dir = try temporaryDirectory()
        let store = try prepFortunes(in: dir)
        let size = try (FileManager.default.attributesOfItem(atPath: store)[.size] as? NSNumber)?.intValue ?? 0
        let tiny = dir + "/tiny"
        try FileManager.default.createDirectory(atPath: tiny, withIntermediateDirectories: true)
        let sizeKiB = size / 1024 + 256
        let script = """
            mount -t tmpfs -o size=\(sizeKiB)k none \(tiny) || exit 99
            cp \(store) \(tiny)/f.lmdb
            dd if=/dev/zero of=\(tiny)/fill bs=4096 2>/dev/null; sync
            echo free=$(df -k --output=avail \(tiny) | tail -1 | tr -d ' ')
            \(kdcacheBinary) info \(tiny)/f.lmdb; echo info=$?
            \(kdcacheBinary) verify \(tiny)/f.lmdb; echo verify=$?
            \(kdcacheBinary) prep \(Self.fortunes) --out \(tiny)/new.lmdb --text-column text --label-column label --quiet; echo prep=$?
            cmp -s \(store) \(tiny)/f.lmdb && echo same=yes
            echo left=$(ls -A \(tiny) | tr '\\n' ' ')
            """
        // A private mount namespace: through a user namespace, or directly when running as root.
        var result = CommandResult(status: -1, stdout: "", stderr: "")
        for prefix in [["unshare", "--user", "--map-root-user", "--mount"], ["unshare", "--mount"]] {
            result = try run(prefix + ["sh", "-c", script])
            if result.status == 0 { break }
        }
        #expect(result.status == 0, "no private mount namespace for the small file system: \(result.output)")
        #expect(result.stdout.contains("free=0\n"), "the file system is full: \(result.stdout)")
        #expect(result.stdout.contains("info=0\n") && result.stdout.contains("kind:        dataset store"), "\(result.output)")
        #expect(result.stdout.contains("verify=0\n") && result.stdout.contains("f.lmdb: valid"), "\(result.output)")
        #expect(result.stdout.contains("prep=1\n"), "\(result.output)")
        #expect(result.stderr.contains("no space left on the file system of \(tiny)/new.lmdb"), "\(result.stderr)")
        // prep builds under a temporary name with no lock file, so what it needs is not known yet.
        #expect(result.stderr.contains(": need more than is free, have 0 B"), "\(result.stderr)")
        #expect(!result.output.contains("Bus error") && !result.output.contains("crashed"), "\(result.output)")
        #expect(result.stdout.contains("same=yes"), "the store is untouched")
        #expect(result.stdout.contains("left=f.lmdb fill\n"), "no lock file, no partial output: \(result.stdout)")
    }

    func run(_ arguments: [String]) throws -> CommandResult { try runProcess("/usr/bin/env", arguments) }
}
