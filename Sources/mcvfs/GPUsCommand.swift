import ArgumentParser
import Foundation
import GPU

struct GPUsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gpus", abstract: "Print this host's GPUs as backend:arch:warp, the way Triton names targets.")

    @Option(help: "Log level: error, warning, info, debug.") var logLevel: Log.Level = .warning
    @Flag(help: "Print JSON: {\"gpus\": [\"cuda:90:32\", ...], \"problems\": [...]}.") var json = false

    func run() throws {
        Log.configure(level: logLevel, stderr: true, file: nil, syslog: false, terminal: true)
        let detection: GPUDetector.Detection
        do {
            detection = try GPUDetector().detect()
        } catch {
            reportError(error)
            throw ExitCode.failure
        }
        for problem in detection.problems { Log.warning("\(problem)") }
        guard !detection.targets.isEmpty else {
            FileHandle.standardError.write(
                Data(
                    "mcvfs: error: no GPU found (no NVIDIA driver library, no AMD KFD nodes); set MCVFS_GPU or pass --gpu to other commands\n"
                        .utf8))
            throw ExitCode.failure
        }
        if json {
            try printJSON(
                ["gpus": detection.targets.map(\.description), "problems": detection.problems.map(\.description)])
        } else {
            for target in detection.targets { print(target) }
        }
    }
}
