import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// `aethalloc-cli install`: copies one build into a prefix.
///
///     PREFIX/lib/libaethalloc.so                 0644  the four variants, from
///     PREFIX/lib/libaethalloc-simple.so          0644  the build directory
///     PREFIX/lib/libaethalloc-metrics.so         0644
///     PREFIX/lib/libaethalloc-hardened.so        0644
///     PREFIX/include/aethalloc.h                 0644  <package>/include/aethalloc.h
///     PREFIX/lib/pkgconfig/aethalloc.pc          0644  generated for PREFIX
///     PREFIX/bin/aethalloc                       0755  the build's aethalloc-cli
///     PREFIX/share/aethalloc/install-manifest    0644  what this command installed
///
/// Modes. Libraries are 0644: the dynamic loader only reads and maps them, and
/// Debian Policy (10.9, lintian's shlib-with-executable-bit) installs them
/// without the execute bit. Only the command is 0755. Modes are set with
/// fchmod, so the umask does not narrow them.
///
/// Ownership. The manifest lists each installed file with the FNV-1a 64 hash
/// of its bytes. A destination that exists is ours only if the manifest lists
/// it and the hash matches what is on disk now; anything else (a file another
/// package put there, or one of ours that someone edited) is foreign and is
/// replaced only with --force. The hash guards against accidents, not
/// attackers: whoever can write PREFIX can rewrite the manifest too, so a
/// cryptographic hash would buy nothing.
///
/// Order. Every destination is checked before anything is written, so a refusal
/// writes nothing. Each file is then written to a temporary file in its own
/// directory, fsynced, given its mode and renamed over the destination: a
/// program starting meanwhile maps the old library or the new one, never a
/// half-written one, and running programs keep the inode they mapped. The
/// manifest is written last, and also after a failure part-way, so files
/// already in place stay ours.
public enum InstallCommand {
    /// One file to put under the prefix.
    public struct Item: Equatable, Sendable {
        /// Relative to the prefix.
        public var path: String
        public var mode: mode_t
        public var contents: [UInt8]
    }

    /// What happens to one destination.
    public enum Action: String, Equatable, Sendable {
        case install  // nothing there yet
        case update  // ours, with other bytes or mode
        case replace = "replace (--force)"  // foreign, and --force
        case unchanged = "skip (unchanged)"  // same bytes and mode
        case refuse = "refuse (not installed by aethalloc)"  // foreign, no --force
    }

    public static let manifestPath = "share/aethalloc/install-manifest"
    public static let commandName = "aethalloc"
    public static let libraryMode: mode_t = 0o644
    public static let commandMode: mode_t = 0o755
    public static let dataMode: mode_t = 0o644

    /// `aethalloc-cli install`.
    public static func run(_ o: InstallOptions, locator: Locator, console: Console) throws -> Int32 {
        let items = try sources(o, locator: locator)
        let prefix = o.prefix
        let dirs = try missingDirectories(prefix: prefix, items: items.map(\.path) + [manifestPath])
        let oldManifest = try readManifest(prefix: prefix)

        var plan: [(Item, Action)] = []
        for item in items {
            plan.append((item, try action(for: item, prefix: prefix, manifest: oldManifest.entries, force: o.force)))
        }
        // The manifest as it will be after a full run; its own action follows
        // the same rules (a file there that is not a manifest is foreign).
        var entries = oldManifest.entries
        for (item, _) in plan { entries[item.path] = FNV1a64.hash(item.contents) }
        let manifestItem = Item(path: manifestPath, mode: dataMode, contents: Array(Manifest(entries: entries).text.utf8))
        var manifestAction = try action(for: manifestItem, prefix: prefix, manifest: [:], force: o.force)
        if oldManifest.isOurs, manifestAction == .refuse || manifestAction == .replace { manifestAction = .update }

        let refused = (plan + [(manifestItem, manifestAction)]).filter { $0.1 == .refuse }.map { join(prefix, $0.0.path) }

        if o.dryRun {
            console.outLine("Dry run: would install AethAlloc \(Catalog.version) into \(prefix) (nothing is written)")
            for d in dirs { console.outLine("mkdir \(display(d, prefix: prefix))") }
            for (item, a) in plan { console.outLine("\(a.rawValue) \(item.path)") }
            console.outLine("\(manifestAction.rawValue) \(manifestPath)")
        }
        if let first = refused.first {
            let more = refused.count > 1 ? " (and \(refused.count - 1) more)" : ""
            throw ToolError("refusing to overwrite \(first)\(more): not installed by aethalloc, or changed since; use --force to replace it")
        }
        if o.dryRun { return 0 }

        console.outLine("Installing AethAlloc \(Catalog.version) into \(prefix)")
        for d in dirs {
            if mkdir(d, 0o755) != 0 && errno != EEXIST { throw writeError("cannot create \(d)", errno) }
            console.outLine("mkdir \(display(d, prefix: prefix))")
        }
        // Record what is in place even if a later file fails.
        var written = oldManifest.entries
        var failure: Error?
        for (item, a) in plan {
            do {
                if a != .unchanged { try atomicWrite(item.contents, to: join(prefix, item.path), mode: item.mode) }
                written[item.path] = FNV1a64.hash(item.contents)
                console.outLine("\(a.rawValue) \(item.path)")
            } catch {
                failure = error
                break
            }
        }
        let manifestText = Array(Manifest(entries: written).text.utf8)
        if let failure {
            try? atomicWrite(manifestText, to: join(prefix, manifestPath), mode: dataMode)
            throw failure
        }
        if manifestAction != .unchanged { try atomicWrite(manifestText, to: join(prefix, manifestPath), mode: dataMode) }
        console.outLine("\(manifestAction.rawValue) \(manifestPath)")
        console.out(afterInstall(prefix: prefix))
        return 0
    }

