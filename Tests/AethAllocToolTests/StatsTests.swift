import Foundation
import Testing

@testable import AethAllocToolCore

@Suite struct StatsTests {
    @Test func median() {
        #expect(Stats.median([]) == nil)
        #expect(Stats.median([7]) == 7)
        #expect(Stats.median([3, 1, 2]) == 2)
        #expect(Stats.median([4, 1, 3, 2]) == 2.5)
        #expect(Stats.median([10, 10, 1000]) == 10)
    }

    @Test func percentiles() {
        let xs: [Double] = [15, 20, 35, 40, 50]
        #expect(Stats.percentile(xs, 0) == 15)
        #expect(Stats.percentile(xs, 100) == 50)
        #expect(Stats.percentile(xs, 50) == 35)
        // h = 4 * 0.4 = 1.6: 20 + 0.6 * (35 - 20) = 29
        #expect(abs(Stats.percentile(xs, 40)! - 29) < 1e-12)
        // h = 4 * 0.9 = 3.6: 40 + 0.6 * 10 = 46
        #expect(abs(Stats.percentile(xs, 90)! - 46) < 1e-12)
        #expect(Stats.percentile([], 50) == nil)
        #expect(Stats.percentile(xs, 101) == nil)
        #expect(Stats.percentile([5], 99) == 5)
    }

    @Test func minMaxMean() {
        #expect(Stats.minimum([3, -1, 2]) == -1)
        #expect(Stats.maximum([3, -1, 2]) == 3)
        #expect(Stats.mean([1, 2, 3, 4]) == 2.5)
        #expect(Summary([5, 1, 3, 2]) == Summary(median: 2.5, min: 1, max: 5))
        #expect(Summary([]) == nil)
    }

    @Test func geometricMean() {
        #expect(abs(Stats.geometricMean([2, 8])! - 4) < 1e-12)
        #expect(abs(Stats.geometricMean([1, 3, 9])! - 3) < 1e-12)
        #expect(abs(Stats.geometricMean([1.5])! - 1.5) < 1e-12)
        #expect(Stats.geometricMean([]) == nil)
        #expect(Stats.geometricMean([1, 0]) == nil)
        #expect(Stats.geometricMean([1, -2]) == nil)
    }

    @Test func ratios() {
        // Throughput: best / value.
        let t = Stats.ratiosToBest([100, 50, nil, 200], higherIsBetter: true)
        #expect(t == [2, 4, nil, 1])
        // Time: value / best.
        let s = Stats.ratiosToBest([2, 3, 1, nil], higherIsBetter: false)
        #expect(s == [2, 3, 1, nil])
        #expect(Stats.ratiosToBest([nil, nil], higherIsBetter: true) == [nil, nil])
        // To a reference (the first allocator in `ab`).
        #expect(Stats.ratios([4, 6, nil], to: 4) == [1, 1.5, nil])
        #expect(Stats.ratios([4, 6], to: nil) == [nil, nil])
    }

    @Test func formatting() {
        #expect(Format.number(0) == "0")
        #expect(Format.number(1234.4) == "1234")
        #expect(Format.number(12.34) == "12.3")
        #expect(Format.number(1.234) == "1.23")
        #expect(Format.number(0.1234) == "0.123")
        #expect(Format.ratio(1.456) == "1.46")
        #expect(Format.ratio(nil) == "–")
        #expect(MetricKind.seconds.scale(for: [0.25]).formatWithUnit(0.25) == "250 ms")
        #expect(MetricKind.seconds.scale(for: [2.5]).formatWithUnit(2.5) == "2.50 s")
        #expect(MetricKind.kilobytes.scale(for: [84_275]).formatWithUnit(84_275) == "82.3 MiB")
        #expect(MetricKind.rate.scale(for: [12_345_678]).formatWithUnit(12_345_678) == "12.3M")
        #expect(MetricKind.nanoseconds.scale(for: [850]).formatWithUnit(850) == "850 ns")
        #expect(MetricKind.nanoseconds.scale(for: [12_500]).formatWithUnit(12_500) == "12.5 µs")
        #expect(MetricKind.seconds.scale(for: [0.25]).range(0.2, 0.3) == "200–300 ms")
        #expect(MetricKind.rate.scale(for: [5e7]).tickLabel(5e7) == "50M")
        #expect(MetricKind.of(metric: "ops_per_sec") == .rate)
        #expect(MetricKind.of(metric: "seconds") == .seconds)
        #expect(MetricKind.of(metric: "p99_ns") == .nanoseconds)
        #expect(MetricKind.of(metric: "peak_rss_kb") == .kilobytes)
        #expect(Format.shellQuote(["python3", "-c", "x=[1]"]) == "python3 -c 'x=[1]'")
        #expect(Format.shellQuote(["echo", "it's"]) == #"echo 'it'\''s'"#)
    }

    @Test func exitStatus() {
        #expect(ExitStatus(waitStatus: 0) == .exited(0))
        #expect(ExitStatus(waitStatus: 3 << 8) == .exited(3))
        #expect(ExitStatus(waitStatus: 11) == .signaled(11))
        #expect(ExitStatus(waitStatus: 0x80 | 6) == .signaled(6))  // core dumped
        #expect(ExitStatus.signaled(11).description == "signal 11 (SIGSEGV)")
        #expect(ExitStatus.signaled(9).shellCode == 137)
        #expect(ExitStatus.exited(4).shellCode == 4)
    }

    @Test func textTable() {
        var t = TextTable(headers: ["name", "value"], aligns: [.left, .right])
        t.rows = [["a", "1"], ["long", "1000"]]
        #expect(t.render() == "name  value\n----  -----\na         1\nlong   1000\n")
    }
}
