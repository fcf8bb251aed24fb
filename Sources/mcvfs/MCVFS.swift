import ArgumentParser
import Foundation
import Glibc

@main
struct MCVFS: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mcvfs",
        abstract: "Mount OCI registry repositories of GPU kernel caches (Triton, vLLM) as cache directories.",
        version: "0.1.0",
        subcommands: [
            ListCommand.self, InspectCommand.self, FetchCommand.self, MountCommand.self, UnmountCommand.self,
            ExportCommand.self,
            GPUsCommand.self, PushCommand.self, ConvertCommand.self, PublishCommand.self, CompactCommand.self,
            ExtractCommand.self, StatusCommand.self, CacheCommand.self,
            VerifyCommand.self, VerifyBlobCommand.self, SignCommand.self, GenerateKeyPairCommand.self,
        ]
    )
}

extension MCVFS {
    /// Exit codes, as the README's exit-code table promises: 0 done, 1 the command failed (one line,
    /// `mcvfs: error: <what>`), 64 a usage error (EX_USAGE: an unknown option, a missing or invalid argument), in
    /// one line that says what was wrong and where the help is, instead of ArgumentParser's usage block.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            let code = exitCode(for: error)
            guard code == .validationFailure else { exit(withError: error) }
            let what = message(for: error).split(separator: "\n").first.map(String.init) ?? "invalid arguments"
            let names = configuration.subcommands.compactMap { $0.configuration.commandName }
            let subcommand = CommandLine.arguments.dropFirst().first.flatMap { names.contains($0) ? $0 : nil }
            let help = subcommand.map { "mcvfs \($0) --help" } ?? "mcvfs --help"
            FileHandle.standardError.write(Data("mcvfs: error: \(what) (see `\(help)`)\n".utf8))
            Glibc.exit(code.rawValue)
        }
    }
}
