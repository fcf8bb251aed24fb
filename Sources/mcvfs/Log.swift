import Foundation
import Glibc
import NodeService
import Synchronization

/// The daemon's log: lines to stderr (foreground), to a file, and to syslog (journald picks it up).
enum Log {
    enum Level: String, Comparable, CaseIterable, Sendable {
        case error, warning, info, debug

        var rank: Int { Self.allCases.firstIndex(of: self)! }
        static func < (lhs: Level, rhs: Level) -> Bool { lhs.rank < rhs.rank }

        var syslogPriority: Int32 {
            switch self {
            case .error: return LOG_ERR
            case .warning: return LOG_WARNING
            case .info: return LOG_INFO
            case .debug: return LOG_DEBUG
            }
        }
    }

    private struct Sinks {
        var level = Level.warning
        var stderr = true
        /// stderr lines as a command's messages (`mcvfs: warning: ...`), not a daemon log's timestamped lines.
        var terminal = false
        var file: FileHandle?
        var syslog = false
        /// Also gets each warning: the terminal of a daemon's parent, until the mount serves.
        var relay: (@Sendable (String) -> Void)?
    }

    private static let sinks = Mutex(Sinks())

    static func configure(level: Level, stderr: Bool, file: String?, syslog: Bool, terminal: Bool = false) {
        var handle: FileHandle?
        if let file {
            try? FileManager.default.createDirectory(
                atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            if !FileManager.default.fileExists(atPath: file) {
                _ = FileManager.default.createFile(atPath: file, contents: nil)
            }
            handle = FileHandle(forWritingAtPath: file)
            _ = try? handle?.seekToEnd()
        }
        if syslog { openlog("mcvfs", LOG_PID, LOG_DAEMON) }
        sinks.withLock {
            $0 = Sinks(
                level: level, stderr: stderr, terminal: terminal, file: handle, syslog: syslog, relay: $0.relay)
        }
    }

    /// Sends warnings to `relay` too (nil stops it).
    static func relay(_ relay: (@Sendable (String) -> Void)?) {
        sinks.withLock { $0.relay = relay }
    }

    static func error(_ message: String) { write(.error, message) }
    static func warning(_ message: String) { write(.warning, message) }
    static func info(_ message: String) { write(.info, message) }
    static func debug(_ message: String) { write(.debug, message) }

    static func write(_ level: Level, _ message: String) {
        sinks.withLock { sinks in
            if level == .warning { sinks.relay?(message) }
            guard level <= sinks.level else { return }
            let line = "\(ISO8601DateFormatter().string(from: Date())) \(level.rawValue) \(message)\n"
            if sinks.stderr {
                let text = sinks.terminal ? "mcvfs: \(level.rawValue): \(message)\n" : line
                FileHandle.standardError.write(Data(text.utf8))
            }
            sinks.file?.write(Data(line.utf8))
            if sinks.syslog {
                withVaList([message]) { vsyslog(level.syslogPriority, "%s", $0) }
            }
        }
    }
}

extension NodeLog {
    /// The node service's reports, into this process's log.
    static let process = NodeLog(info: { Log.info($0) }, warning: { Log.warning($0) })
}
