import Foundation
import Testing

@testable import AethAllocToolCore

#if canImport(Glibc)
import Glibc
#endif

/// Sends raw bytes to 127.0.0.1:port and returns everything the server
/// answers before it closes.
func rawHTTP(port: UInt16, _ bytes: [UInt8], closeAfterSend: Bool = false, timeout: Double = 5) -> String {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return "" }
    defer { close(fd) }
    var tv = timeval(tv_sec: Int(timeout), tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = port.bigEndian
    addr.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    let ok = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
    guard ok else { return "" }
    var off = 0
    while off < bytes.count {
        let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + off, $0.count - off, Int32(MSG_NOSIGNAL)) }
        if n <= 0 { break }
        off += n
    }
    if closeAfterSend { shutdown(fd, Int32(SHUT_WR)) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { break }
        out += buf[0..<n]
    }
    return String(decoding: out, as: UTF8.self)
}

/// A server on an ephemeral loopback port, serving on a thread of its own
/// until `stop()`.
final class RunningServer: @unchecked Sendable {
    let server: HTTPServer
    private let done = DispatchSemaphore(value: 0)

    init(_ server: HTTPServer) {
        self.server = server
        let t = Thread { [server, done] in
            server.serve()
            done.signal()
        }
        t.start()
    }

    var port: UInt16 { server.address.port }

    func stop() {
        server.stop()
        _ = done.wait(timeout: .now() + 10)
    }
}

@Suite struct PrometheusTests {
    @Test func escaping() {
        #expect(Prometheus.escapeLabelValue(#"a"b\c"#) == #"a\"b\\c"#)
        #expect(Prometheus.escapeLabelValue("line\nnext") == #"line\nnext"#)
        #expect(Prometheus.escapeLabelValue("tab\tü") == "tab\tü")
        #expect(Prometheus.escapeHelp("back\\slash\nnl \"q\"") == #"back\\slash\nnl "q""#)
    }

    @Test func exposition() {
        var a = StatsSnapshot()
        a.pid = 10
        a.command = #"we"ird\name"#
        a.variant = "metrics"
        a.counters = counters(1000, 900)
        var b = StatsSnapshot()
        b.pid = 11
        b.command = "two\nlines"
        b.variant = "metrics"
        b.counters = counters(5, 5)
        let text = Prometheus.exposition([a, b], errors: ["file": 2])
        let lines = text.split(separator: "\n").map(String.init)
        for name in ["aethalloc_allocs_total", "aethalloc_frees_total", "aethalloc_cache_hits_total", "aethalloc_cache_misses_total",
                     "aethalloc_direct_allocs_total", "aethalloc_bytes_in_use", "aethalloc_peak_bytes_in_use", "aethalloc_mapped_bytes_total",
                     "aethalloc_returned_bytes_total", "aethalloc_depot_transfers_total", "aethalloc_threads_exited_total",
                     "aethalloc_processes", "aethalloc_exporter_errors_total"] {
            #expect(lines.filter { $0.hasPrefix("# HELP \(name) ") }.count == 1, "\(name)")
            #expect(lines.filter { $0.hasPrefix("# TYPE \(name) ") }.count == 1, "\(name)")
        }
        #expect(lines.contains("# TYPE aethalloc_allocs_total counter"))
        #expect(lines.contains("# TYPE aethalloc_bytes_in_use gauge"))
        #expect(lines.contains("# TYPE aethalloc_peak_bytes_in_use gauge"))
        #expect(lines.contains("# TYPE aethalloc_mapped_bytes_total counter"))
        #expect(lines.contains(#"aethalloc_allocs_total{pid="10",command="we\"ird\\name",variant="metrics"} 1000"#))
        #expect(lines.contains(#"aethalloc_frees_total{pid="11",command="two\nlines",variant="metrics"} 5"#))
        #expect(lines.contains(#"aethalloc_peak_bytes_in_use{pid="10",command="we\"ird\\name",variant="metrics"} 1048576"#))
        #expect(lines.contains("aethalloc_processes 2"))
        #expect(lines.contains(#"aethalloc_exporter_errors_total{kind="file"} 2"#))
        #expect(lines.contains(#"aethalloc_exporter_errors_total{kind="request"} 0"#))
        // Samples follow their family's TYPE line, and every line is a comment or a sample.
        let typeIndex = lines.firstIndex(of: "# TYPE aethalloc_frees_total counter")!
        #expect(lines[typeIndex + 1].hasPrefix("aethalloc_frees_total{pid=\"10\""))
        #expect(text.hasSuffix("\n"))
        // No process: the families are still described, the count is 0.
        let empty = Prometheus.exposition([], errors: [:])
        #expect(empty.contains("# TYPE aethalloc_allocs_total counter\n# HELP aethalloc_frees_total"))
        #expect(empty.contains("aethalloc_processes 0\n"))
    }
}

