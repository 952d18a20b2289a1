// HTTP.swift: a minimal HTTP/1.x server on plain POSIX sockets, enough for
// a Prometheus scrape: one request per connection, `Connection: close`.
import Dispatch
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

public struct HTTPRequest: Equatable, Sendable {
    public var method: String
    /// As sent: "/metrics?x=1", or an absolute URI.
    public var target: String
    /// The target's path, without query: "/metrics".
    public var path: String
    /// "HTTP/1.1".
    public var version: String
    public var headers: [HTTPHeader]

    /// The first value of a header, by case-insensitive name.
    public func header(_ name: String) -> String? {
        headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }
}

public struct HTTPHeader: Equatable, Sendable {
    public var name: String
    public var value: String
}

public enum HTTPParse: Equatable, Sendable {
    /// The header block has not ended yet: read more.
    case incomplete
    case request(HTTPRequest)
    /// Refuse with this status (400, 431, 505) and reason.
    case bad(status: Int, reason: String)
}

public struct HTTPResponse: Equatable, Sendable {
    public var status: Int
    public var contentType: String
    public var body: String
    public var headers: [HTTPHeader]

    public init(status: Int, contentType: String = "text/plain; charset=utf-8", body: String, headers: [HTTPHeader] = []) {
        self.status = status
        self.contentType = contentType
        self.body = body
        self.headers = headers
    }

    /// A plain-text response whose body is `text` and a line feed.
    public static func text(_ status: Int, _ text: String, headers: [HTTPHeader] = []) -> HTTPResponse {
        HTTPResponse(status: status, body: text + "\n", headers: headers)
    }

    /// The bytes on the wire; without the body for HEAD.
    public func serialized(includeBody: Bool = true) -> [UInt8] {
        let body = Array(self.body.utf8)
        var head = "HTTP/1.1 \(status) \(HTTP.reason(status))\r\n"
        head += "Content-Type: \(contentType)\r\n"
        head += "Content-Length: \(body.count)\r\n"
        for h in headers { head += "\(h.name): \(h.value)\r\n" }
        head += "Connection: close\r\n\r\n"
        return Array(head.utf8) + (includeBody ? body : [])
    }
}

public enum HTTP {
    /// The largest request head (request line and headers) accepted.
    public static let maxRequestBytes = 8192

    public static func reason(_ status: Int) -> String {
        switch status {
        case 200: return "OK"
        case 400: return "Bad Request"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 503: return "Service Unavailable"
        case 505: return "HTTP Version Not Supported"
        default: return "Status"
        }
    }

    /// RFC 9110 token characters (method and header names).
    static func isToken(_ s: Substring) -> Bool {
        !s.isEmpty && s.unicodeScalars.allSatisfy { c in
            c.isASCII && (c.properties.isAlphabetic || ("0"..."9").contains(c) || "!#$%&'*+-.^_`|~".unicodeScalars.contains(c))
        }
    }

