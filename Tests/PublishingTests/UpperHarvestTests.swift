import Foundation
import TestSupport
import Testing

@testable import Publishing

/// What a publish takes from an upper: complete Triton entries only, nothing followed, group files canonicalized.
@Suite struct UpperHarvestTests {
    let directory: TemporaryDirectory
    let upper: String
    /// The fixture's six kernel entries, complete.
    let keys: [String]

    init() throws {
        directory = try TemporaryDirectory()
        upper = try directory.copy(Fixtures.cuda90, to: "upper/0")
        keys = try FileManager.default.contentsOfDirectory(atPath: upper).sorted()
    }

    func harvest(leavingOut known: Set<String> = []) -> UpperHarvest {
        UpperHarvest(uppers: [upper]) { known.contains($0) }
    }

    func reason(_ harvest: UpperHarvest, _ key: String) -> String? {
        harvest.skipped.first { $0.path == upper + "/" + key }?.reason
    }

    /// The files of an entry's group file, the group file included.
    func groupFiles(_ key: String) throws -> [String] {
        let group = try FileManager.default.contentsOfDirectory(atPath: upper + "/" + key).first {
            $0.hasPrefix("__grp__")
        }!
        let data = try Data(contentsOf: URL(fileURLWithPath: upper + "/" + key + "/" + group))
        let document = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        return ((document["child_paths"] as! [String: Any]).keys + [group]).sorted()
    }

    @Test func completeEntriesAreTakenWithExactlyTheFilesTheirGroupsName() throws {
        let taken = harvest()
        #expect(taken.entries.map(\.key) == keys)
        #expect(taken.skipped.isEmpty)
        let first = taken.entries[0]
        #expect(first.files == (try groupFiles(first.key)))
        #expect(first.upper == upper)
    }

    @Test func knownKeysAreLeftOutWithoutALook() {
        let taken = harvest(leavingOut: [keys[0], keys[1]])
        #expect(taken.entries.map(\.key) == Array(keys.dropFirst(2)))
        #expect(taken.skipped.isEmpty)
    }

    @Test func anEntryMissingAChildOrWithAnEmptyOneIsIncomplete() throws {
        let missing = try groupFiles(keys[0]).first { $0.hasSuffix(".cubin") }!
        try FileManager.default.removeItem(atPath: "\(upper)/\(keys[0])/\(missing)")
        // A file created with O_EXCL shows at once, empty, until its writer closes it.
        let open = try groupFiles(keys[1]).first { $0.hasSuffix(".ptx") }!
        try Data().write(to: URL(fileURLWithPath: "\(upper)/\(keys[1])/\(open)"))
        let taken = harvest()
        #expect(reason(taken, keys[0]) == "incomplete: \(missing) is missing")
        #expect(reason(taken, keys[1]) == "incomplete: \(open) is empty (still being written)")
        #expect(taken.entries.map(\.key) == Array(keys.dropFirst(2)))
    }