@Suite struct HTTPTests {
    func parse(_ s: String) -> HTTPParse { HTTP.parse(Array(s.utf8)) }

    @Test func goodRequests() {
        guard case .request(let r) = parse("GET /metrics HTTP/1.1\r\nHost: localhost:9091\r\nAccept: text/plain;q=0.9 \r\n\r\n") else {
            Issue.record("not parsed")
            return
        }
        #expect(r.method == "GET" && r.path == "/metrics" && r.version == "HTTP/1.1")
        #expect(r.header("host") == "localhost:9091")
        #expect(r.header("ACCEPT") == "text/plain;q=0.9")
        // LF only, a query, a leading empty line, HTTP/1.0 without headers.
        guard case .request(let q) = parse("\r\nGET /metrics?x=1&y HTTP/1.0\n\n") else {
            Issue.record("not parsed")
            return
        }
        #expect(q.path == "/metrics" && q.target == "/metrics?x=1&y" && q.headers.isEmpty)
        // Absolute form.
        guard case .request(let a) = parse("HEAD http://h:1/metrics HTTP/1.1\r\n\r\n") else {
            Issue.record("not parsed")
            return
        }
        #expect(a.method == "HEAD" && a.path == "/metrics")
        guard case .request(let root) = parse("GET http://h HTTP/1.1\r\n\r\n") else {
            Issue.record("not parsed")
            return
        }
        #expect(root.path == "/")
    }

    @Test func incompleteAndBadRequests() {
        #expect(parse("") == .incomplete)
        #expect(parse("GET /metrics HTTP/1.1\r\nHost: x\r\n") == .incomplete)
        let bad: [String: Int] = [
            "GARBAGE\r\n\r\n": 400,
            "GET /metrics\r\n\r\n": 400,
            "GET  /metrics HTTP/1.1\r\n\r\n": 400,
            "GET /metrics HTTP/1.1 extra\r\n\r\n": 400,
            "GET metrics HTTP/1.1\r\n\r\n": 400,
            "GET /met rics HTTP/1.1\r\n\r\n": 400,
            "G(T /metrics HTTP/1.1\r\n\r\n": 400,
            "GET /metrics HTTX/1.1\r\n\r\n": 400,
            "GET /metrics HTTP/11\r\n\r\n": 400,
            "GET /metrics HTTP/2.0\r\n\r\n": 505,
            "GET /metrics HTTP/1.1\r\nNoColon\r\n\r\n": 400,
            "GET /metrics HTTP/1.1\r\nBad Name: x\r\n\r\n": 400,
            "GET /metrics HTTP/1.1\r\nA: b\r\n folded\r\n\r\n": 400,
            "GET /metrics HTTP/1.1\r\nA: b\u{1}c\r\n\r\n": 400,
            "GET /métrics HTTP/1.1\r\n\r\n": 400,
        ]
        for (text, status) in bad {
            guard case .bad(let s, let reason) = parse(text) else {
                Issue.record("accepted: \(text.debugDescription)")
                continue
            }
            #expect(s == status, "\(text.debugDescription): \(reason)")
            #expect(!reason.isEmpty)
        }
        #expect(HTTP.parse([0x47, 0x45, 0x54, 0x20, 0x2F, 0xFF, 13, 10, 13, 10]) == .bad(status: 400, reason: "request head is not UTF-8"))
    }

