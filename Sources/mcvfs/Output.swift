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
    Log.configure(level: global.logLevel, stderr: true, file: nil, syslog: false)
    do {
        try body()
    } catch let error as ValidationError {
        throw error
    } catch let error as ExitCode {
        throw error
    } catch {
        FileHandle.standardError.write(Data("mcvfs: error: \(error)\n".utf8))
        throw ExitCode.failure
    }
}
