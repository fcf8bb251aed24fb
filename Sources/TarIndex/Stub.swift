// TEMPORARY stub until the TarIndex branch lands.
import OCI
public struct TarEntry: Codable, Sendable, Hashable {
    public enum Kind: String, Codable, Sendable { case file, directory, symlink, hardlink, whiteout, opaqueWhiteout }
    public var path: String
    public var kind: Kind
    public var mode: UInt32
    public var size: Int64
    public var linkTarget: String?
    public var mtime: Int64
    public var content: Digest?
}
public struct LayerIndex: Codable, Sendable { public var layer: Digest; public var entries: [TarEntry] }
