import Foundation

/// Sizes as operators write them on command lines: `2G`, `512M`, `1.5GiB`, `1048576`. Units are powers of 1024,
/// as `du -h` and Kubernetes' `Gi` mean them; `B`, `iB` suffixes and lower case are accepted.
public enum ByteSize {
    /// - Throws: `ServiceError.invalidSize` for anything else, negative numbers and overflow included.
    public static func parse(_ text: String) throws(ServiceError) -> Int64 {
        var rest = Substring(text.trimmingCharacters(in: .whitespaces).lowercased())
        if rest.hasSuffix("ib") {
            rest = rest.dropLast(2)
        } else if rest.hasSuffix("b") {
            rest = rest.dropLast()
        }
        let units: [Character] = ["k", "m", "g", "t", "p"]
        var multiplier: Double = 1
        if let last = rest.last, let power = units.firstIndex(of: last) {
            multiplier = pow(1024, Double(power + 1))
            rest = rest.dropLast()
        }
        guard !rest.isEmpty, rest.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }),
            let number = Double(rest), number >= 0
        else { throw .invalidSize(text) }
        let bytes = (number * multiplier).rounded(.down)
        guard bytes < 9.2e18 else { throw .invalidSize(text) }
        return Int64(bytes)
    }

    /// `bytes` as people read sizes: `512 B`, `1.5 KiB`, `20.0 GiB` (powers of 1024, one decimal).
    public static func format(_ bytes: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
    }
}
