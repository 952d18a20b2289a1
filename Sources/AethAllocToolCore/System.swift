import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Facts about this machine and the allocators, for the report.
public enum SystemProbe {
    static func read(_ path: String) -> String? { try? String(contentsOfFile: path, encoding: .utf8) }

    /// Parses /proc/cpuinfo text: the first model name and the processor count.
    public static func parseCPUInfo(_ text: String) -> (model: String?, count: Int?) {
        var model: String?
        var count = 0
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            let key = parts[0].trimmingCharacters(in: .whitespaces)
            let value = parts[1].trimmingCharacters(in: .whitespaces)
            if key == "processor" { count += 1 }
            if model == nil, key == "model name" || key == "Model" || key == "cpu model" { model = value }
        }
        return (model, count > 0 ? count : nil)
    }

    /// Parses /proc/meminfo text: MemTotal in kB.
    public static func parseMemTotalKB(_ text: String) -> Int? {
        for line in text.split(separator: "\n") where line.hasPrefix("MemTotal:") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if fields.count >= 2 { return Int(fields[1]) }
        }
        return nil
    }

    public static func detect() -> SystemInfo {
        var info = SystemInfo()
        if let cpu = read("/proc/cpuinfo") { (info.cpuModel, info.logicalCPUs) = parseCPUInfo(cpu) }
        if info.logicalCPUs == nil { info.logicalCPUs = ProcessInfo.processInfo.activeProcessorCount }
        if let mem = read("/proc/meminfo") { info.memTotalKB = parseMemTotalKB(mem) }
        var u = utsname()
        if uname(&u) == 0 {
            func field<T>(_ t: inout T) -> String {
                withUnsafeBytes(of: &t) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            }
            info.kernel = "\(field(&u.sysname)) \(field(&u.release)) \(field(&u.version)) \(field(&u.machine))"
        }
        if let os = read("/etc/os-release") {
            for line in os.split(separator: "\n") where line.hasPrefix("PRETTY_NAME=") {
                info.os = String(line.dropFirst("PRETTY_NAME=".count)).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            }
        }
        info.cpuGovernor = read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")?.trimmingCharacters(in: .whitespacesAndNewlines)
        if let r = try? runChild(ChildSpec(argv: ["cc", "--version"], environment: ProcessInfo.processInfo.environment)),
            r.status.succeeded
        {
            info.compiler = String(decoding: r.stdout, as: UTF8.self).split(separator: "\n").first.map(String.init)
        }
        return info
    }

    /// The running glibc's version, from confstr(3).
    public static func glibcVersion() -> String? {
        var buf = [CChar](repeating: 0, count: 64)
        let n = confstr(Int32(_CS_GNU_LIBC_VERSION), &buf, buf.count)
        guard n > 0, n <= buf.count else { return nil }
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// A package's version from dpkg's status file text.
    public static func dpkgVersion(of package: String, status: String) -> String? {
        for stanza in status.components(separatedBy: "\n\n") {
            let lines = stanza.split(separator: "\n")
            guard lines.contains(where: { $0 == "Package: \(package)" }) else { continue }
            if let v = lines.first(where: { $0.hasPrefix("Version: ") }) { return String(v.dropFirst("Version: ".count)) }
        }
        return nil
    }

    /// Each allocator's version, where it can be found: glibc's own, the
    /// Debian package's for peers, the git commit for AethAlloc variants.
    public static func versions(of allocators: [Allocator], packageRoot: String?) -> [AllocatorInfo] {
        let dpkg = read("/var/lib/dpkg/status")
        var gitRev: String??
        func git() -> String? {
            if let g = gitRev { return g }
            var rev: String?
            if let root = packageRoot,
                let r = try? runChild(ChildSpec(argv: ["git", "-C", root, "describe", "--always", "--dirty"], environment: ProcessInfo.processInfo.environment)),
                r.status.succeeded
            {
                rev = String(decoding: r.stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                rev = rev.map { "git \($0)" }
            }
            gitRev = .some(rev)
            return rev
        }
        return allocators.map { a in
            var version: String?
            switch a.kind {
            case .system: version = glibcVersion()
            case .peer: version = Catalog.peerPackages[a.name].flatMap { p in dpkg.flatMap { dpkgVersion(of: p, status: $0) }.map { "\(p) \($0)" } }
            case .variant: version = git()
            case .custom: version = nil
            }
            return AllocatorInfo(name: a.name, kind: a.kind, library: a.library, version: version, settings: a.settings.isEmpty ? nil : a.settings)
        }
    }
}