    /// Parses the head of a request from what was read so far. Leading
    /// empty lines are skipped; lines may end in CRLF or LF.
    public static func parse(_ bytes: [UInt8]) -> HTTPParse {
        var start = 0
        while start < bytes.count, bytes[start] == 13 || bytes[start] == 10 { start += 1 }
        // The end of the head: an empty line.
        var end: Int?
        var i = start
        while i < bytes.count {
            if bytes[i] == 10 {
                if i + 1 < bytes.count, bytes[i + 1] == 10 { end = i + 1; break }
                if i + 2 < bytes.count, bytes[i + 1] == 13, bytes[i + 2] == 10 { end = i + 2; break }
            }
            i += 1
        }
        guard let end else {
            return bytes.count >= maxRequestBytes ? .bad(status: 431, reason: "request head longer than \(maxRequestBytes) bytes") : .incomplete
        }
        if end + 1 > maxRequestBytes { return .bad(status: 431, reason: "request head longer than \(maxRequestBytes) bytes") }
        let head = bytes[start..<end]
        for b in head where b < 32 && b != 9 && b != 10 && b != 13 || b == 127 {
            return .bad(status: 400, reason: "control character in the request head")
        }
        // Split on LF in bytes: as Characters, CR LF is one grapheme.
        var lines: [Substring] = []
        for raw in head.split(separator: 10, omittingEmptySubsequences: false) {
            let bytes = raw.last == 13 ? raw.dropLast() : raw
            guard let line = String(validating: bytes, as: UTF8.self) else {
                return .bad(status: 400, reason: "request head is not UTF-8")
            }
            lines.append(Substring(line))
        }
        while let last = lines.last, last.isEmpty { lines.removeLast() }
        guard let requestLine = lines.first else { return .bad(status: 400, reason: "empty request") }
        let parts = requestLine.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 3 else { return .bad(status: 400, reason: "malformed request line") }
        let (method, target, version) = (parts[0], parts[1], parts[2])
        guard isToken(method) else { return .bad(status: 400, reason: "malformed method") }
        guard version.hasPrefix("HTTP/"), version.count == 8,
            let major = version.dropFirst(5).first?.wholeNumberValue, version.dropFirst(6).first == ".",
            version.last?.wholeNumberValue != nil
        else { return .bad(status: 400, reason: "malformed HTTP version") }
        guard major == 1 else { return .bad(status: 505, reason: "HTTP version \(version.dropFirst(5)) not supported") }
        guard !target.isEmpty, target.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 32 && $0.value < 127 }) else {
            return .bad(status: 400, reason: "malformed request target")
        }
        var path: Substring
        if target.hasPrefix("/") {
            path = target
        } else if target == "*" {
            path = target
        } else if let scheme = target.range(of: "://"), ["http", "https"].contains(target[..<scheme.lowerBound].lowercased()) {
            let rest = target[scheme.upperBound...]
            path = rest.firstIndex(of: "/").map { rest[$0...] } ?? "/"
        } else {
            return .bad(status: 400, reason: "malformed request target")
        }
        if let q = path.firstIndex(where: { $0 == "?" || $0 == "#" }) { path = path[..<q] }
        if path.isEmpty { path = "/" }

        var headers: [HTTPHeader] = []
        for line in lines.dropFirst() {
            if line.first == " " || line.first == "\t" { return .bad(status: 400, reason: "folded header line") }
            guard let colon = line.firstIndex(of: ":") else { return .bad(status: 400, reason: "header line without a colon") }
            let name = line[..<colon]
            guard isToken(name) else { return .bad(status: 400, reason: "malformed header name") }
            let value = line[line.index(after: colon)...].trimmingCharacters(in: CharacterSet(charactersIn: " \t"))
            headers.append(HTTPHeader(name: String(name), value: value))
        }
        return .request(HTTPRequest(method: String(method), target: String(target), path: String(path), version: String(version), headers: headers))
    }
}

/// A listening socket and its accept loop. Each connection is served on a
/// Dispatch worker, at most `maxConnections` at once (more get 503): the
/// request head is read with a size limit and a timeout, the response
/// written, and the connection closed.
public final class HTTPServer: @unchecked Sendable {
    /// Where it listens (the real port when 0 was asked).
    public let address: ListenAddress
    public var maxConnections = 16
    /// How long a client has to send its request head.
    public var readTimeoutMs = 5000
    private let listenFD: Int32
    private var stopPipe: [Int32] = [-1, -1]
    private let active = Atomic<Int>(0)
    private let handler: @Sendable (HTTPRequest) -> HTTPResponse
    private let onBadRequest: @Sendable (String) -> Void

