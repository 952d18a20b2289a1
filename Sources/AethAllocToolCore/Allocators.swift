import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Where an allocator comes from.
public enum AllocatorKind: String, Codable, Sendable {
    case system  // glibc: nothing preloaded
    case peer  // a distribution package: jemalloc, mimalloc, tcmalloc
    case variant  // an AethAlloc variant built by this package
    case custom  // a library path given on the command line
}

/// One allocator to run a program under.
public struct Allocator: Codable, Equatable, Sendable {
    public var name: String
    /// The library to LD_PRELOAD; nil for glibc.
    public var library: String?
    public var kind: AllocatorKind
    /// Variables set in the program's environment on top of the tool's own
    /// (an entry `NAME[VAR=VALUE ...]`), so that one run can compare an
    /// allocator with itself under other settings.
    public var settings: [Setting]

    public init(name: String, library: String?, kind: AllocatorKind, settings: [Setting] = []) {
        self.name = name
        self.library = library
        self.kind = kind
        self.settings = settings
    }

    /// `base` with `settings` applied.
    public func environment(over base: [String: String]) -> [String: String] {
        var env = base
        for s in settings { env[s.variable] = s.value }
        return env
    }

    public static let glibc = Allocator(name: "glibc", library: nil, kind: .system)
}

/// One environment variable an allocator entry sets: `VAR=VALUE`.
public struct Setting: Codable, Equatable, Sendable {
    public var variable: String
    public var value: String

    public init(variable: String, value: String) {
        self.variable = variable
        self.value = value
    }
}

/// An entry of an allocator list: a known name or a library path, with
/// optional settings in brackets, `magazine[AETHALLOC_BACKGROUND=0]` or
/// `jemalloc[MALLOC_CONF=background_thread:true,dirty_decay_ms:1000]`.
/// Settings are separated by spaces; a value cannot hold a space or `]`.
public struct AllocatorEntry: Equatable, Sendable {
    /// The name or path before the brackets.
    public var base: String
    public var settings: [Setting]

    /// Parses one entry; the message says what is wrong.
    public static func parse(_ entry: String) -> Result<AllocatorEntry, EntryError> {
        guard let open = entry.firstIndex(of: "[") else {
            if entry.contains("]") { return .failure(EntryError("'\(entry)' has a ']' without a '['")) }
            return .success(AllocatorEntry(base: entry, settings: []))
        }
        guard entry.hasSuffix("]"), entry.filter({ $0 == "[" }).count == 1, entry.filter({ $0 == "]" }).count == 1 else {
            return .failure(EntryError("'\(entry)' should be NAME[VAR=VALUE ...], with one pair of brackets at the end"))
        }
        let base = String(entry[..<open])
        let inner = entry[entry.index(after: open)..<entry.index(before: entry.endIndex)]
        var settings: [Setting] = []
        for word in inner.split(separator: " ") {
            guard let eq = word.firstIndex(of: "=") else {
                return .failure(EntryError("'\(word)' in '\(entry)' is not VAR=VALUE"))
            }
            let variable = String(word[..<eq])
            guard isVariableName(variable) else {
                return .failure(EntryError("'\(variable)' in '\(entry)' is not a variable name (letters, digits and '_', not starting with a digit)"))
            }
            guard variable != "LD_PRELOAD" else {
                return .failure(EntryError("'\(entry)' sets LD_PRELOAD, which the allocator's library decides"))
            }
            settings.removeAll { $0.variable == variable }
            settings.append(Setting(variable: variable, value: String(word[word.index(after: eq)...])))
        }
        guard !base.isEmpty, !settings.isEmpty else {
            return .failure(EntryError("'\(entry)' should be NAME[VAR=VALUE ...] with a name and at least one setting"))
        }
        return .success(AllocatorEntry(base: base, settings: settings))
    }

    static func isVariableName(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first, !("0"..."9").contains(first) else { return false }
        return s.unicodeScalars.allSatisfy { $0 == "_" || ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) }
    }

    /// Splits a `--with` list at the commas outside brackets.
    public static func splitList(_ s: String) -> [String] {
        var items: [String] = []
        var current = ""
        var depth = 0
        for c in s {
            if c == "[" { depth += 1 } else if c == "]" { depth -= 1 }
            if c == ",", depth <= 0 {
                items.append(current)
                current = ""
            } else {
                current.append(c)
            }
        }
        items.append(current)
        return items
    }
}

public struct EntryError: Error, Equatable, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
}

/// The allocators the tool knows by name.
public enum Catalog {
    public static let variants = ["magazine", "simple", "metrics", "hardened"]
    public static let peers = ["jemalloc", "mimalloc", "tcmalloc"]
    public static let all = ["glibc"] + peers + variants
    public static let defaultVariant = "magazine"

