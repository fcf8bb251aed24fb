import Foundation
import Glibc
import TestSupport
import Testing

@testable import ImageFS

/// The descriptor wrapper the overlay reaches users' uppers through: links are never followed, FIFOs never block,
/// and what it reads from a user's file is bounded.
struct DirectoryDescriptorTests {
    let directory: TemporaryDirectory
    let root: DirectoryDescriptor

    init() throws {
        directory = try TemporaryDirectory()
        root = try DirectoryDescriptor.open(directory.path)
    }

    /// A directory outside the tree, standing for a root-only one an attacker points a link at.
    func victim() throws -> TemporaryDirectory {
        let victim = try TemporaryDirectory()
        try victim.write("precious", to: "keep")
        return victim
    }

    @Test func aLinkedDirectoryIsNeverEnteredCreatedThroughOrRemovedThrough() throws {
        let victim = try victim()
        #expect(symlink(victim.path, directory.file("work")) == 0)
        #expect(try root.directory("work") == nil)
        #expect(try root.directory("work", create: (0o700, (getuid(), getgid()))) == nil)
        #expect(root.remove("work", directory: true)?.code == ENOTDIR)
        #expect(root.remove("work") == nil)  // the link itself goes
        #expect(try FileManager.default.contentsOfDirectory(atPath: victim.path) == ["keep"])
    }

    @Test func aLinkedFileIsNeitherOpenedNorCreatedThrough() throws {
        let victim = try victim()
        #expect(symlink(victim.file("keep"), directory.file("file")) == 0)
        #expect(root.openFile("file", flags: O_RDONLY) == .failure(.init(ELOOP)))
        #expect(root.openFile("file", flags: O_CREAT | O_WRONLY | O_TRUNC) == .failure(.init(ELOOP)))
        #expect(throws: FSError.invalidArgument) { try root.read("file", limit: 100) }
        #expect(root.status("file").map { $0.st_mode & S_IFMT } == S_IFLNK)
        #expect(try String(contentsOfFile: victim.file("keep"), encoding: .utf8) == "precious")
    }

    @Test func aFIFOIsRefusedAtOnceInsteadOfBlocking() throws {
        #expect(mkfifo(directory.file("__grp__x.json"), 0o644) == 0)
        #expect(root.openFile("__grp__x.json", flags: O_RDONLY) == .failure(.init(EINVAL)))
        #expect(root.openFile("__grp__x.json", flags: O_WRONLY) == .failure(.init(EINVAL)))
        #expect(throws: FSError.invalidArgument) { try root.read("__grp__x.json", limit: 1 << 20) }
    }

    @Test func theOpenedDirectoryStaysWhatWasCheckedWhenItsPathIsSwapped() throws {
        try directory.write("mine", to: "upper/file")
        let upper = try #require(try root.directory("upper"))
        #expect(rename(directory.file("upper"), directory.file("moved")) == 0)
        let victim = try victim()
        #expect(symlink(victim.path, directory.file("upper")) == 0)
        #expect(upper.remove("file") == nil)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.file("moved")).isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: victim.path) == ["keep"])
    }

    @Test func openingChecksTheOwnerAndRefusesALink() throws {
        #expect(throws: FSError.self) { try DirectoryDescriptor.open(directory.path, owner: getuid() + 1) }
        let victim = try victim()
        #expect(symlink(victim.path, directory.file("link")) == 0)
        #expect(throws: FSError.self) { try DirectoryDescriptor.open(directory.file("link")) }
    }

    @Test func aBoundedReadReturnsSmallFilesWholeAndReadsNothingOfLargerOnes() throws {
        try directory.write("{\"child_paths\": {}}", to: "small.json")
        #expect(try root.read("small.json", limit: 64) == .bytes(Data("{\"child_paths\": {}}".utf8)))
        #expect(try root.read("small.json", limit: 19) == .bytes(Data("{\"child_paths\": {}}".utf8)))
        #expect(try root.read("small.json", limit: 18) == .tooLarge(size: 19))
        // A 4 GiB sparse file: refused by its size, before any byte is read.
        let fd = open(directory.file("huge.json"), O_CREAT | O_WRONLY, 0o644)
        #expect(ftruncate(fd, 4 << 30) == 0)
        close(fd)
        #expect(try root.read("huge.json", limit: Relocation.inputLimit) == .tooLarge(size: 4 << 30))
        #expect(throws: FSError.notFound) { try root.read("missing.json", limit: 10) }
    }

    @Test func entriesListEveryNameEachTime() throws {
        try directory.write("a", to: "a")
        try directory.write("b", to: "b")
        #expect(try root.entries().sorted() == ["a", "b"])
        #expect(try root.entries().sorted() == ["a", "b"])
    }
}
