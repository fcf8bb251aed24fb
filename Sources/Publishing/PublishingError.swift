import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Why a publish or a compaction could not be done.
public enum PublishingError: Error, Equatable, CustomStringConvertible {
    case io(operation: String, path: String, Int32)
    /// The registry holds something under a fleet tag that is not what the tag names.
    case tagMismatch(tag: String, digest: String)
    /// A record of merged tags that does not parse.
    case malformedRecord(image: String, reason: String)
    /// The image's signature by this key was gone each time it was checked after signing (signers racing).
    case signatureLost(digest: String, attempts: Int)
    /// A merge of one target's images that did not make exactly one image.
    case unexpectedMerge(target: String, images: Int)

    public var description: String {
        switch self {
        case .io(let operation, let path, let code):
            return "\(operation) \(path) failed: \(String(cString: strerror(code)))"
        case .tagMismatch(let tag, let digest):
            return "\(tag) names \(digest), which is not the image its name gives (someone moved the tag)"
        case .malformedRecord(let image, let reason):
            return "\(image): its record of merged tags is unreadable: \(reason)"
        case .signatureLost(let digest, let attempts):
            return "\(digest): this key's signature did not stay in the registry after \(attempts) attempts "
                + "(other signers rewriting the same signature lists)"
        case .unexpectedMerge(let target, let images):
            return "merging the images of \(target) made \(images) images, not one"
        }
    }
}
