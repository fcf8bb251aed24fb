import Foundation
import Glibc

/// A one-line progress bar on stderr, drawn only when stderr is a terminal (never in logs or CI output).
final class ProgressBar {
    private let enabled: Bool
    private let label: String
    private var lastDraw = ContinuousClock.now - .seconds(1)
    private var drawn = false

    init(label: String, enabled: Bool = isatty(STDERR_FILENO) == 1) {
        self.label = label
        self.enabled = enabled
    }

    /// Redraws at most ten times a second, and always for the final state.
    func update(bytes: Int64, totalBytes: Int64, blobs: Int? = nil, totalBlobs: Int? = nil) {
        guard enabled else { return }
        let now = ContinuousClock.now
        let complete = totalBytes > 0 && bytes >= totalBytes && blobs == totalBlobs
        guard complete || now - lastDraw >= .milliseconds(100) else { return }
        lastDraw = now
        let width = 30
        let fraction = totalBytes > 0 ? min(1, Double(bytes) / Double(totalBytes)) : 0
        let filled = Int(fraction * Double(width))
        let bar =
            String(repeating: "=", count: filled) + (filled < width ? ">" : "")
            + String(repeating: " ", count: max(0, width - filled - 1))
        var line = "\(label) [\(bar)] \(formatBytes(bytes))/\(formatBytes(totalBytes))"
        if let blobs, let totalBlobs { line += "  blobs \(blobs)/\(totalBlobs)" }
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + line).utf8))
        drawn = true
    }

    /// Shows what a phase without a measurable total is doing (building a layer, harvesting an upper), so a long
    /// step is never silent on a terminal; `clear()` removes it.
    func status(_ text: String) {
        guard enabled else { return }
        FileHandle.standardError.write(Data(("\r\u{1B}[K\(label): \(text)").utf8))
        drawn = true
    }

    /// Erases the line, for output (another bar) that takes its place.
    func clear() {
        guard enabled, drawn else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
        drawn = false
    }

    /// Ends the bar's line so later output starts on a fresh one.
    func finish() {
        guard enabled, drawn else { return }
        FileHandle.standardError.write(Data("\n".utf8))
        drawn = false
    }
}