    @Test func tooLong() {
        let long = "GET /" + String(repeating: "a", count: HTTP.maxRequestBytes) + " HTTP/1.1\r\n\r\n"
        #expect(parse(long) == .bad(status: 431, reason: "request head longer than 8192 bytes"))
        // Too long and not even finished.
        #expect(parse(String(repeating: "x", count: HTTP.maxRequestBytes)) == .bad(status: 431, reason: "request head longer than 8192 bytes"))
        #expect(parse(String(repeating: "x", count: HTTP.maxRequestBytes - 1)) == .incomplete)
        // Many headers adding up.
        let many = "GET / HTTP/1.1\r\n" + String(repeating: "X-A: 0123456789012345678901234567890123456789\r\n", count: 200) + "\r\n"
        guard case .bad(431, _) = parse(many) else {
            Issue.record("accepted many headers")
            return
        }
    }

    @Test func responseBytes() {
        let r = HTTPResponse(status: 200, contentType: Prometheus.contentType, body: "x 1\n")
        #expect(String(decoding: r.serialized(), as: UTF8.self)
            == "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 4\r\nConnection: close\r\n\r\nx 1\n")
        #expect(String(decoding: r.serialized(includeBody: false), as: UTF8.self).hasSuffix("close\r\n\r\n"))
    }

    @Test func listenAddresses() {
        #expect(ListenAddress.parse(":9091") == ListenAddress(host: "127.0.0.1", port: 9091))
        #expect(ListenAddress.parse("127.0.0.1:0") == ListenAddress(host: "127.0.0.1", port: 0))
        #expect(ListenAddress.parse("0.0.0.0:80") == ListenAddress(host: "0.0.0.0", port: 80))
        #expect(ListenAddress.parse("localhost:9091") == ListenAddress(host: "localhost", port: 9091))
        #expect(ListenAddress.parse("[::1]:9091") == ListenAddress(host: "::1", port: 9091))
        #expect(ListenAddress.parse("[::1]:9091")?.description == "[::1]:9091")
        for bad in ["9091", ":", ":65536", ":-1", ":90a", "::1:9091", "host:", "a b:1", "[]:1"] {
            #expect(ListenAddress.parse(bad) == nil, "\(bad)")
        }
    }

    /// The server keeps serving through malformed, oversized, slow and
    /// abandoned requests, and answers each in one response.
    @Test func serverSurvivesBadClients() throws {
        let errors = Console.capturing()
        let server = try HTTPServer(
            listen: ListenAddress(host: "127.0.0.1", port: 0),
            handler: { r in .text(200, "hello \(r.method) \(r.path)") },
            onBadRequest: { errors.errLine($0) })
        server.readTimeoutMs = 500
        let s = RunningServer(server)
        defer { s.stop() }
        #expect(s.port != 0)

        let ok = rawHTTP(port: s.port, Array("GET /x?y HTTP/1.0\r\n\r\n".utf8))
        #expect(ok.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(ok.contains("Content-Length: 13\r\n"))
        #expect(ok.contains("Connection: close\r\n"))
        #expect(ok.hasSuffix("\r\n\r\nhello GET /x\n"))
        let head = rawHTTP(port: s.port, Array("HEAD / HTTP/1.1\r\n\r\n".utf8))
        #expect(head.hasPrefix("HTTP/1.1 200 OK") && head.hasSuffix("\r\n\r\n"))

        let malformed = rawHTTP(port: s.port, Array("HELLO\r\n\r\n".utf8))
        #expect(malformed.hasPrefix("HTTP/1.1 400 Bad Request\r\n"))
        let long = rawHTTP(port: s.port, Array(("GET /" + String(repeating: "a", count: 20000) + " HTTP/1.1\r\n\r\n").utf8))
        #expect(long.hasPrefix("HTTP/1.1 431 "))
        let slow = rawHTTP(port: s.port, Array("GET /metrics HTTP/1.1\r\n".utf8))
        #expect(slow.hasPrefix("HTTP/1.1 408 "))
        let cut = rawHTTP(port: s.port, Array("GET /metr".utf8), closeAfterSend: true)
        #expect(cut.isEmpty)
        #expect(rawHTTP(port: s.port, []).hasPrefix("HTTP/1.1 408 "))  // connects, says nothing

        let again = rawHTTP(port: s.port, Array("GET /again HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        #expect(again.hasSuffix("hello GET /again\n"))
        let log = errors.capturedErr.split(separator: "\n")
        #expect(log.count == 4, "\(log)")
        #expect(log.contains("malformed request line (answered 400)"))
        #expect(log.contains("timed out reading the request (23 bytes)"))
        #expect(log.contains("incomplete request (9 bytes, then end of stream)"))
    }

    @Test func portInUseIsOneLine() throws {
        let first = try HTTPServer(listen: ListenAddress(host: "127.0.0.1", port: 0), handler: { _ in .text(200, "") })
        let port = first.address.port
        #expect(throws: ToolError("cannot listen on 127.0.0.1:\(port): address already in use")) {
            _ = try HTTPServer(listen: ListenAddress(host: "127.0.0.1", port: port), handler: { _ in .text(200, "") })
        }
        let c = Console.capturing()
        let code = AethAllocTool.main(["aethalloc-cli", "metrics", "--listen", ":\(port)", "--dir", "/nonexistent"], console: c)
        #expect(code == 1)
        #expect(c.capturedErr == "aethalloc-cli metrics: cannot listen on 127.0.0.1:\(port): address already in use\n")
        #expect(throws: ToolError.self) {
            _ = try HTTPServer(listen: ListenAddress(host: "no-such-host.invalid", port: 0), handler: { _ in .text(200, "") })
        }
    }
}

