import ArgumentParser
import Foundation
import Verification

struct GenerateKeyPairCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate-key-pair",
        abstract: "Write cosign.key (encrypted ECDSA P-256) and cosign.pub into the current directory, as cosign does.",
        discussion: "The password comes from COSIGN_PASSWORD, else it is asked twice on the terminal.")

    @Option(help: "File name prefix for the pair.")
    var outputKeyPrefix = "cosign"

    func run() throws {
        let keyPath = outputKeyPrefix + ".key"
        let pubPath = outputKeyPrefix + ".pub"
        for path in [keyPath, pubPath] where FileManager.default.fileExists(atPath: path) {
            FileHandle.standardError.write(Data("mcvfs: error: \(path) already exists; not overwriting it\n".utf8))
            throw ExitCode.failure
        }
        do {
            let key = try PrivateKey.generateP256()
            let pem = try EncryptedPrivateKey.encrypt(key, password: try Password.read(confirm: true))
            // Create the private key file 0600 from the start: no window in which others may read it.
            let fd = open(keyPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else {
                throw TrustFailure.file(keyPath, operation: "create", reason: String(cString: strerror(errno)))
            }
            let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
            try handle.write(contentsOf: Data(pem.utf8))
            try handle.close()
            try Data(key.publicKey.pem.utf8).write(to: URL(fileURLWithPath: pubPath), options: .withoutOverwriting)
            FileHandle.standardError.write(
                Data("Private key written to \(keyPath)\nPublic key written to \(pubPath)\n".utf8))
        } catch {
            reportError(error)
            throw ExitCode.failure
        }
    }
}