    public static let peerPackages = ["jemalloc": "libjemalloc2", "mimalloc": "libmimalloc2.0", "tcmalloc": "libtcmalloc-minimal4"]
    public static let installHint = "apt-get install libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4"
    public static let buildHint = "swift build -c release"
    /// The release, as the pkg-config file gives it. Kept equal to `version`
    /// in nix/aethalloc.nix (a test compares them).
    public static let version = "0.1.0"

    /// The file name of a variant's library.
    public static func libraryName(variant: String) -> String {
        variant == "magazine" ? "libaethalloc.so" : "libaethalloc-\(variant).so"
    }

    /// The Debian path of a peer's library.
    public static func peerPath(_ peer: String, multiarch: String) -> String {
        let file: String
        switch peer {
        case "jemalloc": file = "libjemalloc.so.2"
        case "mimalloc": file = "libmimalloc.so.2"
        default: file = "libtcmalloc_minimal.so.4"
        }
        return "/usr/lib/\(multiarch)/\(file)"
    }

    /// Whether `entry` names a library file rather than a known allocator.
    public static func isLibraryPath(_ entry: String) -> Bool { entry.contains("/") }
}

/// Finds allocator libraries on this machine.
public struct Locator: Sendable {
    /// $AETHALLOC_LIB_DIR.
    public var libDir: String?
    /// The directory of the running executable.
    public var executableDir: String?
    /// The AethAlloc package root.
    public var packageRoot: String?
    /// Debian multiarch triple, e.g. x86_64-linux-gnu.
    public var multiarch: String
    public var fileExists: @Sendable (String) -> Bool

    public init(
        libDir: String?, executableDir: String?, packageRoot: String?, multiarch: String = Locator.hostMultiarch(),
        fileExists: @escaping @Sendable (String) -> Bool = { FileManager.default.isReadableFile(atPath: $0) }
    ) {
        self.libDir = libDir
        self.executableDir = executableDir
        self.packageRoot = packageRoot
        self.multiarch = multiarch
        self.fileExists = fileExists
    }

    /// The locator for this process.
    public static func current() -> Locator {
        let env = ProcessInfo.processInfo.environment
        let exeDir = executablePath().map { ($0 as NSString).deletingLastPathComponent }
        return Locator(
            libDir: env["AETHALLOC_LIB_DIR"].flatMap { $0.isEmpty ? nil : $0 },
            executableDir: exeDir,
            packageRoot: findPackageRoot())
    }

    public static func executablePath() -> String? {
        try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
    }

