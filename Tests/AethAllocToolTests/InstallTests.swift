import Foundation
import Testing

@testable import AethAllocToolCore

#if canImport(Glibc)
import Glibc
#endif

/// `aethalloc-cli install` into a temporary prefix, from a temporary build
/// directory of fake libraries: no real build is needed.
@Suite struct InstallTests {
    static let libraries = ["libaethalloc.so", "libaethalloc-simple.so", "libaethalloc-metrics.so", "libaethalloc-hardened.so"]

    /// A build directory, a package holding include/aethalloc.h, and a
    /// prefix that does not exist yet.
    struct Fixture {
        let root: String
        let build: String
        let package: String
        let prefix: String

        init() throws {
            root = try tempDir("install")
            build = root + "/build"
            package = root + "/package"
            prefix = root + "/prefix"
            let fm = FileManager.default
            try fm.createDirectory(atPath: build, withIntermediateDirectories: true)
            try fm.createDirectory(atPath: package + "/include", withIntermediateDirectories: true)
            for lib in InstallTests.libraries { try write(build + "/" + lib, "ELF \(lib) v1\n") }
            try write(build + "/aethalloc-cli", "#!/bin/sh\necho cli v1\n")
            try write(package + "/include/aethalloc.h", "/* aethalloc.h */\n")
        }

        var locator: Locator { Locator(libDir: nil, executableDir: build, packageRoot: package) }

        func tool(_ args: [String]) -> (code: Int32, out: String, err: String) {
            let c = Console.capturing()
            let code = AethAllocTool.main(["aethalloc-cli", "install", "--prefix", prefix] + args, console: c, locator: locator)
            return (code, c.capturedOut, c.capturedErr)
        }

        func read(_ relative: String) -> String? {
            FileManager.default.contents(atPath: prefix + "/" + relative).map { String(decoding: $0, as: UTF8.self) }
        }

        /// Every file under the prefix, relative, sorted.
        func files() -> [String] {
            guard let e = FileManager.default.enumerator(atPath: prefix) else { return [] }
            var out: [String] = []
            while let p = e.nextObject() as? String {
                var isDir: ObjCBool = false
                if FileManager.default.fileExists(atPath: prefix + "/" + p, isDirectory: &isDir), !isDir.boolValue { out.append(p) }
            }
            return out.sorted()
        }

        func remove() { try? FileManager.default.removeItem(atPath: root) }
    }

