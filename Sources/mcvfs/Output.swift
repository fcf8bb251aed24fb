import ArgumentParser
import Foundation
import NodeService

func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

func printColumns(_ rows: [[String]]) {
    guard let first = rows.first else { return }
    let widths = first.indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
    for row in rows {
        let cells = row.enumerated().map { i, cell in
            i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0)
        }
        print(cells.joined(separator: "  "))
    }
}

func formatBytes(_ bytes: Int64) -> String { ByteSize.format(bytes) }

/// Runs a command body so that any failure prints one line, `mcvfs: error: <what>`, and exits 1.
func runReportingErrors(_ global: GlobalOptions, _ body: () throws -> Void) throws {
    Log.configure(level: global.logLevel, stderr: true, file: nil, syslog: false, terminal: true)
    do {
        try body()
    } catch let error as ValidationError {
        throw error
    } catch let error as ExitCode {
        throw error
    } catch {
        reportError(error)
        throw ExitCode.failure
    }
}

/// Prints the one line `mcvfs: error: <what>`.
func reportError(_ error: any Error) {
    FileHandle.standardError.write(Data("mcvfs: error: \(describe(error))\n".utf8))
}

/// An error as one line that names what to fix. Foundation's file errors print as
/// `Error Domain=NSCocoaErrorDomain Code=513 ...`: they are said as the OS says them, with the path.
func describe(_ error: any Error) -> String {
    guard let cocoa = error as? CocoaError else { return "\(error)" }
    let path = cocoa.filePath ?? cocoa.url?.path ?? "?"
    switch cocoa.code {
    case .fileWriteNoPermission, .fileReadNoPermission: return "permission denied: \(path)"
    case .fileNoSuchFile, .fileReadNoSuchFile: return "no such file or directory: \(path)"
    case .fileWriteOutOfSpace: return "no space left on device: \(path)"
    case .fileWriteFileExists: return "already exists: \(path)"
    case .fileWriteVolumeReadOnly: return "read-only file system: \(path)"
    default: return "\(path): \(cocoa.localizedDescription)"
    }
}

/// What `push`, `convert` and `fetch` print with `--json` for each image: the shape `ls` and `status` use for an
/// image (`name`, `digest`).
struct ImageOutput: Encodable {
    var name: String
    var digest: String
}
