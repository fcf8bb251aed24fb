import Foundation
import OCI
import Registry
import Synchronization

/// Where a node reads one repository from: a mirror tried first when there is one, then the origin registry; or
/// nothing at all when offline (only what the local cache holds, resolved from the recorded catalog).
///
/// Catalog resolution and layer reads both go through it, so a mirror that fails is counted and logged the same
/// way wherever it fails.
public final class Upstream: Sendable {
    public struct Mirror: Sendable {
        /// `host[:port]`, as `--mirror` named it.
        public var host: String
        /// A client for `host`, holding the same repository as the origin.
        public var client: RegistryClient

        public init(host: String, client: RegistryClient) {
            self.host = host
            self.client = client
        }
    }

    /// The reference as the user named it, on the origin.
    public let reference: ImageReference
    /// nil when offline.
    public let origin: RegistryClient?
    public let mirror: Mirror?
    let log: NodeLog
    private let fallbacks = Mutex(0)

    /// - Parameters:
    ///   - origin: the reference's own registry; nil means offline (then there is no mirror either).
    ///   - mirror: tried first for every read when set.
    public init(reference: ImageReference, origin: RegistryClient?, mirror: Mirror? = nil, log: NodeLog = .silent) {
        precondition(origin != nil || mirror == nil, "an offline node has no mirror")
        self.reference = reference
        self.origin = origin
        self.mirror = mirror
        self.log = log
    }

    public var isOffline: Bool { origin == nil }

    /// The reference as the mirror names it: same repository, tag and digest, on the mirror's host.
    var mirrorReference: ImageReference? { mirror.map { reference.onRegistry($0.host) } }

    /// Where signatures are read: the origin, whose tags the signer pushed to; else the mirror.
    public var signatureClient: RegistryClient? { origin ?? mirror?.client }

    /// How often a read through the mirror failed and the origin was tried.
    public var mirrorFallbacks: Int { fallbacks.withLock { $0 } }

    /// Records that the mirror failed `what` and the origin is tried next.
    func mirrorFailed(_ what: String, _ error: any Error) {
        fallbacks.withLock { $0 += 1 }
        log.warning(
            "mirror \(mirror?.host ?? "?") failed \(what) (\(error)); falling back to the origin \(reference.registry)")
    }
}

extension ImageReference {
    /// The same repository, tag and digest on another registry: how a mirror names the reference.
    public func onRegistry(_ host: String) -> ImageReference {
        ImageReference(registry: host, repository: repository, tag: tag, digest: digest)
    }
}