    static func write(_ path: String, _ text: String) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    }

    static func mode(_ path: String) -> mode_t {
        var st = stat()
        return stat(path, &st) == 0 ? st.st_mode & 0o7777 : 0
    }

    static func inode(_ path: String) -> UInt {
        var st = stat()
        return stat(path, &st) == 0 ? UInt(st.st_ino) : 0
    }

    static let allInstalled = [
        "bin/aethalloc", "include/aethalloc.h", "lib/libaethalloc-hardened.so", "lib/libaethalloc-metrics.so",
        "lib/libaethalloc-simple.so", "lib/libaethalloc.so", "lib/pkgconfig/aethalloc.pc", "share/aethalloc/install-manifest",
    ]

    func usageError(_ args: [String]) -> UsageError? {
        do {
            _ = try Arguments.parse(args)
            return nil
        } catch {
            return error
        }
    }

    // MARK: - Arguments

    @Test func parsing() throws {
        guard case .install(let a) = try Arguments.parse(["install"]) else { Issue.record("not install"); return }
        #expect(a.prefix == "/usr/local")
        #expect(a.from == nil && !a.dryRun && !a.force)
        guard case .install(let b) = try Arguments.parse(["install", "--prefix", "/opt/aeth", "--dry-run", "--force", "--from", ".build/release"])
        else { Issue.record("not install"); return }
        #expect(b.prefix == "/opt/aeth")
        #expect(b.dryRun && b.force)
        #expect(b.from == ".build/release")
        guard case .install(let c) = try Arguments.parse(["install", "--prefix=//opt/./x/../aeth/"]) else { Issue.record("not install"); return }
        #expect(c.prefix == "/opt/aeth")
        guard case .install(let d) = try Arguments.parse(["install", "--prefix", "/"]) else { Issue.record("not install"); return }
        #expect(d.prefix == "/")
        #expect(try Arguments.parse(["install", "--help"]) == .help("install"))
        #expect(try Arguments.parse(["help", "install"]) == .help("install"))
    }

    @Test func badUsage() {
        let cases: [([String], String)] = [
            (["install", "--prefix"], "--prefix needs a value"),
            (["install", "--prefix", "relative/dir"], "--prefix wants an absolute directory, not 'relative/dir'"),
            (["install", "--prefix=~/.local"], "--prefix wants an absolute directory"),
            (["install", "--prefix", "/opt/my apps"], "cannot contain spaces or ':'"),
            (["install", "--prefix", "/opt/a:b"], "cannot contain spaces or ':'"),
            (["install", "--from", ""], "--from wants a directory"),
            (["install", "--dry-run=yes"], "--dry-run takes no value"),
            (["install", "--force=1"], "--force takes no value"),
            (["install", "--uninstall"], "unknown option '--uninstall'"),
            (["install", "/usr/local"], "unexpected argument '/usr/local'"),
        ]
        for (args, fragment) in cases {
            let e = usageError(args)
            #expect(e?.message.contains(fragment) == true, "\(args): \(e?.message ?? "no error")")
            #expect(e?.line.hasPrefix("aethalloc-cli install: ") == true)
            #expect(e?.line.hasSuffix("see 'aethalloc-cli install --help'") == true)
            #expect(e?.line.contains("\n") == false)
        }
        // Through the entry point: one line on stderr, status 2, nothing on stdout.
        let c = Console.capturing()
        #expect(AethAllocTool.main(["aethalloc-cli", "install", "--prefix", "x"], console: c, locator: noLibraries) == 2)
        #expect(c.capturedOut == "")
        #expect(c.capturedErr == "aethalloc-cli install: --prefix wants an absolute directory, not 'x'; see 'aethalloc-cli install --help'\n")
    }

    @Test func help() {
        let c = Console.capturing()
        #expect(AethAllocTool.main(["aethalloc-cli", "help"], console: c, locator: noLibraries) == 0)
        #expect(c.capturedOut.contains("aethalloc-cli install [--prefix DIR] [--from DIR] [--dry-run] [--force]"))
        #expect(c.capturedOut.contains("  install  install the libraries"))
        let h = Console.capturing()
        #expect(AethAllocTool.main(["aethalloc-cli", "install", "--help"], console: h, locator: noLibraries) == 0)
        #expect(h.capturedOut == Help.install)
        #expect(Help.install.contains("--dry-run") && Help.install.contains("default /usr/local"))
    }

    // MARK: - Installing

    @Test func installsEverything() throws {
        let f = try Fixture()
        defer { f.remove() }
        let r = f.tool([])
        #expect(r.code == 0, "\(r.err)")
        #expect(r.err == "")
        #expect(f.files() == Self.allInstalled)
        for lib in Self.libraries {
            #expect(f.read("lib/" + lib) == "ELF \(lib) v1\n")
            #expect(Self.mode(f.prefix + "/lib/" + lib) == 0o644, "\(lib)")
        }
        #expect(f.read("bin/aethalloc") == "#!/bin/sh\necho cli v1\n")
        #expect(Self.mode(f.prefix + "/bin/aethalloc") == 0o755)
        #expect(f.read("include/aethalloc.h") == "/* aethalloc.h */\n")
        #expect(Self.mode(f.prefix + "/include/aethalloc.h") == 0o644)
        #expect(Self.mode(f.prefix + "/lib/pkgconfig/aethalloc.pc") == 0o644)
        #expect(Self.mode(f.prefix + "/share/aethalloc/install-manifest") == 0o644)
        #expect(f.read("lib/pkgconfig/aethalloc.pc") == """
            prefix=\(f.prefix)
            libdir=${prefix}/lib
            includedir=${prefix}/include

            Name: AethAlloc
            Description: malloc replacement for Linux, preloaded with LD_PRELOAD or linked with -laethalloc
            Version: \(Catalog.version)
            Libs: -L${libdir} -laethalloc
            Cflags: -I${includedir}

            """)

        // The manifest: a header, then each file's FNV-1a 64 and path, sorted.
        let manifest = try #require(f.read("share/aethalloc/install-manifest"))
        let lines = manifest.split(separator: "\n").map(String.init)
        #expect(lines.first == Manifest.header)
        #expect(lines.dropFirst().map { String($0.dropFirst(18)) } == Array(Self.allInstalled.dropLast()))
        for line in lines.dropFirst() {
            let path = String(line.dropFirst(18))
            let bytes = Array(try #require(FileManager.default.contents(atPath: f.prefix + "/" + path)))
            let hex = String(FNV1a64.hash(bytes), radix: 16)
            #expect(line.prefix(16) == String(repeating: "0", count: 16 - hex.count) + hex, "\(path)")
        }

        // One line per action, directories first.
        let out = r.out.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(out.first == "Installing AethAlloc \(Catalog.version) into \(f.prefix)")
        #expect(Array(out[1...12]) == [
            "mkdir \(f.prefix)", "mkdir lib", "mkdir include", "mkdir lib/pkgconfig", "mkdir bin", "mkdir share", "mkdir share/aethalloc",
            "install lib/libaethalloc.so", "install lib/libaethalloc-simple.so", "install lib/libaethalloc-metrics.so",
            "install lib/libaethalloc-hardened.so", "install include/aethalloc.h",
        ])
        #expect(Array(out[13...15]) == ["install lib/pkgconfig/aethalloc.pc", "install bin/aethalloc", "install share/aethalloc/install-manifest"])
        // Then the two ways to preload, with the real path.
        #expect(r.out.contains("Environment=LD_PRELOAD=\(f.prefix)/lib/libaethalloc.so\n"))
        #expect(r.out.contains("/etc/systemd/system/UNIT.service.d/aethalloc.conf"))
        #expect(r.out.contains("system-wide: add this line to /etc/ld.so.preload\n    \(f.prefix)/lib/libaethalloc.so\n"))
        #expect(r.out.contains("warning: /etc/ld.so.preload affects every process"))
        // No temporary files left behind.
        #expect(!f.files().contains { $0.contains(".aethalloc-") })
    }

    @Test func dryRunWritesNothing() throws {
        let f = try Fixture()
        defer { f.remove() }
        let r = f.tool(["--dry-run"])
        #expect(r.code == 0, "\(r.err)")
        #expect(!FileManager.default.fileExists(atPath: f.prefix))
        let out = r.out.split(separator: "\n").map(String.init)
        #expect(out.first == "Dry run: would install AethAlloc \(Catalog.version) into \(f.prefix) (nothing is written)")
        #expect(out.contains("mkdir \(f.prefix)") && out.contains("mkdir share/aethalloc"))
        for p in Self.allInstalled { #expect(out.contains("install \(p)"), "\(p)") }
        #expect(!r.out.contains("LD_PRELOAD"))

        // Over an existing install: lists what would change, changes nothing.
        #expect(f.tool([]).code == 0)
        try Self.write(f.build + "/libaethalloc.so", "ELF libaethalloc.so v2\n")
        let before = f.read("share/aethalloc/install-manifest")
        let d = f.tool(["--dry-run"])
        #expect(d.code == 0)
        #expect(d.out.contains("\nupdate lib/libaethalloc.so\n"))
        #expect(d.out.contains("\nskip (unchanged) lib/libaethalloc-simple.so\n"))
        #expect(d.out.contains("\nupdate share/aethalloc/install-manifest\n"))
        #expect(!d.out.contains("mkdir"))
        #expect(f.read("lib/libaethalloc.so") == "ELF libaethalloc.so v1\n")
        #expect(f.read("share/aethalloc/install-manifest") == before)
    }

    @Test func reinstallIsUnchanged() throws {
        let f = try Fixture()
        defer { f.remove() }
        #expect(f.tool([]).code == 0)
        let inodes = Self.allInstalled.map { Self.inode(f.prefix + "/" + $0) }
        let r = f.tool([])
        #expect(r.code == 0, "\(r.err)")
        for p in Self.allInstalled { #expect(r.out.contains("\nskip (unchanged) \(p)\n"), "\(p)") }
        #expect(!r.out.contains("mkdir") && !r.out.contains("\ninstall ") && !r.out.contains("update"))
        // Not rewritten: the same inodes.
        #expect(Self.allInstalled.map { Self.inode(f.prefix + "/" + $0) } == inodes)
    }

    @Test func upgradeNeedsNoForce() throws {
        let f = try Fixture()
        defer { f.remove() }
        #expect(f.tool([]).code == 0)
        try Self.write(f.build + "/libaethalloc-metrics.so", "ELF libaethalloc-metrics.so v2\n")
        chmod(f.prefix + "/bin/aethalloc", 0o700)  // our file, wrong mode: put right
        let inode = Self.inode(f.prefix + "/lib/libaethalloc-metrics.so")
        let r = f.tool([])
        #expect(r.code == 0, "\(r.err)")
        #expect(r.out.contains("\nupdate lib/libaethalloc-metrics.so\n"))
        #expect(r.out.contains("\nupdate bin/aethalloc\n"))
        #expect(r.out.contains("\nupdate share/aethalloc/install-manifest\n"))
        #expect(f.read("lib/libaethalloc-metrics.so") == "ELF libaethalloc-metrics.so v2\n")
        // Renamed into place, not rewritten: a new inode, so programs that
        // mapped the old library keep it intact.
        #expect(Self.inode(f.prefix + "/lib/libaethalloc-metrics.so") != inode)
        #expect(Self.mode(f.prefix + "/bin/aethalloc") == 0o755)
        #expect(f.tool([]).out.contains("skip (unchanged) lib/libaethalloc-metrics.so"))
    }

    @Test func foreignFileIsRefusedUnlessForced() throws {
        let f = try Fixture()
        defer { f.remove() }
        try FileManager.default.createDirectory(atPath: f.prefix + "/lib", withIntermediateDirectories: true)
        try Self.write(f.prefix + "/lib/libaethalloc-simple.so", "someone else's\n")
        let r = f.tool([])
        #expect(r.code == 1)
        #expect(r.out == "")
        #expect(r.err == "aethalloc-cli install: refusing to overwrite \(f.prefix)/lib/libaethalloc-simple.so: not installed by aethalloc, or changed since; use --force to replace it\n")
        #expect(f.files() == ["lib/libaethalloc-simple.so"])
        #expect(f.read("lib/libaethalloc-simple.so") == "someone else's\n")

        // Dry run shows the refusal too, and fails the same way.
        let d = f.tool(["--dry-run"])
        #expect(d.code == 1)
        #expect(d.out.contains("\nrefuse (not installed by aethalloc) lib/libaethalloc-simple.so\n"))
        #expect(f.files() == ["lib/libaethalloc-simple.so"])

        let forced = f.tool(["--force"])
        #expect(forced.code == 0, "\(forced.err)")
        #expect(forced.out.contains("\nreplace (--force) lib/libaethalloc-simple.so\n"))
        #expect(f.read("lib/libaethalloc-simple.so") == "ELF libaethalloc-simple.so v1\n")
        #expect(f.files() == Self.allInstalled)
        // Now it is ours.
        #expect(f.tool([]).out.contains("skip (unchanged) lib/libaethalloc-simple.so"))
    }

    @Test func editedFileIsForeign() throws {
        let f = try Fixture()
        defer { f.remove() }
        #expect(f.tool([]).code == 0)
        try Self.write(f.prefix + "/include/aethalloc.h", "/* aethalloc.h, with my changes */\n")
        try Self.write(f.build + "/libaethalloc.so", "ELF libaethalloc.so v2\n")
        let manifest = f.read("share/aethalloc/install-manifest")
        let r = f.tool([])
        #expect(r.code == 1)
        #expect(r.err == "aethalloc-cli install: refusing to overwrite \(f.prefix)/include/aethalloc.h: not installed by aethalloc, or changed since; use --force to replace it\n")
        // Nothing else written, not even the pending upgrade.
        #expect(f.read("lib/libaethalloc.so") == "ELF libaethalloc.so v1\n")
        #expect(f.read("share/aethalloc/install-manifest") == manifest)
        #expect(f.read("include/aethalloc.h") == "/* aethalloc.h, with my changes */\n")

        let forced = f.tool(["--force"])
        #expect(forced.code == 0)
        #expect(forced.out.contains("\nreplace (--force) include/aethalloc.h\n"))
        #expect(forced.out.contains("\nupdate lib/libaethalloc.so\n"))
        #expect(f.read("include/aethalloc.h") == "/* aethalloc.h */\n")
    }

    @Test func linksAndStrangeManifestsAreForeign() throws {
        let f = try Fixture()
        defer { f.remove() }
        #expect(f.tool([]).code == 0)
        // A link to a file with the very bytes and mode we would install is
        // still not ours; nor is a manifest we did not write.
        let target = f.root + "/target"
        try FileManager.default.copyItem(atPath: f.prefix + "/bin/aethalloc", toPath: target)
        try FileManager.default.removeItem(atPath: f.prefix + "/bin/aethalloc")
        try FileManager.default.createSymbolicLink(atPath: f.prefix + "/bin/aethalloc", withDestinationPath: target)
        try Self.write(f.prefix + "/share/aethalloc/install-manifest", "not a manifest\n")
        let r = f.tool([])
        #expect(r.code == 1)
        #expect(r.err.hasPrefix("aethalloc-cli install: refusing to overwrite \(f.prefix)/bin/aethalloc (and 1 more): "))
        #expect(r.err.split(separator: "\n").count == 1)
        let d = f.tool(["--dry-run"])
        #expect(d.out.contains("\nrefuse (not installed by aethalloc) share/aethalloc/install-manifest\n"))
        let forced = f.tool(["--force"])
        #expect(forced.code == 0, "\(forced.err)")
        // The link itself is replaced; its target is left alone.
        #expect(try FileManager.default.attributesOfItem(atPath: f.prefix + "/bin/aethalloc")[.type] as? FileAttributeType == .typeRegular)
        #expect(FileManager.default.contents(atPath: target) == Data("#!/bin/sh\necho cli v1\n".utf8))
        #expect(f.read("share/aethalloc/install-manifest")?.hasPrefix(Manifest.header) == true)
    }

    // MARK: - Sources

    @Test func missingSourcesFailInOneLine() throws {
        let f = try Fixture()
        defer { f.remove() }
        try FileManager.default.removeItem(atPath: f.build + "/libaethalloc-hardened.so")
        let r = f.tool([])
        #expect(r.code == 1)
        #expect(r.err == "aethalloc-cli install: missing \(f.build)/libaethalloc-hardened.so: build it with 'swift build -c release' (or pass --from DIR)\n")
        #expect(!FileManager.default.fileExists(atPath: f.prefix))

        // --from names another build directory.
        let other = f.root + "/other"
        try FileManager.default.copyItem(atPath: f.build, toPath: other)
        try Self.write(other + "/libaethalloc-hardened.so", "ELF hardened from elsewhere\n")
        let from = f.tool(["--from", other])
        #expect(from.code == 0, "\(from.err)")
        #expect(f.read("lib/libaethalloc-hardened.so") == "ELF hardened from elsewhere\n")

        // No header: one line.
        let g = try Fixture()
        defer { g.remove() }
        try FileManager.default.removeItem(atPath: g.package + "/include/aethalloc.h")
        let h = g.tool([])
        #expect(h.code == 1)
        #expect(h.err == "aethalloc-cli install: cannot find aethalloc.h: no \(g.package)/include/aethalloc.h\n")
    }

    @Test func unwritablePrefixFailsInOneLine() throws {
        let f = try Fixture()
        defer { chmod(f.root, 0o755); f.remove() }
        // Root may write anywhere but sysfs; others may not write a 0555 directory.
        let target: String
        if geteuid() == 0 {
            target = "/sys/aethalloc-install-test"
        } else {
            try FileManager.default.createDirectory(atPath: f.root + "/ro", withIntermediateDirectories: true)
            chmod(f.root + "/ro", 0o555)
            target = f.root + "/ro/prefix"
        }
        let c = Console.capturing()
        let code = AethAllocTool.main(["aethalloc-cli", "install", "--prefix", target], console: c, locator: f.locator)
        #expect(code == 1)
        let hint = geteuid() == 0 ? "(choose another --prefix)" : "(run as root, or choose another --prefix)"
        #expect(c.capturedErr == "aethalloc-cli install: cannot create \(target): permission denied \(hint)\n")
        chmod(f.root + "/ro", 0o755)

        // A file where a directory must go.
        try FileManager.default.createDirectory(atPath: f.prefix, withIntermediateDirectories: true)
        try Self.write(f.prefix + "/lib", "a file\n")
        let r = f.tool([])
        #expect(r.code == 1)
        #expect(r.err == "aethalloc-cli install: cannot install into \(f.prefix)/lib: not a directory\n")
        #expect(f.files() == ["lib"])
    }

    // MARK: - Pieces

    @Test func fnv1a64KnownValues() {
        // The reference vectors from the FNV authors' test suite.
        #expect(FNV1a64.hash([]) == 0xcbf2_9ce4_8422_2325)
        #expect(FNV1a64.hash(Array("a".utf8)) == 0xaf63_dc4c_8601_ec8c)
        #expect(FNV1a64.hash(Array("foobar".utf8)) == 0x8594_4171_f739_67e8)
    }

    @Test func manifestRoundTrip() {
        let m = Manifest(entries: ["lib/a.so": 0x1, "bin/aethalloc": 0xffff_ffff_ffff_ffff])
        #expect(m.text == Manifest.header + "\nffffffffffffffff  bin/aethalloc\n0000000000000001  lib/a.so\n")
        #expect(Manifest(text: m.text) == m)
        #expect(Manifest(text: "not a manifest\n") == nil)
        #expect(Manifest(text: Manifest.header + "\nzz  lib/a.so\n") == nil)
    }

    @Test func versionMatchesNix() throws {
        let root = try #require(Locator.findPackageRoot())
        let nix = try String(contentsOfFile: root + "/nix/aethalloc.nix", encoding: .utf8)
        #expect(nix.contains("\n  version = \"\(Catalog.version)\";\n"))
    }

    @Test func installedCommandFindsItsLibraries() {
        let l = Locator(libDir: nil, executableDir: "/opt/aeth/bin", packageRoot: nil, fileExists: { $0 == "/opt/aeth/lib/libaethalloc.so" })
        #expect(l.variantSearchDirs == ["/opt/aeth/bin", "/opt/aeth/lib"])
        #expect(l.variantPath("magazine") == "/opt/aeth/lib/libaethalloc.so")
        #expect(Locator(libDir: nil, executableDir: "/bin", packageRoot: nil).variantSearchDirs == ["/bin", "/lib"])
        #expect(Locator(libDir: nil, executableDir: "/x/.build/release", packageRoot: nil).variantSearchDirs == ["/x/.build/release"])
    }
}
