import Foundation
import Glibc

/// The password of a `cosign.key`, found as cosign finds it: `COSIGN_PASSWORD` when set (even empty), else asked
/// on the controlling terminal with echo off.
enum Password {
    enum Unavailable: Error, CustomStringConvertible {
        case mismatch
        case noTerminal

        var description: String {
            switch self {
            case .mismatch: return "passwords do not match"
            case .noTerminal: return "COSIGN_PASSWORD is not set and there is no terminal to ask for the password"
            }
        }
    }

    static func read(prompt: String = "Enter password for private key: ", confirm: Bool = false) throws -> Data {
        if let value = ProcessInfo.processInfo.environment["COSIGN_PASSWORD"] { return Data(value.utf8) }
        let first = try ask(prompt)
        if confirm {
            let second = try ask("Enter password for private key again: ")
            guard first == second else { throw Unavailable.mismatch }
        }
        return first
    }

    /// One line from /dev/tty without echo (never from stdin, which may carry data).
    private static func ask(_ prompt: String) throws -> Data {
        let tty = open("/dev/tty", O_RDWR | O_CLOEXEC)
        guard tty >= 0 else {
            throw Unavailable.noTerminal
        }
        defer { close(tty) }
        _ = prompt.withCString { write(tty, $0, strlen($0)) }
        var saved = termios()
        let isTerminal = tcgetattr(tty, &saved) == 0
        if isTerminal {
            var quiet = saved
            quiet.c_lflag &= ~tcflag_t(ECHO)
            tcsetattr(tty, TCSAFLUSH, &quiet)
        }
        defer {
            if isTerminal { tcsetattr(tty, TCSAFLUSH, &saved) }
            _ = write(tty, "\n", 1)
        }
        var line = [UInt8]()
        var byte: UInt8 = 0
        while true {
            let count = Glibc.read(tty, &byte, 1)
            if count < 0 && errno == EINTR { continue }
            if count <= 0 || byte == UInt8(ascii: "\n") { break }
            line.append(byte)
        }
        if line.last == UInt8(ascii: "\r") { line.removeLast() }
        return Data(line)
    }
}
