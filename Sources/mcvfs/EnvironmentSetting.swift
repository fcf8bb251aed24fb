import Foundation

/// An option's value, else the environment variable standing in for it (empty means unset): how a DaemonSet's
/// ConfigMap or a systemd EnvironmentFile turns a feature on or off without changing the command line.
func setting(_ option: String?, _ variable: String) -> String? {
    if let option { return option }
    guard let value = ProcessInfo.processInfo.environment[variable]?.trimmingCharacters(in: .whitespaces),
        !value.isEmpty
    else { return nil }
    return value
}
