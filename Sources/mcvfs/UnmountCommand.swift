import ArgumentParser
import Foundation
import NodeService

struct UnmountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unmount", abstract: "Unmount an mcvfs mount; its daemon exits.")

    @Flag(help: "Detach now even if files are open (they keep working until closed).") var lazy = false
    @Argument(help: "The mountpoint.") var mountpoint: String

    func run() throws {
        let path = URL(fileURLWithPath: mountpoint).standardizedFileURL.path
        do {
            try Mountpoint.unmount(path, lazy: lazy)
        } catch {
            reportError(error)
            throw ExitCode.failure
        }
    }
}