@Suite struct ExporterUnitTests {
    @Test func routesAndErrors() throws {
        let dir = try tempDir("exporter")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var f = FakeStats()
        f.command = "fake"
        f.counters = counters(1234, 1000)
        _ = try f.write(to: dir)
        try Data("junk".utf8).write(to: URL(fileURLWithPath: dir + "/aethalloc-1.stats"))  // init is alive: reported
        let console = Console.capturing()
        let e = MetricsExporter(directory: dir, console: console)
        func get(_ path: String, _ method: String = "GET") -> HTTPResponse {
            e.respond(HTTPRequest(method: method, target: path, path: path, version: "HTTP/1.1", headers: []))
        }
        let m = get("/metrics")
        #expect(m.status == 200)
        #expect(m.contentType == "text/plain; version=0.0.4; charset=utf-8")
        #expect(m.body.contains(#"aethalloc_allocs_total{pid="\#(getpid())",command="fake",variant="metrics"} 1234"#))
        #expect(m.body.contains(#"aethalloc_exporter_errors_total{kind="file"} 1"#))
        #expect(get("/metrics").body.contains(#"aethalloc_exporter_errors_total{kind="file"} 2"#))
        // The bad file is logged once, not at every scrape.
        #expect(console.capturedErr == "aethalloc-cli metrics: skipping \(dir)/aethalloc-1.stats: not an AethAlloc statistics file (bad magic)\n")
        #expect(get("/").status == 200)
        #expect(get("/").body.contains("/metrics"))
        #expect(get("/other").status == 404)
        let post = get("/metrics", "POST")
        #expect(post.status == 405)
        #expect(post.headers == [HTTPHeader(name: "Allow", value: "GET, HEAD")])
        e.badRequest("test")
        #expect(e.errorCounts["request"] == 1)

        // A directory that goes away: counted, logged once, still served.
        let gone = MetricsExporter(directory: dir + "/gone", console: console)
        #expect(gone.scrape().contains("aethalloc_processes 0"))
        #expect(gone.scrape().contains(#"aethalloc_exporter_errors_total{kind="directory"} 2"#))
        #expect(console.capturedErr.components(separatedBy: "cannot read the statistics directory").count == 2)
    }
}
