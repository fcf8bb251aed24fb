import ContentHash
import Foundation
import LayerArchive
import OCI
import Synchronization

/// Indexes eStargz layers from their TOC alone: the footer, then the TOC, by range, the TOC checked against the
/// layer's `toc.digest` annotation (which pins every file's digest) before anything of it is used. Indexes built
/// here live in memory until `persist`: encoding thousands of entries and a sync wait until the first kernels are
/// served.
final class TOCIndexer: Sendable {
    private let unsaved = Mutex<[Digest: LayerIndex]>([:])

    /// An index built in this process and not yet persisted.
    func unsaved(_ layer: Digest) -> LayerIndex? { unsaved.withLock { $0[layer] } }

    /// Fetches, verifies and indexes `reader`'s layer (`keep` it until `persist`).
    /// - Throws: `TarError.corrupt` for a malformed annotation, footer or TOC; `FetchError.tocDigestMismatch`;
    ///   `TarError` for hostile entries; registry errors.
    func index(annotation: String, reader: LayerBlobReader) throws -> LayerIndex {
        let layer = reader.layer
        let expected: Digest
        do { expected = try Digest(parsing: annotation) } catch {
            throw TarError.corrupt(path: nil, reason: "layer \(layer.digest.short): bad toc.digest '\(annotation)'")
        }
        let footerStart = layer.size - Int64(EStargz.footerSize)
        guard footerStart > 0 else {
            throw TarError.corrupt(path: nil, reason: "layer \(layer.digest.short) is too small for eStargz")
        }
        let footer = try reader.read(footerStart..<layer.size)
        let tocOffset = try EStargz.tocOffset(footer: [UInt8](footer))
        guard tocOffset < footerStart, footerStart - tocOffset <= EStargz.maxTOCSize else {
            throw TarError.corrupt(
                path: nil, reason: "layer \(layer.digest.short): TOC offset \(tocOffset) out of range")
        }
        let json = try EStargz.tocJSON(fromMember: try reader.read(tocOffset..<footerStart))
        let actual = SHA256Hasher.digest(json)
        guard actual == expected else {
            throw LayerFetcher.FetchError.tocDigestMismatch(layer: layer.digest, expected: expected, actual: actual)
        }
        return try EStargz.index(layer: layer.digest, toc: json, tocOffset: tocOffset, tocDigest: actual)
    }

    /// Holds `index` (served by `unsaved`) until `persist` saves it.
    func keep(_ index: LayerIndex) { unsaved.withLock { $0[index.layer] = index } }

    /// Replaces the unsaved index of `index`'s layer, if there is one; false when there is none (it was saved).
    func replaceUnsaved(_ index: LayerIndex) -> Bool {
        unsaved.withLock { unsaved in
            guard unsaved[index.layer] != nil else { return false }
            unsaved[index.layer] = index
            return true
        }
    }

    /// Saves the indexes built here; one that fails stays for the next call.
    /// - Returns: the failures, for the caller to report.
    func persist(into indexes: LayerIndexCache) -> [any Error] {
        var failures: [any Error] = []
        for (digest, index) in unsaved.withLock({ $0 }) {
            do {
                try indexes.save(index)
                // Unless a newer one (naming a prefetch's pack) replaced it meanwhile: that one is saved next time.
                unsaved.withLock { if $0[digest]?.pack == index.pack { $0[digest] = nil } }
            } catch {
                failures.append(error)
            }
        }
        return failures
    }
}
