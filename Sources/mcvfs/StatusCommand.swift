import ArgumentParser
import Foundation
import NodeService
import Publishing
import Synchronization

/// `mcvfs status`: what each running mount uses, skips, fetched and failed, read from its `/.mcvfs/status.json`.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show what running mcvfs mounts use and skip, what they fetched, and their errors.",
        discussion: """
            Mounts are found in /proc/self/mountinfo (type fuse.mcvfs); each daemon's own report is read from \
            <mountpoint>/.mcvfs/status.json. A mount whose daemon is gone is listed as stale, with how to clear it. \
            --json prints one object, {"mounts": [...]}, whatever the arguments; each entry has a `state` (serving, \
            stale, not-responding, unreadable). Exits 0 whatever the mounts' states, except with MOUNTPOINT: then it \
            exits 1 unless that mount serves, so it works as a readiness probe.
            """)

    @Flag(help: "Print JSON: {\"mounts\": [...]}, one entry per mount, with MOUNTPOINT or without.") var json = false
    @Argument(help: "One mountpoint (default: every mcvfs mount).") var mountpoint: String?

    enum ReadProblem: Error, CustomStringConvertible {
        /// The read failed with `errno` (`ENOTCONN`: the mount's daemon is gone).
        case failed(file: String, errno: Int32)
        /// The read gave no answer within the limit (a hung mount).
        case notResponding(file: String, seconds: Int)

        var stale: Bool {
            if case .failed(_, let code) = self { return code == ENOTCONN }
            return false
        }

        var description: String {
            switch self {
            case .failed(let file, let code): return "cannot read \(file) (\(String(cString: strerror(code))))"
            case .notResponding(let file, let seconds):
                return "not responding: \(file) gave no answer within \(seconds) s"
            }
        }
    }

    /// Reads `file` on another thread and gives up after `limit` seconds: a hung mount (a stopped daemon) must not hang
    /// the status command or a readiness probe. A read left behind is killed with the process.
    static func read(_ file: String, withinSeconds limit: Int) -> Result<Data, ReadProblem> {
        let result = Mutex<Result<Data, ReadProblem>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            // To EOF: the daemon renders the document anew on each open, so its size from a `stat` may be short.
            let read = WholeFile.read(file).mapError { ReadProblem.failed(file: file, errno: $0.errno) }
            result.withLock { $0 = read }
            done.signal()
        }
        guard done.wait(timeout: .now() + .seconds(limit)) == .success, let outcome = result.withLock({ $0 }) else {
            return .failure(ReadProblem.notResponding(file: file, seconds: limit))
        }
        return outcome
    }

    /// One mount as status reports it: serving (its own document), or in a state its daemon cannot report.
    struct Entry {
        enum State: String {
            /// The daemon answered with its status document.
            case serving
            /// The daemon is gone (`ENOTCONN`): the mount stays until it is detached.
            case stale
            /// The daemon did not answer in time.
            case notResponding = "not-responding"
            /// The daemon answered something that is not a status document.
            case unreadable
        }

        var mountpoint: String
        var state: State
        var document: MountStatus?
        var raw: Data?
        var problem: String?

        /// How to clear a mount that does not serve.
        var fix: String? {
            switch state {
            case .serving: return nil
            case .stale, .notResponding:
                return "mcvfs unmount --lazy \(mountpoint) (or fusermount3 -uz \(mountpoint))"
            case .unreadable: return "restart its daemon: mcvfs mount --replace ... \(mountpoint)"
            }
        }

        /// The JSON object: the daemon's document with `state` added, or the mountpoint, state, error and fix.
        func object() throws -> [String: Any] {
            var object: [String: Any] = ["mountpoint": mountpoint, "state": state.rawValue]
            if let raw, let document = try JSONSerialization.jsonObject(with: raw) as? [String: Any] {
                object.merge(document) { ours, _ in ours }
            }
            if let problem { object["error"] = problem }
            if let fix { object["fix"] = fix }
            return object
        }
    }

    func run() throws {
        let mounts: [String]
        if let mountpoint {
            let path = URL(fileURLWithPath: mountpoint).standardizedFileURL.path
            guard MountTable.current().mcvfsMounts.contains(where: { $0.mountpoint == path }) else {
                fail("\(path) is not an mcvfs mount")
            }
            mounts = [path]
        } else {
            mounts = MountTable.current().mcvfsMounts.map(\.mountpoint)
        }
        let entries = mounts.map(Self.entry)
        if json {
            // One shape whatever the arguments: an object whose `mounts` holds one entry per mount.
            let data = try JSONSerialization.data(
                withJSONObject: ["mounts": try entries.map { try $0.object() }],
                options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
            print(String(decoding: data, as: UTF8.self))
        } else {
            printTable(entries.compactMap(\.document), mounts: entries.count)
        }
        for entry in entries where entry.state != .serving {
            let line =
                "\(entry.mountpoint) is \(entry.state.rawValue) (\(entry.problem ?? "")); clear it: \(entry.fix ?? "")"
            FileHandle.standardError.write(Data("mcvfs: warning: \(line)\n".utf8))
        }
        // What is reported is not a failure of the command, except for a probe of one mountpoint (docs/operations.md's
        // readiness check): that one exits 1 unless the mount serves.
        if mountpoint != nil, entries.contains(where: { $0.state != .serving }) { throw ExitCode.failure }
    }

    static func entry(_ mount: String) -> Entry {
        let file = MountStatus.file(in: mount)
        switch read(file, withinSeconds: 5) {
        case .success(let data):
            do {
                return Entry(mountpoint: mount, state: .serving, document: try MountStatus.decode(data), raw: data)
            } catch {
                return Entry(mountpoint: mount, state: .unreadable, problem: "unreadable status document: \(error)")
            }
        case .failure(let problem):
            return Entry(
                mountpoint: mount, state: problem.stale ? .stale : .notResponding, problem: problem.description)
        }
    }

    private func printTable(_ documents: [MountStatus], mounts: Int) {
        guard !documents.isEmpty else {
            if mounts == 0 { print("no mcvfs mounts") }
            return
        }
        var rows = [
            [
                "MOUNTPOINT", "REFERENCE", "USED", "SKIPPED", "FETCHED", "LAYER-CACHE-HITS", "LAYER-CACHE-MISSES",
                "VERIFY-FAIL", "FETCH-ERRORS",
            ]
        ]
        for doc in documents {
            rows.append([
                doc.mountpoint, doc.reference, "\(doc.used.count)", "\(doc.skipped.count)",
                formatBytes(doc.fetch.bytesFetched), "\(doc.fetch.layerCacheHits)", "\(doc.fetch.layerCacheMisses)",
                "\(doc.fetch.verificationFailures)", "\(doc.fetch.fetchErrors)",
            ])
        }
        printColumns(rows)
        for doc in documents {
            print("\n\(doc.mountpoint):")
            for image in doc.used {
                let retry = image.nextRetry.map { ISO8601DateFormatter().string(from: $0) } ?? "-"
                let failing = image.state == .failed ? "  failed: \(image.error ?? "") (retry \(retry))" : ""
                print("  used     \(image.name)  \(image.digest ?? "-")\(failing)")
            }
            for image in doc.skipped { print("  skipped  \(image.name): \(image.reason ?? "")") }
            for error in doc.fetch.lastErrors { print("  error    \(error)") }
            if let refresh = doc.service?.refresh { print("  " + Self.describe(refresh)) }
            if let publishing = AutoPublisher.Status(in: doc) { print("  " + Self.describe(publishing)) }
            if let warning = doc.service?.signatureWarning { print("  warning  \(warning)") }
        }
    }

    static func describe(_ refresh: MountStatus.Refresh) -> String {
        "refresh  every \(refresh.intervalSeconds) s, last \(refresh.lastRefresh ?? "never"): "
            + "\(refresh.imagesAdded) image(s) added, \(refresh.failures) of \(refresh.refreshes) failed"
            + (refresh.lastError.map { " (last: \($0))" } ?? "")
    }

    static func describe(_ publishing: AutoPublisher.Status) -> String {
        "publish  to \(publishing.repository) every \(publishing.intervalSeconds) s, last \(publishing.lastRun ?? "never"): "
            + "\(publishing.imagesPushed) image(s), \(publishing.kernelsPublished) kernel(s); "
            + "\(publishing.failures) of \(publishing.runs) failed"
            + (publishing.consecutiveFailures > 0 ? " (last: \(publishing.lastError ?? ""))" : "")
    }

    private func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("mcvfs: error: \(message)\n".utf8))
        Foundation.exit(1)
    }
}