    // MARK: - Sources

    /// What to install, read into memory: the four libraries and the command
    /// from the build directory, the header from the package, the .pc file.
    static func sources(_ o: InstallOptions, locator: Locator) throws -> [Item] {
        let buildDir: String
        if let from = o.from {
            buildDir = from.hasPrefix("/") ? from : FileManager.default.currentDirectoryPath + "/" + from
        } else if let exe = locator.executableDir {
            buildDir = exe
        } else {
            throw ToolError("cannot tell where this executable is; pass --from DIR (the build directory, e.g. .build/release)")
        }
        func built(_ file: String) throws -> [UInt8] {
            let path = (buildDir as NSString).standardizingPath + "/" + file
            guard let data = FileManager.default.contents(atPath: path) else {
                throw ToolError("missing \(path): build it with '\(Catalog.buildHint)' (or pass --from DIR)")
            }
            return Array(data)
        }
        var items: [Item] = []
        for v in Catalog.variants {
            let file = Catalog.libraryName(variant: v)
            items.append(Item(path: "lib/" + file, mode: libraryMode, contents: try built(file)))
        }
        guard let root = locator.packageRoot else {
            throw ToolError("cannot find aethalloc.h: no AethAlloc package found (run from inside it)")
        }
        let header = root + "/include/aethalloc.h"
        guard let h = FileManager.default.contents(atPath: header) else {
            throw ToolError("cannot find aethalloc.h: no \(header)")
        }
        items.append(Item(path: "include/aethalloc.h", mode: dataMode, contents: Array(h)))
        items.append(Item(path: "lib/pkgconfig/aethalloc.pc", mode: dataMode, contents: Array(pkgConfig(prefix: o.prefix).utf8)))
        items.append(Item(path: "bin/" + commandName, mode: commandMode, contents: try built("aethalloc-cli")))
        return items
    }

    /// The pkg-config file for a prefix.
    public static func pkgConfig(prefix: String) -> String {
        """
        prefix=\(prefix)
        libdir=${prefix}/lib
        includedir=${prefix}/include

        Name: AethAlloc
        Description: malloc replacement for Linux, preloaded with LD_PRELOAD or linked with -laethalloc
        Version: \(Catalog.version)
        Libs: -L${libdir} -laethalloc
        Cflags: -I${includedir}

        """
    }

    /// The two ways to preload the installed library, with the real paths.
    public static func afterInstall(prefix: String) -> String {
        let lib = join(prefix, "lib/" + Catalog.libraryName(variant: Catalog.defaultVariant))
        return """

            To preload \(lib) (the other variants are next to it):
              into one systemd service: 'systemctl edit UNIT', or a drop-in
              /etc/systemd/system/UNIT.service.d/aethalloc.conf and 'systemctl daemon-reload', with
                [Service]
                Environment=LD_PRELOAD=\(lib)
              then 'systemctl restart UNIT';
              system-wide: add this line to /etc/ld.so.preload
                \(lib)
            warning: /etc/ld.so.preload affects every process on the machine, sshd and root shells
            included; a broken entry there can lock you out. Try one service first.

            """
    }

    // MARK: - Destinations

    /// Whether a destination may be written, and how.
    static func action(for item: Item, prefix: String, manifest: [String: UInt64], force: Bool) throws -> Action {
        let path = join(prefix, item.path)
        var st = stat()
        if lstat(path, &st) != 0 {
            if errno == ENOENT { return .install }
            throw ToolError("cannot inspect \(path): \(errnoText(errno))")
        }
        switch st.st_mode & S_IFMT {
        case S_IFDIR: throw ToolError("cannot install \(path): it is a directory")
        case S_IFREG:
            guard let data = FileManager.default.contents(atPath: path) else {
                throw ToolError("cannot read \(path): \(errnoText(errno))")
            }
            let onDisk = Array(data)
            if onDisk == item.contents && (st.st_mode & 0o7777) == item.mode { return .unchanged }
            if manifest[item.path] == FNV1a64.hash(onDisk) { return .update }
            return force ? .replace : .refuse
        default:
            // A symbolic link or special file is never ours; --force replaces
            // the link itself, not its target.
            return force ? .replace : .refuse
        }
    }

