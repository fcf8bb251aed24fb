import ArgumentParser
import Foundation
import Glibc
import ImageFS
import NodeService
import OCI
import Publishing

struct PublishCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "publish",
        abstract: "Push the kernels compiled through a mount, as cache images other nodes can mount.",
        discussion: """
            Takes the complete Triton entries (a <KEY>/ whose group file and every file it names are written and \
            closed; never tmp.pid_* directories or files still being written) of the caller's own upper that no \
            image of the mount provides and that were not published from it before, and pushes one eStargz cache \
            image per GPU target, in MCV's layout and labels (triton_version included), reproducibly. Tags are \
            content-derived, PREFIX-<target>-<first 16 hex digits of the manifest digest>: no publish overwrites \
            another's, and publishing the same kernels again pushes nothing. Blobs, manifest and signatures go up \
            before the tag, so an interrupted publish leaves no tag naming an incomplete image. As root, \
            --from-uid names the users whose kernels to take (repeatable), or a --shared-upper mount's shared \
            upper is taken; never every user's. An entry with a bad name (NUL, '/', control characters), a link, a \
            special file or a file over --max-file-size is refused on its own, with its reason; the others \
            publish. Prints "<digest><TAB><reference>" per image pushed. See docs/fleet.md and docs/security.md.
            """)

    @OptionGroup var global: GlobalOptions
    @OptionGroup var options: PublishOptions
    @OptionGroup var limits: PublishLimitOptions

    @Option(name: .customLong("from-uid"), help: "As root: publish what this uid compiled. Repeatable.")
    var fromUID: [UInt32] = []

    @Flag(help: "List what would be pushed; push nothing.") var dryRun = false
    @Flag(help: "Print the report as JSON.") var json = false

    @Argument(help: "An mcvfs mountpoint.") var mountpoint: String
    @Argument(help: "REGISTRY/REPOSITORY to publish to (no tag: tags are derived from the content).")
    var repository: String

    func run() throws {
        try runReportingErrors(global) {
            let target = try ImageReference(parsing: repository)
            guard target.isRepositoryOnly else { throw PublishFailure.taggedRepository(repository) }
            let path = URL(fileURLWithPath: mountpoint).standardizedFileURL.path
            let status = try MountedStatus.read(path)
            guard let upperRoot = status.upperRoot else { throw PublishFailure.readOnly(path) }
            let isolation = status.isolation.flatMap(OverlayFileSystem.Isolation.init(rawValue:)) ?? .perUser
            let uppers = try UpperSelection.uppers(
                root: upperRoot, isolation: isolation, caller: getuid(), uids: fromUID)
            let signing = try options.signing(for: target)
            let mounted = try ImageReference(parsing: status.reference)
            let cache = try NodeCache(layout: try global.cache.layout(), log: .process)
            let images = try MountedImages.images(
                of: status, client: try global.client(for: mounted), store: cache.store)
            let (provided, unread) = try MountedImages.providedKeys(
                images,
                upstream: Upstream(reference: mounted, origin: try global.client(for: mounted), log: .process),
                cache: cache)
            for problem in unread { Log.warning("cannot read the kernels of \(problem); they may be published again") }
            let job = PublishJob(
                uppers: uppers, ledger: PublishLedger(layout: cache.layout, repository: target.repositoryName),
                publisher: options.publisher(
                    target, client: try global.client(for: target), signing: signing, dryRun: dryRun),
                limits: try limits.limits())
            let bar = ProgressBar(label: "publish \(target.repositoryName)")
            bar.status("collecting the kernels compiled through \(mountpoint), building and pushing their images...")
            let report: PublishJob.Report
            do { report = try job.run(provided: provided) } catch {
                bar.clear()
                throw error
            }
            bar.clear()
            for skipped in report.skipped {
                // A refusal (a bad name, a link, a file too large) is worth a warning; an entry still being
                // written is not.
                if skipped.reason.hasPrefix("refused") || skipped.reason.hasPrefix("not staged")
                    || skipped.reason.hasPrefix("left for")
                {
                    Log.warning("left out \(skipped.path): \(skipped.reason)")
                } else {
                    Log.info("left out \(skipped.path): \(skipped.reason)")
                }
            }
            if json { return try printJSON(report) }
            for image in report.images {
                let name = "\(target.repositoryName):\(image.tag)"
                switch image.state {
                case .pushed: print("\(image.digest)\t\(name)")
                case .present: Log.info("\(name) already holds these kernels: nothing pushed")
                case .wouldPush: print("would push \(name) \(image.digest): \(image.keys.joined(separator: " "))")
                }
                Log.info("\(name): \(image.keys.count) kernel(s) for \(image.targets.joined(separator: ", "))")
            }
            if report.images.isEmpty {
                FileHandle.standardError.write(
                    Data(
                        ("nothing to publish: \(report.known) kernel(s) provided by the mount's images or published "
                            + "before, \(report.skipped.count) entr(ies) not complete or not kernels\n").utf8))
            }
        }
    }
}

enum PublishFailure: Error, CustomStringConvertible {
    case taggedRepository(String)
    case readOnly(String)
    /// The mountpoint's status document cannot be read in time: no mcvfs mount serves it.
    case notServing(mountpoint: String, StatusCommand.ReadProblem)
    /// The status document is there but does not decode.
    case unreadableStatus(mountpoint: String, any Error)

    var description: String {
        switch self {
        case .taggedRepository(let reference):
            return "\(reference): publish to a repository without a tag; each image's tag comes from its content"
        case .readOnly(let path): return "\(path) is mounted read-only: nothing is written through it to publish"
        case .notServing(let mountpoint, let problem):
            return "\(mountpoint) is not a serving mcvfs mount: \(problem)"
        case .unreadableStatus(let mountpoint, let error):
            return "\(mountpoint) is not a serving mcvfs mount: unreadable status: \(error)"
        }
    }
}

/// A mount's status document, read with `status`'s time limit (a hung mount must not hang the command).
enum MountedStatus {
    static func read(_ mountpoint: String) throws -> MountStatus {
        switch StatusCommand.read(MountStatus.file(in: mountpoint), withinSeconds: 5) {
        case .failure(let problem):
            throw PublishFailure.notServing(mountpoint: mountpoint, problem)
        case .success(let data):
            do { return try MountStatus.decode(data) } catch {
                throw PublishFailure.unreadableStatus(mountpoint: mountpoint, error)
            }
        }
    }
}
