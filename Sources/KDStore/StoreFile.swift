import Foundation
import LMDB

/// Opens `path` read-only and reads the manifest's `format`; errors name the file and say why.
public func openStoreFile(_ path: String, writable: Bool = false) throws -> (Environment, StoreKind, [UInt8]) {
    let env: Environment
    do {
        env = try Environment(path: path, options: writable ? [] : .readOnly)
    } catch let error as LMDBError {
        switch error.code {
        case ENOENT: throw StoreError(path: path, message: "no such file", hint: "Check the path")
        case EACCES, EPERM: throw StoreError(path: path, message: "permission denied", hint: "Check the permissions of the file and its directories")
        case LMDBError.invalid.code, LMDBError.versionMismatch.code:
            throw StoreError(path: path, message: "not an LMDB file", hint: "Pass a store written by kdcache")
        case LMDBError.corrupted.code:
            throw StoreError(path: path, message: "damaged LMDB file (\(error.context))",
                             hint: "Copy the file again from its source")
        default: throw StoreError(path: path, message: "cannot open: \(error)")
        }
    }
    let meta: Database
    do { meta = try env.openDatabase(named: DatabaseName.meta) } catch {
        throw StoreError(path: path, message: "an LMDB file but not a kdcache store (no 'meta' database)")
    }
    guard let manifest = try env.read({ txn throws in try ManifestIO.readBytes(in: txn, meta: meta) }) else {
        throw StoreError(path: path, message: "not a complete kdcache store (no manifest)",
                         hint: "It may be a partial file from an interrupted run; recreate it")
    }
    struct Head: Decodable { var format: String; var schemaVersion: Int }
    guard let head = try? ManifestCoding.decode(Head.self, from: manifest), let kind = StoreKind(rawValue: head.format) else {
        throw StoreError(path: path, message: "unreadable manifest", hint: "The file is damaged; recreate it")
    }
    return (env, kind, manifest)
}