    /// Binds and listens; throws a one-line error (port in use, bad host).
    public init(
        listen: ListenAddress, handler: @escaping @Sendable (HTTPRequest) -> HTTPResponse,
        onBadRequest: @escaping @Sendable (String) -> Void = { _ in }
    ) throws {
        self.handler = handler
        self.onBadRequest = onBadRequest
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(listen.host, String(listen.port), &hints, &list)
        guard rc == 0, let list else {
            throw ToolError("cannot listen on \(listen): \(String(cString: gai_strerror(rc)).lowercased())")
        }
        defer { freeaddrinfo(list) }
        var fd: Int32 = -1
        var lastErrno: Int32 = 0
        var ai: UnsafeMutablePointer<addrinfo>? = list
        while let a = ai, fd < 0 {
            ai = a.pointee.ai_next
            let s = socket(a.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            if s < 0 {
                lastErrno = errno
                continue
            }
            var one: Int32 = 1
            setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            if bind(s, a.pointee.ai_addr, a.pointee.ai_addrlen) != 0 || Glibc.listen(s, 64) != 0 {
                lastErrno = errno
                close(s)
                continue
            }
            fd = s
        }
        guard fd >= 0 else { throw ToolError("cannot listen on \(listen): \(errnoText(lastErrno))") }
        do {
            stopPipe = try Poll.makePipe()
        } catch {
            close(fd)
            throw error
        }
        listenFD = fd
        var port = listen.port
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let ok = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) == 0 }
        }
        if ok {
            if Int32(storage.ss_family) == AF_INET {
                port = withUnsafeBytes(of: storage) { UInt16(bigEndian: $0.load(as: sockaddr_in.self).sin_port) }
            } else if Int32(storage.ss_family) == AF_INET6 {
                port = withUnsafeBytes(of: storage) { UInt16(bigEndian: $0.load(as: sockaddr_in6.self).sin6_port) }
            }
        }
        address = ListenAddress(host: listen.host, port: port)
    }

    deinit {
        close(listenFD)
        for f in stopPipe where f >= 0 { close(f) }
    }

    /// Makes `serve` return (from any thread).
    public func stop() {
        var b: UInt8 = 1
        _ = write(stopPipe[1], &b, 1)
    }

    /// Accepts connections until `stop()`, or until `interruptFD` becomes
    /// readable.
    public func serve(interruptFD: Int32? = nil) {
        while true {
            var fds = [pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0), pollfd(fd: stopPipe[0], events: Int16(POLLIN), revents: 0)]
            if let i = interruptFD { fds.append(pollfd(fd: i, events: Int16(POLLIN), revents: 0)) }
            let n = poll(&fds, nfds_t(fds.count), -1)
            if n < 0 {
                if errno == EINTR { continue }
                return
            }
            if fds.dropFirst().contains(where: { $0.revents != 0 }) { return }
            if fds[0].revents == 0 { continue }
            let c = accept(listenFD, nil, nil)
            if c < 0 {
                if errno == EMFILE || errno == ENFILE { usleep(100_000) }
                continue
            }
            _ = fcntl(c, F_SETFD, FD_CLOEXEC)
            if active.add(1, ordering: .relaxed).newValue > maxConnections {
                active.subtract(1, ordering: .relaxed)
                send(c, HTTPResponse.text(503, "too many connections").serialized())
                close(c)
                continue
            }
            DispatchQueue.global().async { [self] in
                handle(c)
                active.subtract(1, ordering: .relaxed)
            }
        }
    }

    /// Connections being served now.
    public var activeConnections: Int { active.load(ordering: .relaxed) }

    private func handle(_ fd: Int32) {
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var buffer: [UInt8] = []
        let deadline = Poll.nowMs() + Int64(readTimeoutMs)
        var chunk = [UInt8](repeating: 0, count: 4096)
        var response: HTTPResponse?
        var head = false
        while response == nil {
            let left = Int(deadline - Poll.nowMs())
            if left <= 0 || !Poll.readable(fd, timeoutMs: left) {
                if !buffer.isEmpty { onBadRequest("timed out reading the request (\(buffer.count) bytes)") }
                response = .text(408, "request timeout")
                break
            }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, min($0.count, HTTP.maxRequestBytes + 1 - buffer.count), 0) }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                close(fd)
                return
            }
            if n == 0 {
                // The client hung up: nothing to answer (a TCP probe), or a
                // request cut short.
                if !buffer.isEmpty { onBadRequest("incomplete request (\(buffer.count) bytes, then end of stream)") }
                close(fd)
                return
            }
            buffer += chunk[0..<n]
            switch HTTP.parse(buffer) {
            case .incomplete:
                continue
            case .bad(let status, let reason):
                onBadRequest("\(reason) (answered \(status))")
                response = .text(status, reason)
            case .request(let r):
                head = r.method == "HEAD"
                response = handler(r)
            }
        }
        if let response { send(fd, response.serialized(includeBody: !head)) }
        // Let the client read the answer before the close: stop sending, then
        // drain briefly what it may still send.
        shutdown(fd, Int32(SHUT_WR))
        let drainUntil = Poll.nowMs() + 200
        while Poll.nowMs() < drainUntil, Poll.readable(fd, timeoutMs: Int(drainUntil - Poll.nowMs())) {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
        }
        close(fd)
    }

    /// Writes all of `bytes` (or gives up on error); never raises SIGPIPE.
    private func send(_ fd: Int32, _ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + off, $0.count - off, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                return
            }
            off += n
        }
    }
}
