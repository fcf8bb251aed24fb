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
    /// A merge of one target's images that did not make exactly one image, for that target (`made`: the targets
    /// of each image it made).
    case unexpectedMerge(target: String, made: [[String]])

    public var description: String {
        switch self {
        case .io(let operation, let path, let code):
            return "\(operation) \(path) failed: \(String(cString: strerror(code)))"
        case .tagMismatch(let tag, let digest):
            return "\(tag) names \(digest), which is not the image its name gives (someone moved the tag)"
        case .malformedRecord(let image, let reason):
            return "\(image): its record of merged tags is unreadable: \(reason)"
        case .unexpectedMerge(let target, let made):
            return "merging the images of \(target) made \(made.count) image(s) for \(made), not one for \(target)"
        }
    }
}
