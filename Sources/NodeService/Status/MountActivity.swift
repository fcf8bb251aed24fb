import Foundation
import MetricsEndpoint
import OCI

/// Work a mount runs beside serving that is defined above the node service (automatic publishing): the node
/// runtime puts its status in `status.json` and its counters in the scrape without knowing its type.
public protocol MountActivity: Sendable {
    /// Its part of the status document as `viewer` may read it (nil: root or the mount's owner, who see all; a
    /// user sees what concerns their own upper), as JSON (`JSONValue(encoding:)`); nil when it cannot be encoded.
    func statusSection(for viewer: UInt32?) -> JSONValue?
    /// Its counters and gauges, as the scrape lists them.
    var metricFamilies: [MetricFamily] { get }
}

extension JSONValue {
    /// `value` as the status document spells it (dates as RFC 3339): a section whose type this layer does not know.
    public init(encoding value: some Encodable) throws {
        self = try MountStatus.decoder.decode(JSONValue.self, from: try MountStatus.encoder.encode(value))
    }

    /// The section read back as its owner's type.
    public func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try MountStatus.decoder.decode(type, from: try MountStatus.encoder.encode(self))
    }
}
