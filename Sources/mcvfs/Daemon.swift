import ArgumentParser
import Foundation
import Glibc

/// Backgrounding without fork: the command re-runs itself with `--foreground` as a child in its own session,
/// whose stdout is a pipe that carries `warning ...` lines, then one line, `ready ...` or `error ...`. The parent
/// prints them (warnings to stderr: a fallback or a doubtful argument is said on the terminal, not only in the log)
/// and exits; the child then points stdout and stderr at /dev/null and keeps serving.
struct Daemon {
    static let childVariable = "MCVFS_DAEMON_CHILD"

    let isChild = ProcessInfo.processInfo.environment[Daemon.childVariable] != nil

    init() {
        if isChild {
            setsid()
            Log.relay { message in Daemon.report("warning \(message)") }
        }
    }

    static func startInBackground(arguments: [String]) throws {
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        child.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment[childVariable] = "1"
        child.environment = environment
        let pipe = Pipe()
        child.standardOutput = pipe
        child.standardError = FileHandle.nullDevice
        child.standardInput = FileHandle.nullDevice
        try child.run()
        try? pipe.fileHandleForWriting.close()
        var received = Data()
        var line = ""
        reading: while true {
            while let newline = received.firstIndex(of: UInt8(ascii: "\n")) {
                line = String(decoding: received[..<newline], as: UTF8.self)
                received = received[(newline + 1)...]
                guard line.hasPrefix("warning ") else { break reading }
                FileHandle.standardError.write(Data("mcvfs: warning: \(line.dropFirst("warning ".count))\n".utf8))
                line = ""
            }
            guard let chunk = try pipe.fileHandleForReading.read(upToCount: 4096), !chunk.isEmpty else { break }
            received.append(chunk)
        }
        if line.hasPrefix("ready ") {
            print(line.dropFirst("ready ".count))
            return
        }
        let reason =
            line.hasPrefix("error ")
            ? String(line.dropFirst("error ".count)) : "the mount daemon exited before it was ready"
        FileHandle.standardError.write(Data("mcvfs: error: \(reason)\n".utf8))
        throw ExitCode.failure
    }

    /// Tells the waiting parent (if any) that the mount serves.
    func ready(message: String) {
        if isChild {
            Log.relay(nil)
            Self.report("ready \(message)")
            let null = open("/dev/null", O_RDWR)
            dup2(null, STDOUT_FILENO)
            dup2(null, STDERR_FILENO)
            close(null)
        }
    }

    func failed(_ reason: String) {
        if isChild {
            Log.relay(nil)
            Self.report("error \(reason)")
        }
    }

    private static func report(_ line: String) {
        FileHandle.standardOutput.write(Data((line.replacingOccurrences(of: "\n", with: " ") + "\n").utf8))
    }

    /// A file-name-safe form of a mountpoint for the log name.
    static func logName(for mountpoint: String) -> String {
        let safe = mountpoint.map { $0.isLetter || $0.isNumber ? $0 : "-" }
        return String(safe).trimmingCharacters(in: CharacterSet(charactersIn: "-"))
    }
}