    @Test func aCheckAnswersWhichRefusalAndItReadsAsTheReportShowsIt() throws {
        let missing = try groupFiles(keys[0]).first { $0.hasSuffix(".cubin") }!
        try FileManager.default.removeItem(atPath: "\(upper)/\(keys[0])/\(missing)")
        let root = try #require(UpperDirectory(path: upper))
        guard case .failure(let refusal) = UpperHarvest.check(keys[0], in: root, of: upper, limits: PublishLimits())
        else {
            Issue.record("a missing child passed the check")
            return
        }
        #expect(refusal == .missing(file: missing))
        #expect(refusal.description == "incomplete: \(missing) is missing")
        #expect(
            UpperHarvest.Refusal.badChildName(group: "__grp__k.json", .dotName("..")).description
                == "refused: __grp__k.json names '..' is not a file name")
        #expect(
            UpperHarvest.Refusal.unreadable(file: "k.cubin", .tooLarge(size: 2, limit: 1)).description
                == "refused: k.cubin is too large (2 bytes; the limit is 1)")
    }

    @Test func anEntryWithoutAGroupFileIsOneBeingWritten() throws {
        let group = try groupFiles(keys[0]).first { $0.hasPrefix("__grp__") }!
        try FileManager.default.removeItem(atPath: "\(upper)/\(keys[0])/\(group)")
        #expect(reason(harvest(), keys[0])?.hasPrefix("no group file yet") == true)
    }

    @Test func aSymlinkedChildRefusesItsEntryAndIsNeverFollowed() throws {
        let child = try groupFiles(keys[0]).first { $0.hasSuffix(".cubin") }!
        let path = "\(upper)/\(keys[0])/\(child)"
        try FileManager.default.removeItem(atPath: path)
        try FileManager.default.createSymbolicLink(atPath: path, withDestinationPath: "/etc/passwd")
        let linkedKey = "\(upper)/ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ"
        try FileManager.default.createSymbolicLink(atPath: linkedKey, withDestinationPath: "\(upper)/\(keys[1])")
        let taken = harvest()
        #expect(reason(taken, keys[0]) == "refused: \(child) is not a regular file")
        #expect(reason(taken, (linkedKey as NSString).lastPathComponent)?.hasPrefix("not a directory") == true)
        #expect(!taken.entries.contains { $0.key == keys[0] })
    }

    @Test func tritonTempDirectoriesAndOverlayBookkeepingAreNeverTaken() throws {
        try FileManager.default.createDirectory(
            atPath: "\(upper)/\(keys[0])/tmp.pid_42_abc", withIntermediateDirectories: true)
        try directory.write("partial", to: "upper/0/\(keys[0])/tmp.pid_42_abc/x.cubin")
        try directory.write("stray", to: "upper/0/\(keys[0])/unlisted.txt")
        try FileManager.default.createDirectory(atPath: "\(upper)/tmp.pid_7_x", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: "\(upper)/.mcvfs-work", withIntermediateDirectories: true)
        try directory.write("", to: "upper/0/.wh.GONE")
        try FileManager.default.createDirectory(
            atPath: "\(upper)/torch_compile_cache/abc", withIntermediateDirectories: true)
        let taken = harvest()
        #expect(taken.entries.map(\.key) == keys)
        #expect(taken.entries[0].files == (try groupFiles(keys[0])))
        #expect(reason(taken, "tmp.pid_7_x") == "Triton temporary directory")
        #expect(reason(taken, "torch_compile_cache")?.hasPrefix("vLLM compile cache") == true)
        #expect(taken.skipped.count == 2, "\(taken.skipped)")
    }

    @Test func stagingCopiesTheEntriesWithGroupFilesNamingTheCanonicalRoot() throws {
        let taken = harvest()
        let staging = directory.file("staging")
        let staged = try taken.stage(into: staging, canonicalRoot: "/root/.triton/cache").entries
        #expect(staged.map(\.key) == keys)
        for entry in staged {
            for file in entry.files {
                let copy = try Data(contentsOf: URL(fileURLWithPath: "\(staging)/\(entry.key)/\(file)"))
                guard file.hasPrefix("__grp__") else {
                    #expect(copy == (try Data(contentsOf: URL(fileURLWithPath: "\(upper)/\(entry.key)/\(file)"))))
                    continue
                }
                let document = try JSONSerialization.jsonObject(with: copy) as! [String: Any]
                for (name, path) in document["child_paths"] as! [String: String] {
                    #expect(path == "/root/.triton/cache/\(entry.key)/\(name)")
                }
            }
            #expect(
                try FileManager.default.contentsOfDirectory(atPath: "\(staging)/\(entry.key)").sorted() == entry.files)
        }
        var info = stat()
        #expect(stat(staging, &info) == 0 && info.st_mode & 0o777 == 0o700, "the staging directory is private")
    }

    @Test func aGroupFileHasOneByteFormWhereverItWasCompiled() throws {
        let elsewhere = Data(#"{"child_paths": {"k.cubin": "/mnt/a/KEY/k.cubin", "k.json": "/mnt/a/KEY/k.json"}}"#.utf8)
        let canonical = Data(
            #"{"child_paths": {"k.json": "/root/.triton/cache/KEY/k.json", "k.cubin": "/root/.triton/cache/KEY/k.cubin"}}"#
                .utf8)
        let one = UpperHarvest.canonicalGroup(elsewhere, key: "KEY", root: "/root/.triton/cache")
        #expect(one == UpperHarvest.canonicalGroup(canonical, key: "KEY", root: "/root/.triton/cache"))
        #expect(
            String(decoding: one, as: UTF8.self)
                == #"{"child_paths":{"k.cubin":"/root/.triton/cache/KEY/k.cubin","k.json":"/root/.triton/cache/KEY/k.json"}}"#
        )
    }

    @Test func anEntryThatChangedSinceTheScanIsNotStaged() throws {
        let taken = harvest()
        let child = try groupFiles(keys[2]).first { $0.hasSuffix(".cubin") }!
        try FileManager.default.removeItem(atPath: "\(upper)/\(keys[2])/\(child)")
        let staged = try taken.stage(into: directory.file("staging"), canonicalRoot: "/r").entries
        #expect(!staged.contains { $0.key == keys[2] })
        #expect(!FileManager.default.fileExists(atPath: directory.file("staging/\(keys[2])")))
        #expect(staged.count == keys.count - 1)
    }

    @Test func theFirstUpperGivenWinsAKeyTwoUppersHold() throws {
        let second = try directory.copy(Fixtures.cuda90, to: "upper/1000")
        let taken = UpperHarvest(uppers: [upper, second]) { _ in false }
        #expect(taken.entries.map(\.key) == keys)
        #expect(Set(taken.entries.map(\.upper)) == [upper])
    }

    // MARK: Hostile entries: each refused alone, with its reason

    /// Rewrites the group file of `key` so that it names `names` too.
    func addToGroup(_ key: String, names: [String]) throws {
        let group = try groupFiles(key).first { $0.hasPrefix("__grp__") }!
        let path = "\(upper)/\(key)/\(group)"
        var document =
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
        var children = document["child_paths"] as! [String: String]
        for name in names { children[name] = "/x/\(key)/\(name)" }
        document["child_paths"] = children
        try JSONSerialization.data(withJSONObject: document).write(to: URL(fileURLWithPath: path))
    }

    @Test func aGroupFileNamingANulControlOrSlashNameRefusesOnlyItsEntry() throws {
        let cubin = try groupFiles(keys[0]).first { $0.hasSuffix(".cubin") }!
        try addToGroup(keys[0], names: [cubin + "\u{0}x"])
        try addToGroup(keys[1], names: ["evil\u{1b}[2J.cubin"])
        try addToGroup(keys[2], names: ["../../etc/passwd"])
        try addToGroup(keys[3], names: [".."])
        let taken = harvest()
        #expect(reason(taken, keys[0])?.contains("a name with a NUL byte") == true, "\(taken.skipped)")
        #expect(reason(taken, keys[1])?.contains("a name with a control character (evil\\u{1b}[2J.cubin)") == true)
        #expect(reason(taken, keys[2])?.contains("a name with '/'") == true)
        #expect(reason(taken, keys[3])?.contains("'..' is not a file name") == true)
        #expect(taken.entries.map(\.key) == Array(keys.dropFirst(4)))
        let staged = try taken.stage(into: directory.file("staging"), canonicalRoot: "/r")
        #expect(staged.entries.map(\.key) == Array(keys.dropFirst(4)))
    }

    @Test func aKeyNamedWithAControlCharacterIsRefusedAndPrintedEscaped() throws {
        let odd = "KEY\u{7}\u{1}"
        try FileManager.default.copyItem(atPath: "\(upper)/\(keys[0])", toPath: "\(upper)/\(odd)")
        let taken = harvest()
        let skipped = taken.skipped.first { $0.path.hasSuffix("KEY\\u{7}\\u{1}") }
        #expect(skipped?.reason.hasPrefix("refused: a name with a control character") == true, "\(taken.skipped)")
        #expect(taken.entries.map(\.key) == keys)
    }

    @Test func nameProblemsAreNamed() {
        #expect(EntryName.problem("add_kernel.cubin") == nil)
        #expect(EntryName.problem("__grp__add_kernel.json") == nil)
        #expect(EntryName.problem("ünïcode.json") == nil)
        #expect(EntryName.problem("") == .empty)
        #expect(EntryName.problem(".") == .dotName("."))
        #expect(EntryName.problem("a\u{0}b") == .nul("a\u{0}b"))
        #expect(EntryName.problem("a/b") == .slash("a/b"))
        #expect(EntryName.problem("a\nb") == .controlCharacter("a\nb"))
        #expect(EntryName.problem("a\u{7f}") == .controlCharacter("a\u{7f}"))
        #expect(EntryName.problem("a\u{85}") == .controlCharacter("a\u{85}"))
        #expect(EntryName.problem("bad\u{fffd}") == .notUTF8("bad\u{fffd}"))
        #expect(EntryName.problem(String(repeating: "x", count: 256)) == .tooLong)
        // What a report shows: the name printable, its control characters escaped.
        #expect(EntryName.Problem.empty.description == "an empty name")
        #expect(EntryName.Problem.dotName(".").description == "'.' is not a file name")
        #expect(EntryName.Problem.nul("a\u{0}b").description == "a name with a NUL byte (a\\u{0}b)")
        #expect(EntryName.Problem.slash("a/b").description == "a name with '/' (a/b)")
        #expect(EntryName.Problem.controlCharacter("a\nb").description == "a name with a control character (a\\u{a}b)")
        #expect(EntryName.Problem.notUTF8("bad\u{fffd}").description == "a name that is not UTF-8 (bad\u{fffd})")
        #expect(EntryName.Problem.tooLong.description == "a name longer than 255 bytes")
        #expect(EntryName.problem(String(repeating: "x", count: 255)) == nil)
    }

    @Test func aFileOverTheLimitRefusesItsEntryWithoutBeingRead() throws {
        let cubin = try groupFiles(keys[0]).first { $0.hasSuffix(".cubin") }!
        // Sparse: 4 GiB that costs no disk; the scan refuses it by its size, reading nothing.
        #expect(truncate("\(upper)/\(keys[0])/\(cubin)", 4 << 30) == 0)
        let taken = harvest()
        #expect(
            reason(taken, keys[0])
                == "refused: \(cubin) is too large (\(Int64(4) << 30) bytes; the limit is \(PublishLimits.defaultFileBytes))"
        )
        #expect(taken.entries.map(\.key) == Array(keys.dropFirst()))
    }

    @Test func aFileThatGrowsPastTheLimitAfterTheScanIsNotStaged() throws {
        let limits = PublishLimits(fileBytes: 1 << 20)
        let taken = UpperHarvest(uppers: [upper], limits: limits) { _ in false }
        let cubin = try groupFiles(keys[0]).first { $0.hasSuffix(".cubin") }!
        #expect(truncate("\(upper)/\(keys[0])/\(cubin)", 2 << 20) == 0)
        let staged = try taken.stage(into: directory.file("staging"), canonicalRoot: "/r")
        #expect(staged.entries.map(\.key) == Array(keys.dropFirst()))
        #expect(!FileManager.default.fileExists(atPath: directory.file("staging/\(keys[0])")))
    }

    @Test func aGroupFileOverTheJSONLimitIsRefused() throws {
        let group = try groupFiles(keys[0]).first { $0.hasPrefix("__grp__") }!
        #expect(truncate("\(upper)/\(keys[0])/\(group)", Int(PublishLimits.jsonBytes) + 1) == 0)
        #expect(reason(harvest(), keys[0])?.hasPrefix("refused: \(group) is too large") == true)
    }

    @Test func entriesPastThePublishLimitWaitForALaterPublish() throws {
        let all = harvest()
        let first = all.entries[0].bytes + all.entries[1].bytes
        let taken = UpperHarvest(uppers: [upper], limits: PublishLimits(publishBytes: first)) { _ in false }
        let staged = try taken.stage(into: directory.file("staging"), canonicalRoot: "/r")
        #expect(staged.entries.map(\.key) == Array(keys.prefix(2)))
        #expect(staged.skipped.count == keys.count - 2)
        #expect(staged.skipped.allSatisfy { $0.reason.hasPrefix("left for a later publish") })
    }

    @Test func aFIFONamedByAGroupFileNeitherBlocksNorIsTaken() throws {
        let cubin = try groupFiles(keys[0]).first { $0.hasSuffix(".cubin") }!
        let path = "\(upper)/\(keys[0])/\(cubin)"
        try FileManager.default.removeItem(atPath: path)
        #expect(mkfifo(path, 0o644) == 0)
        let taken = harvest()
        #expect(reason(taken, keys[0]) == "refused: \(cubin) is not a regular file")
        // Swapped in after the scan: the copy opens it without blocking and refuses it.
        try FileManager.default.removeItem(atPath: path)
        try Data([1]).write(to: URL(fileURLWithPath: path))
        let again = harvest()
        try FileManager.default.removeItem(atPath: path)
        #expect(mkfifo(path, 0o644) == 0)
        let staged = try again.stage(into: directory.file("staging"), canonicalRoot: "/r")
        #expect(staged.entries.map(\.key) == Array(keys.dropFirst()))
    }

    @Test func aHardLinkOrAnotherUsersFileRefusesItsEntry() throws {
        let cubin = try groupFiles(keys[0]).first { $0.hasSuffix(".cubin") }!
        // A root-only file elsewhere, linked in by a user where fs.protected_hardlinks=0 allows it.
        try directory.write("root's secret", to: "secret")
        #expect(chmod(directory.file("secret"), 0o600) == 0)
        try FileManager.default.removeItem(atPath: "\(upper)/\(keys[0])/\(cubin)")
        #expect(link(directory.file("secret"), "\(upper)/\(keys[0])/\(cubin)") == 0)
        // A file of another uid in this upper, which belongs to uid 0.
        let ptx = try groupFiles(keys[1]).first { $0.hasSuffix(".ptx") }!
        try #require(chown("\(upper)/\(keys[1])/\(ptx)", 65534, 65534) == 0, "the test runs as root")
        let taken = harvest()
        #expect(
            reason(taken, keys[0])
                == "refused: \(cubin) has 2 hard links (a file linked from elsewhere is never published: copy it instead)"
        )
        #expect(reason(taken, keys[1]) == "refused: \(ptx) belongs to uid 65534, not to uid 0 whose kernels these are")
        #expect(taken.entries.map(\.key) == Array(keys.dropFirst(2)))
        // Linked after the scan: the entry no longer checks and is not staged; a file read checks the descriptor
        // it opened, whatever a scan saw.
        let later = try groupFiles(keys[2]).first { $0.hasSuffix(".cubin") }!
        let again = harvest()
        #expect(link("\(upper)/\(keys[2])/\(later)", directory.file("second-name")) == 0)
        let staged = try again.stage(into: directory.file("staging"), canonicalRoot: "/r")
        #expect(staged.entries.map(\.key) == Array(keys.dropFirst(3)))
        let entry = try #require(UpperDirectory(path: upper)?.subdirectory(keys[2]))
        #expect(throws: UpperDirectory.ReadFailure.linked(count: 2)) {
            _ = try entry.openFile(later, owner: 0, limit: 1 << 30)
        }
    }

    @Test func anOpenedFileIsReadAsItWasWhenOpenedAndNeverPastItsLimit() throws {
        let cubin = try groupFiles(keys[0]).first { $0.hasSuffix(".cubin") }!
        let path = "\(upper)/\(keys[0])/\(cubin)"
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        let size = Int64(before.count)
        let entry = try #require(UpperDirectory(path: upper)?.subdirectory(keys[0]))
        #expect(throws: UpperDirectory.ReadFailure.tooLarge(size: size, limit: size - 1)) {
            _ = try entry.openFile(cubin, owner: 0, limit: size - 1)
        }
        #expect(throws: UpperDirectory.ReadFailure.foreign(owner: 0, expected: 65534)) {
            _ = try entry.openFile(cubin, owner: 65534, limit: size)
        }
        let opened = try entry.openFile(cubin, owner: 0, limit: size)
        // Appended to once opened: what was checked is what is read.
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data("appended".utf8))
        try handle.close()
        #expect(opened.size == size)
        #expect(try opened.readAll() == before)
        var streamed = Data()
        try entry.openFile(cubin, owner: 0, limit: size + 8).stream { streamed.append(contentsOf: $0) }
        #expect(streamed == before + Data("appended".utf8))
    }
}
