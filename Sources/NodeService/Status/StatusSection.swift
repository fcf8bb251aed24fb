import Foundation
import MetricsEndpoint

/// A part of `status.json` that work defined above the node service owns (automatic publishing's): carried as the
/// JSON its owner encoded, so that the node writes and reads the document without knowing the part's type. The
/// owner encodes its status into a section (`init(encoding:)`) and reads it back (`decode(_:)`).
public enum StatusSection: Codable, Sendable, Equatable {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([StatusSection])
    case object([String: StatusSection])

    /// `value` as the status document spells it (dates as RFC 3339).
    public init(encoding value: some Encodable) throws {
        self = try MountStatus.decoder.decode(StatusSection.self, from: try MountStatus.encoder.encode(value))
    }

    /// The owner's status type, read back from the section.
    public func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try MountStatus.decoder.decode(type, from: try MountStatus.encoder.encode(self))
    }

    public init(from decoder: any Decoder) throws {
        let value = try decoder.singleValueContainer()
        if value.decodeNil() {
            self = .null
        } else if let bool = try? value.decode(Bool.self) {
            self = .bool(bool)
        } else if let integer = try? value.decode(Int64.self) {
            self = .integer(integer)
        } else if let number = try? value.decode(Double.self) {
            self = .number(number)
        } else if let string = try? value.decode(String.self) {
            self = .string(string)
        } else if let array = try? value.decode([StatusSection].self) {
            self = .array(array)
        } else {
            self = .object(try value.decode([String: StatusSection].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var value = encoder.singleValueContainer()
        switch self {
        case .null: try value.encodeNil()
        case .bool(let bool): try value.encode(bool)
        case .integer(let integer): try value.encode(integer)
        case .number(let number): try value.encode(number)
        case .string(let string): try value.encode(string)
        case .array(let array): try value.encode(array)
        case .object(let object): try value.encode(object)
        }
    }
}

/// Work a mount runs beside serving that is defined above the node service (automatic publishing): the node
/// runtime puts its status in `status.json` and its counters in the scrape without knowing its type.
public protocol MountActivity: Sendable {
    /// Its part of the status document; nil when it cannot be encoded.
    var statusSection: StatusSection? { get }
    /// Its counters and gauges, as the scrape lists them.
    var metricFamilies: [MetricFamily] { get }
}
