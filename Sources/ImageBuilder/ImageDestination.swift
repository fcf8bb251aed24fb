import Foundation
import OCI

/// Where built images go: a registry (blobs first, manifest last, so a failure never leaves a tag naming missing
/// blobs) or an OCI image layout directory.
public protocol ImageDestination {
    /// Stores `image` under `tag` and returns its manifest digest.
    func publish(_ image: BuiltImage, tag: String, progress: PublishProgress) throws -> Digest
}

/// Progress of a publish, in bytes and blobs, for a progress bar.
public final class PublishProgress: @unchecked Sendable {
    public private(set) var totalBytes: Int64 = 0
    public private(set) var doneBytes: Int64 = 0
    public private(set) var totalBlobs = 0
    public private(set) var doneBlobs = 0
    public private(set) var skippedBlobs = 0
    private let onChange: (PublishProgress) -> Void

    public init(onChange: @escaping (PublishProgress) -> Void = { _ in }) { self.onChange = onChange }

    public func expect(blobs: Int, bytes: Int64) {
        totalBlobs += blobs
        totalBytes += bytes
        onChange(self)
    }

    /// `bytes` more of the current blob were sent.
    func advance(_ bytes: Int64) {
        doneBytes += bytes
        onChange(self)
    }

    func finishedBlob(skipped: Bool) {
        doneBlobs += 1
        if skipped { skippedBlobs += 1 }
        onChange(self)
    }
}