    public static func hostMultiarch() -> String {
        var u = utsname()
        uname(&u)
        let machine = withUnsafeBytes(of: &u.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        switch machine {
        case "x86_64": return "x86_64-linux-gnu"
        case "aarch64", "arm64": return "aarch64-linux-gnu"
        default: return "\(machine)-linux-gnu"
        }
    }

    /// The AethAlloc package root: the nearest directory holding this
    /// package's Package.swift, searched upwards from the current directory,
    /// then from the executable, then from where this tool was built.
    public static func findPackageRoot(filePath: String = #filePath) -> String? {
        var starts = [FileManager.default.currentDirectoryPath]
        if let exe = executablePath() { starts.append((exe as NSString).deletingLastPathComponent) }
        starts.append((filePath as NSString).deletingLastPathComponent)
        for start in starts {
            var dir = (start as NSString).standardizingPath
            while true {
                let manifest = dir + "/Package.swift"
                if let text = try? String(contentsOfFile: manifest, encoding: .utf8), text.contains("name: \"AethAlloc\"") {
                    return dir
                }
                let parent = (dir as NSString).deletingLastPathComponent
                if parent == dir || parent.isEmpty { break }
                dir = parent
            }
        }
        return nil
    }

    /// Where variant libraries are looked for, in order. An installed copy
    /// (PREFIX/bin/aethalloc) finds its libraries in PREFIX/lib.
    public var variantSearchDirs: [String] {
        var dirs: [String] = []
        let installedLib = executableDir.flatMap { d -> String? in
            guard (d as NSString).lastPathComponent == "bin" else { return nil }
            let parent = (d as NSString).deletingLastPathComponent
            return (parent == "/" ? "" : parent) + "/lib"
        }
        for d in [libDir, executableDir, installedLib, packageRoot.map { $0 + "/.build/release" }] {
            if let d, !dirs.contains(d) { dirs.append(d) }
        }
        return dirs
    }

    /// The built library of `variant`, if any.
    public func variantPath(_ variant: String) -> String? {
        let file = Catalog.libraryName(variant: variant)
        return variantSearchDirs.map { $0 + "/" + file }.first(where: fileExists)
    }

    /// Where a variant's library is expected when it is missing.
    public func expectedVariantPath(_ variant: String) -> String {
        let dir = packageRoot.map { $0 + "/.build/release" } ?? libDir ?? executableDir ?? ".build/release"
        return dir + "/" + Catalog.libraryName(variant: variant)
    }

    /// The one-line error for a variant that is not built.
    public func missingVariantMessage(_ variant: String) -> String {
        var msg = "variant '\(variant)' is not built: no \(expectedVariantPath(variant))"
        if libDir != nil { msg += " (nor in $AETHALLOC_LIB_DIR=\(libDir!))" }
        msg += "; build it with '\(Catalog.buildHint)'"
        if packageRoot == nil { msg += " in the AethAlloc package, or set AETHALLOC_LIB_DIR" }
        return msg
    }

    /// The allocator for one name (glibc, a peer, a variant or a library
    /// path). Returns nil with a notice for a peer that is not installed;
    /// throws for a variant that is not built or a missing library.
    public func allocator(named entry: String) throws -> (Allocator?, notice: String?) {
        let parsed: AllocatorEntry
        switch AllocatorEntry.parse(entry) {
        case .success(let e): parsed = e
        case .failure(let e): throw ToolError(e.message, exitCode: 2)
        }
        guard !parsed.settings.isEmpty else { return try allocator(base: entry) }
        let (a, notice) = try allocator(base: parsed.base)
        guard var a else { return (nil, notice) }
        a.name = entry
        a.settings = parsed.settings
        return (a, notice)
    }

    /// The allocator for a name or path without settings.
    func allocator(base name: String) throws -> (Allocator?, notice: String?) {
        if name == "glibc" { return (.glibc, nil) }
        if Catalog.peers.contains(name) {
            let path = Catalog.peerPath(name, multiarch: multiarch)
            if fileExists(path) { return (Allocator(name: name, library: path, kind: .peer), nil) }
            return (nil, "note: skipping \(name): \(path) not found (install the peers with '\(Catalog.installHint)')")
        }
        if Catalog.variants.contains(name) {
            guard let path = variantPath(name) else { throw ToolError(missingVariantMessage(name), exitCode: 2) }
            return (Allocator(name: name, library: path, kind: .variant), nil)
        }
        if Catalog.isLibraryPath(name) {
            let path = (name as NSString).standardizingPath
            guard fileExists(path) else { throw ToolError("library not found: \(name)", exitCode: 2) }
            var base = (path as NSString).lastPathComponent
            if let r = base.range(of: ".so") { base = String(base[..<r.lowerBound]) }
            if base.hasPrefix("lib") { base = String(base.dropFirst(3)) }
            return (Allocator(name: base.isEmpty ? path : base, library: path, kind: .custom), nil)
        }
        throw ToolError("unknown allocator '\(name)' (known: \(Catalog.all.joined(separator: ", ")))", exitCode: 2)
    }

    /// The allocators for a --with list; nil means the default: glibc, the
    /// installed peers, then every built variant.
    public func resolve(_ names: [String]?) throws -> (allocators: [Allocator], notices: [String]) {
        var result: [Allocator] = []
        var notices: [String] = []
        if let names {
            for name in names {
                let (a, notice) = try allocator(named: name)
                if let notice { notices.append(notice) }
                guard var a else { continue }
                if result.contains(where: { $0.library == a.library && $0.settings == a.settings }) { continue }
                // Two library files with one base name (builds of two
                // commits, say) stay two allocators, named by their paths.
                if let other = result.firstIndex(where: { $0.name == a.name }) {
                    if a.kind == .custom { a.name = name }
                    if result[other].kind == .custom, let lib = result[other].library, result[other].settings.isEmpty {
                        result[other].name = lib
                    }
                    if result.contains(where: { $0.name == a.name }) { continue }
                }
                result.append(a)
            }
        } else {
            for name in ["glibc"] + Catalog.peers {
                let (a, notice) = try allocator(named: name)
                if let notice { notices.append(notice) }
                if let a { result.append(a) }
            }
            var anyVariant = false
            for v in Catalog.variants {
                if let path = variantPath(v) {
                    result.append(Allocator(name: v, library: path, kind: .variant))
                    anyVariant = true
                }
            }
            if !anyVariant {
                notices.append("note: no AethAlloc variant is built (expected \(expectedVariantPath(Catalog.defaultVariant))); build with '\(Catalog.buildHint)'")
            }
        }
        if result.isEmpty { throw ToolError("no allocator to run (none of the requested ones is available)", exitCode: 2) }
        return (result, notices)
    }
}
