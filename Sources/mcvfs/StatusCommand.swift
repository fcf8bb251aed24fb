import ArgumentParser
import Foundation
import NodeService
import Synchronization

/// `mcvfs status`: what each running mount uses, skips, fetched and failed, read from its `/.mcvfs/status.json`.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show what running mcvfs mounts use and skip, what they fetched, and their errors.",
        discussion: """
            Mounts are found in /proc/self/mountinfo (type fuse.mcvfs); each daemon's own report is read from \
            <mountpoint>/.mcvfs/status.json. Exits non-zero when MOUNTPOINT is not a serving mcvfs mount, so it \
            works as a readiness probe.
            """)

    @Flag(help: "Print the status documents as JSON (one object for MOUNTPOINT, else an array).") var json = false
    @Argument(help: "One mountpoint (default: every mcvfs mount).") var mountpoint: String?

    struct ReadProblem: Error, CustomStringConvertible {
        let description: String
    }

    /// Reads `file` on another thread and gives up after `limit` seconds: a hung mount (a stopped daemon) must not hang
    /// the status command or a readiness probe. A read left behind is killed with the process.
    static func read(_ file: String, withinSeconds limit: Int) -> Result<Data, ReadProblem> {
        let result = Mutex<Result<Data, ReadProblem>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            let data = FileManager.default.contents(atPath: file)
            let problem = String(cString: strerror(errno))
            result.withLock {
                $0 = data.map { .success($0) } ?? .failure(ReadProblem(description: "cannot read \(file) (\(problem))"))
            }
            done.signal()
        }
        guard done.wait(timeout: .now() + .seconds(limit)) == .success, let outcome = result.withLock({ $0 }) else {
            return .failure(ReadProblem(description: "not responding: \(file) gave no answer within \(limit) s"))
        }
        return outcome
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
        var raw: [Data] = []
        var documents: [MountStatus] = []
        var problems: [String] = []
        for mount in mounts {
            let file = MountStatus.file(in: mount)
            let data: Data
            switch Self.read(file, withinSeconds: 5) {
            case .success(let contents): data = contents
            case .failure(let problem):
                problems.append("\(mount): \(problem)")
                continue
            }
            raw.append(data)
            do {
                documents.append(try MountStatus.decode(data))
            } catch {
                problems.append("\(mount): unreadable status document: \(error)")
            }
        }
        if json {
            if mountpoint != nil, let data = raw.first {
                print(String(decoding: data, as: UTF8.self), terminator: "")
            } else if mountpoint == nil {
                let objects = try raw.map { try JSONSerialization.jsonObject(with: $0) }
                let data = try JSONSerialization.data(
                    withJSONObject: objects, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
                print(String(decoding: data, as: UTF8.self))
            }
        } else {
            printTable(documents)
        }
        for problem in problems { FileHandle.standardError.write(Data("mcvfs: error: \(problem)\n".utf8)) }
        if !problems.isEmpty { throw ExitCode.failure }
    }

    private func printTable(_ documents: [MountStatus]) {
        guard !documents.isEmpty else {
            if mountpoint == nil { print("no mcvfs mounts") }
            return
        }
        var rows = [
            ["MOUNTPOINT", "REFERENCE", "USED", "SKIPPED", "FETCHED", "HITS", "MISSES", "VERIFY-FAIL", "ERRORS"]
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
            if let publishing = doc.service?.publishing { print("  " + Self.describe(publishing)) }
            if let warning = doc.service?.signatureWarning { print("  warning  \(warning)") }
        }
    }

    static func describe(_ refresh: MountStatus.Refresh) -> String {
        "refresh  every \(refresh.intervalSeconds) s, last \(refresh.lastRefresh ?? "never"): "
            + "\(refresh.imagesAdded) image(s) added, \(refresh.failures) of \(refresh.refreshes) failed"
            + (refresh.lastError.map { " (last: \($0))" } ?? "")
    }

    static func describe(_ publishing: MountStatus.Publishing) -> String {
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
