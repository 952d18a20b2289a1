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

    public init(name: String, library: String?, kind: AllocatorKind) {
        self.name = name
        self.library = library
        self.kind = kind
    }

    public static let glibc = Allocator(name: "glibc", library: nil, kind: .system)
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
    public func allocator(named name: String) throws -> (Allocator?, notice: String?) {
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
                if let a, !result.contains(where: { $0.name == a.name }) { result.append(a) }
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
