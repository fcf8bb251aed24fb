import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// AMD GPUs as the amdgpu kernel driver (KFD) lists them under `/sys/class/kfd/kfd/topology/nodes/<n>/properties`,
/// the same source ROCr reads; no ROCm userspace is needed (docs/gpu-targets.md).
enum KFDTopology {
    static let defaultRoot = "/sys/class/kfd/kfd/topology/nodes"

    /// One GPU node: its directory name, `gfx_target_version` and `wave_front_size` (nil when absent or 0).
    struct GPUNode: Equatable {
        var node: String
        var gfxTargetVersion: UInt64
        var waveFrontSize: Int?
    }

    /// Parses a `properties` file: one `key value` pair per line, values decimal. Other lines are ignored.
    static func parseProperties(_ text: String) -> [String: UInt64] {
        var properties: [String: UInt64] = [:]
        for line in text.split(whereSeparator: \.isNewline) {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count == 2, let value = UInt64(fields[1]) else { continue }
            properties[String(fields[0])] = value
        }
        return properties
    }

    /// The LLVM processor name for a `gfx_target_version`: `gfx<major><minor hex><stepping hex>`
    /// (90010 -> gfx90a, 90402 -> gfx942, 110000 -> gfx1100, 100300 -> gfx1030). Nil for 0 (a CPU node) and for
    /// values whose minor or stepping does not fit one hex digit, which no real ISA has.
    static func gfxName(version: UInt64) -> String? {
        let major = version / 10000
        let minor = (version / 100) % 100
        let stepping = version % 100
        guard major > 0, minor < 16, stepping < 16 else { return nil }
        return "gfx\(major)" + String(minor, radix: 16) + String(stepping, radix: 16)
    }

    /// Wave size when a node does not report one: 64 on GCN/CDNA (gfx9 and older), 32 on RDNA (gfx10 and newer),
    /// which is what RDNA runs in by default and what Triton's HIP driver reports.
    static func defaultWaveFrontSize(version: UInt64) -> Int {
        version / 10000 < 10 ? 64 : 32
    }

    /// Every node under `root` whose `gfx_target_version` is non-zero, in numeric node order.
    ///
    /// A missing root means "no AMD GPU" (no amdgpu driver) and yields nothing; unreadable nodes are problems.
    static func gpuNodes(root: String) -> (nodes: [GPUNode], problems: [GPUError]) {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: root)
        } catch {
            if !FileManager.default.fileExists(atPath: root) { return ([], []) }
            return ([], [.unreadableTopology(path: root, reason: reason(error))])
        }
        var nodes: [GPUNode] = []
        var problems: [GPUError] = []
        for name in names.sorted(by: nodeOrder) {
            let path = root + "/" + name + "/properties"
            let text: String
            do {
                text = try readWholeFile(path)
            } catch {
                problems.append(.unreadableTopology(path: path, reason: reason(error)))
                continue
            }
            let properties = parseProperties(text)
            guard let version = properties["gfx_target_version"], version != 0 else { continue }  // CPU node
            let wave = properties["wave_front_size"].flatMap { $0 == 0 ? nil : Int($0) }
            nodes.append(GPUNode(node: name, gfxTargetVersion: version, waveFrontSize: wave))
        }
        return (nodes, problems)
    }

    /// Numeric order for node directories (`2` before `10`), names that are not numbers last.
    private static func nodeOrder(_ a: String, _ b: String) -> Bool {
        switch (Int(a), Int(b)) {
        case (let x?, let y?): return x < y
        case (.some, nil): return true
        case (nil, .some): return false
        case (nil, nil): return a < b
        }
    }

    private static func reason(_ error: any Error) -> String {
        (error as? ReadFailure)?.description ?? error.localizedDescription
    }

    /// Why a sysfs file was not read: the `errno` its `open` or `read` set.
    private struct ReadFailure: Error, CustomStringConvertible {
        var errno: Int32
        var description: String { String(cString: strerror(errno)) }
    }

    /// Reads a file until EOF. sysfs reports every attribute as 4096 bytes long, so the size from `stat` is no guide.
    private static func readWholeFile(_ path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ReadFailure(errno: errno) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw ReadFailure(errno: errno)
            }
            if count == 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