    /// The directories to create, parents first: the prefix and its missing
    /// ancestors, then each missing directory under it.
    static func missingDirectories(prefix: String, items: [String]) throws -> [String] {
        var wanted: [String] = []
        var d = prefix
        while d != "/" && !d.isEmpty {
            wanted.insert(d, at: 0)
            d = (d as NSString).deletingLastPathComponent
        }
        for item in items {
            var parts = item.split(separator: "/").dropLast().map(String.init)
            var sub: [String] = []
            while !parts.isEmpty { sub.insert(join(prefix, parts.joined(separator: "/")), at: 0); parts.removeLast() }
            for s in sub where !wanted.contains(s) { wanted.append(s) }
        }
        var missing: [String] = []
        for w in wanted {
            var st = stat()
            if stat(w, &st) == 0 {
                if (st.st_mode & S_IFMT) != S_IFDIR { throw ToolError("cannot install into \(w): not a directory") }
            } else if errno == ENOENT {
                missing.append(w)
            } else {
                throw ToolError("cannot inspect \(w): \(errnoText(errno))")
            }
        }
        return missing
    }

    static func readManifest(prefix: String) throws -> (entries: [String: UInt64], isOurs: Bool) {
        let path = join(prefix, manifestPath)
        guard let data = FileManager.default.contents(atPath: path) else { return ([:], false) }
        guard let m = Manifest(text: String(decoding: data, as: UTF8.self)) else { return ([:], false) }
        return (m.entries, true)
    }

    /// Writes `bytes` to a temporary file next to `path`, sets `mode`, and
    /// renames it over `path`.
    static func atomicWrite(_ bytes: [UInt8], to path: String, mode: mode_t) throws {
        let dir = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        var template = Array("\(dir)/.\(name).aethalloc-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw writeError("cannot write in \(dir)", errno) }
        let temp = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        var done = false
        defer {
            if !done { unlink(temp) }
        }
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                let e = errno
                close(fd)
                throw writeError("cannot write \(temp)", e)
            }
            offset += n
        }
        if fchmod(fd, mode) != 0 || fsync(fd) != 0 {
            let e = errno
            close(fd)
            throw writeError("cannot write \(temp)", e)
        }
        if close(fd) != 0 { throw writeError("cannot write \(temp)", errno) }
        if rename(temp, path) != 0 { throw writeError("cannot replace \(path)", errno) }
        done = true
    }

    static func writeError(_ what: String, _ code: Int32) -> ToolError {
        var hint = ""
        if code == EACCES || code == EPERM || code == EROFS {
            hint = geteuid() == 0 ? " (choose another --prefix)" : " (run as root, or choose another --prefix)"
        }
        return ToolError("\(what): \(errnoText(code))\(hint)")
    }

    static func join(_ prefix: String, _ relative: String) -> String {
        prefix == "/" ? "/" + relative : prefix + "/" + relative
    }

    /// A directory as printed: relative to the prefix inside it.
    static func display(_ dir: String, prefix: String) -> String {
        let inside = prefix == "/" ? "/" : prefix + "/"
        return dir.hasPrefix(inside) ? String(dir.dropFirst(inside.count)) : dir
    }
}

/// The install manifest: a header line, then one line per installed file,
/// `<16 hex digits of FNV-1a 64>  <path relative to the prefix>`, sorted.
struct Manifest: Equatable {
    static let header = "# aethalloc install-manifest 1: FNV-1a 64 of each file installed, path relative to the prefix"
    var entries: [String: UInt64]

    init(entries: [String: UInt64]) { self.entries = entries }

    /// nil unless `text` is a manifest this command wrote.
    init?(text: String) {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: true)
        guard lines.first.map(String.init) == Manifest.header else { return nil }
        lines.removeFirst()
        var entries: [String: UInt64] = [:]
        for line in lines {
            guard line.count > 18, line.dropFirst(16).hasPrefix("  "), let h = UInt64(line.prefix(16), radix: 16) else { return nil }
            entries[String(line.dropFirst(18))] = h
        }
        self.entries = entries
    }

    var text: String {
        var s = Manifest.header + "\n"
        for (path, h) in entries.sorted(by: { $0.key < $1.key }) {
            let hex = String(h, radix: 16)
            s += String(repeating: "0", count: 16 - hex.count) + hex + "  " + path + "\n"
        }
        return s
    }
}

/// FNV-1a, 64-bit (Fowler, Noll, Vo): a fast checksum, enough to tell whether
/// a file changed; not a defence against anyone choosing the bytes.
enum FNV1a64 {
    static func hash(_ bytes: [UInt8]) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes {
            h ^= UInt64(b)
            h &*= 0x0000_0100_0000_01b3  // wraps by definition: FNV works modulo 2^64
        }
        return h
    }
}
