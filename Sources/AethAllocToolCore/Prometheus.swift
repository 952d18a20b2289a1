import Foundation

/// The Prometheus text exposition format, version 0.0.4.
public enum Prometheus {
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// A label value: backslash, double quote and line feed escaped.
    public static func escapeLabelValue(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for ch in s.unicodeScalars {
            switch ch {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out
    }

    /// HELP text: backslash and line feed escaped.
    public static func escapeHelp(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n")
    }

    public struct Sample: Equatable, Sendable {
        public var labels: [(name: String, value: String)]
        public var value: UInt64

        public init(labels: [(name: String, value: String)], value: UInt64) {
            self.labels = labels
            self.value = value
        }

        public static func == (a: Sample, b: Sample) -> Bool {
            a.value == b.value && a.labels.elementsEqual(b.labels) { $0.name == $1.name && $0.value == $1.value }
        }
    }

    /// One metric family: HELP and TYPE once, then its samples.
    public struct Family: Equatable, Sendable {
        public enum Kind: String, Sendable { case counter, gauge }
        public var name: String
        public var kind: Kind
        public var help: String
        public var samples: [Sample]

        public init(name: String, kind: Kind, help: String, samples: [Sample] = []) {
            self.name = name
            self.kind = kind
            self.help = help
            self.samples = samples
        }
    }

    public static func render(_ families: [Family]) -> String {
        var out = ""
        for f in families {
            out += "# HELP \(f.name) \(escapeHelp(f.help))\n"
            out += "# TYPE \(f.name) \(f.kind.rawValue)\n"
            for s in f.samples {
                out += f.name
                if !s.labels.isEmpty {
                    out += "{" + s.labels.map { "\($0.name)=\"\(escapeLabelValue($0.value))\"" }.joined(separator: ",") + "}"
                }
                out += " \(s.value)\n"
            }
        }
        return out
    }

    /// The per-process metrics: name, kind, help, and the counter.
    static var processMetrics: [(String, Family.Kind, String, KeyPath<StatsCounters, UInt64>)] {
        [
        ("aethalloc_allocs_total", .counter, "Successful allocations, all sizes, since the process started.", \.allocs),
        ("aethalloc_frees_total", .counter, "Frees of non-NULL pointers since the process started.", \.frees),
        ("aethalloc_cache_hits_total", .counter, "Small allocations served by the thread cache.", \.cacheHits),
        ("aethalloc_cache_misses_total", .counter, "Small allocations that refilled the thread cache.", \.cacheMisses),
        ("aethalloc_direct_allocs_total", .counter, "Allocations above 64 KiB, mapped directly.", \.directAllocs),
        ("aethalloc_bytes_in_use", .gauge, "Block bytes handed out and not freed.", \.bytesInUse),
        ("aethalloc_peak_bytes_in_use", .gauge, "Highest aethalloc_bytes_in_use so far.", \.peakBytesInUse),
        ("aethalloc_mapped_bytes_total", .counter, "Bytes mapped from the OS (mmap, mremap growth).", \.bytesMapped),
        ("aethalloc_returned_bytes_total", .counter, "Bytes given back to the OS (munmap, MADV_DONTNEED).", \.bytesReturned),
        ("aethalloc_depot_transfers_total", .counter, "Magazines or batches moved to or from the depot or pool.", \.depotTransfers),
        ("aethalloc_threads_exited_total", .counter, "Threads that exited and flushed their counters.", \.threadsExited),
        ]
    }

    /// The kinds of exporter errors, each a series of aethalloc_exporter_errors_total.
    public static let errorKinds = ["directory", "file", "request"]

    /// The whole exposition: every process's counters with pid, command and
    /// variant labels, the process count, and the exporter's error counts.
    public static func exposition(_ snapshots: [StatsSnapshot], errors: [String: UInt64]) -> String {
        var families: [Family] = []
        for (name, kind, help, key) in processMetrics {
            var f = Family(name: name, kind: kind, help: help)
            for s in snapshots {
                f.samples.append(Sample(
                    labels: [("pid", String(s.pid)), ("command", s.command), ("variant", s.variant)],
                    value: s.counters[keyPath: key]))
            }
            families.append(f)
        }
        families.append(Family(
            name: "aethalloc_processes", kind: .gauge,
            help: "Live processes publishing AethAlloc statistics in the exporter's directory.",
            samples: [Sample(labels: [], value: UInt64(snapshots.count))]))
        families.append(Family(
            name: "aethalloc_exporter_errors_total", kind: .counter,
            help: "Errors of this exporter: unreadable statistics directory, unreadable or invalid statistics files, bad HTTP requests.",
            samples: errorKinds.map { Sample(labels: [("kind", $0)], value: errors[$0] ?? 0) }))
        return render(families)
    }
}
