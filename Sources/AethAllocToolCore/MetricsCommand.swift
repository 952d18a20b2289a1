import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The exporter's state: reads the statistics directory at every scrape,
/// counts and logs (once per file and message) what it cannot read, and
/// keeps serving the other processes.
public final class MetricsExporter: @unchecked Sendable {
    public let directory: String
    private let console: Console
    private let lock = NSLock()
    private var errors: [String: UInt64] = [:]
    /// The last message logged per file (or for the directory), so that a
    /// bad file is logged once, not at every scrape.
    private var logged: [String: String] = [:]

    public init(directory: String, console: Console) {
        self.directory = directory
        self.console = console
    }

    /// The error counts by kind (directory, file, request).
    public var errorCounts: [String: UInt64] { lock.withLock { errors } }

    func log(_ line: String) { console.errLine("aethalloc-cli metrics: \(line)") }

    /// One scrape: the exposition text.
    public func scrape() -> String {
        lock.withLock {
            var snapshots: [StatsSnapshot] = []
            var seen: Set<String> = []
            do throws(StatsDirectoryError) {
                let scan = try StatsDirectory.scan(directory)
                snapshots = scan.snapshots
                for path in scan.removed { log("removed \(path): its process is gone") }
                for p in scan.problems {
                    errors["file", default: 0] += 1
                    seen.insert(p.path)
                    if logged[p.path] != p.error.message {
                        logged[p.path] = p.error.message
                        log("skipping \(p.line)")
                    }
                }
            } catch {
                errors["directory", default: 0] += 1
                seen.insert(directory)
                if logged[directory] != error.message {
                    logged[directory] = error.message
                    log(error.message)
                }
            }
            // Forget what is fixed, so that a relapse is logged again.
            logged = logged.filter { seen.contains($0.key) }
            return Prometheus.exposition(snapshots, errors: errors)
        }
    }

    /// A bad HTTP request: counted and logged.
    public func badRequest(_ reason: String) {
        lock.withLock { errors["request", default: 0] += 1 }
        log("bad request: \(reason)")
    }

    /// Routes one request: /metrics, / (an index), else 404; GET and HEAD only.
    public func respond(_ r: HTTPRequest) -> HTTPResponse {
        guard r.method == "GET" || r.method == "HEAD" else {
            return .text(405, "method \(r.method) not allowed", headers: [HTTPHeader(name: "Allow", value: "GET, HEAD")])
        }
        switch r.path {
        case "/metrics":
            return HTTPResponse(status: 200, contentType: Prometheus.contentType, body: scrape())
        case "/":
            return .text(200, """
                AethAlloc exporter (aethalloc-cli metrics)

                /metrics  Prometheus metrics of every process publishing statistics in \(directory)
                """)
        default:
            return .text(404, "not found: \(r.path) (try /metrics)")
        }
    }
}

/// `aethalloc-cli metrics`.
public enum MetricsCommand {
    /// Binds the port (a port in use is a one-line error, exit 1) and serves
    /// until SIGINT or SIGTERM.
    public static func run(_ o: MetricsOptions, console: Console, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Int32 {
        let (exporter, server) = try start(o, console: console, environment: environment)
        let watcher = try InterruptWatcher()
        defer { watcher.restore() }
        console.errLine("aethalloc-cli metrics: serving http://\(server.address)/metrics for the processes publishing in \(exporter.directory)")
        // Say at once if the directory cannot be read (serving goes on).
        _ = exporter.scrape()
        server.serve(interruptFD: watcher.fd)
        return 0
    }

    /// The exporter and its bound server, not yet serving (tests serve it on
    /// a thread of their own).
    public static func start(_ o: MetricsOptions, console: Console, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> (MetricsExporter, HTTPServer) {
        let exporter = MetricsExporter(directory: o.dir ?? StatsDirectory.defaultPath(environment: environment), console: console)
        let server = try HTTPServer(
            listen: o.listen, handler: { exporter.respond($0) }, onBadRequest: { exporter.badRequest($0) })
        return (exporter, server)
    }
}
