import ArgumentParser

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
