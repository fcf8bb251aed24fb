/// How much one publish takes from the uppers, which users fill: a file larger than `fileBytes` refuses its
/// entry, and entries stop being taken once `publishBytes` are staged (the rest wait for the next publish, which
/// takes them while they fit). Files are copied in bounded chunks, never read whole, so memory stays flat whatever
/// the sizes; the limits bound the disk and the registry traffic. Triton's kernel files are kilobytes to a few
/// megabytes, so the defaults leave room for far larger kernels.
public struct PublishLimits: Sendable, Equatable {
    public static let defaultFileBytes: Int64 = 256 << 20
    public static let defaultPublishBytes: Int64 = 2 << 30
    /// Group files and kernel metadata (`<name>.json`) are parsed whole, by the publish and by every mount that
    /// serves them; real ones are a few KiB.
    public static let jsonBytes: Int64 = 1 << 20

    public var fileBytes: Int64
    public var publishBytes: Int64

    public init(fileBytes: Int64 = Self.defaultFileBytes, publishBytes: Int64 = Self.defaultPublishBytes) {
        self.fileBytes = fileBytes
        self.publishBytes = publishBytes
    }

    /// The most bytes `name` may have.
    public func limit(for name: String) -> Int64 {
        name.hasSuffix(".json") ? min(Self.jsonBytes, fileBytes) : fileBytes
    }
}
