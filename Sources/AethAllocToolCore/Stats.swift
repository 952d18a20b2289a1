import Foundation

/// Small, exact statistics over samples. Every function returns nil for an
/// empty input instead of trapping.
public enum Stats {
    /// The median; the mean of the two middle values for an even count.
    public static func median(_ xs: [Double]) -> Double? {
        guard !xs.isEmpty else { return nil }
        let s = xs.sorted()
        let m = s.count / 2
        return s.count % 2 == 1 ? s[m] : (s[m - 1] + s[m]) / 2
    }

    /// The `p`th percentile (0...100), linearly interpolated between closest
    /// ranks (the common "type 7" definition, as numpy's default).
    public static func percentile(_ xs: [Double], _ p: Double) -> Double? {
        guard !xs.isEmpty, p >= 0, p <= 100 else { return nil }
        let s = xs.sorted()
        let h = Double(s.count - 1) * p / 100
        let lo = Int(h.rounded(.down))
        let hi = min(lo + 1, s.count - 1)
        return s[lo] + (h - Double(lo)) * (s[hi] - s[lo])
    }

    public static func minimum(_ xs: [Double]) -> Double? { xs.min() }
    public static func maximum(_ xs: [Double]) -> Double? { xs.max() }

    public static func mean(_ xs: [Double]) -> Double? {
        guard !xs.isEmpty else { return nil }
        return xs.reduce(0, +) / Double(xs.count)
    }

    /// The geometric mean; nil if empty or if any value is not positive.
    public static func geometricMean(_ xs: [Double]) -> Double? {
        guard !xs.isEmpty, xs.allSatisfy({ $0 > 0 && $0.isFinite }) else { return nil }
        return exp(xs.map { log($0) }.reduce(0, +) / Double(xs.count))
    }

    /// Each value's ratio to the best of them, oriented so that 1 is the
    /// best and larger is worse: value/min when lower is better,
    /// max/value when higher is better. nil entries (failures) stay nil.
    public static func ratiosToBest(_ values: [Double?], higherIsBetter: Bool) -> [Double?] {
        let present = values.compactMap { $0 }.filter { $0.isFinite }
        if higherIsBetter {
            guard let best = present.max(), best > 0 else { return values.map { _ in nil } }
            return values.map { v in v.flatMap { $0 > 0 ? best / $0 : nil } }
        } else {
            guard let best = present.min(), best > 0 else { return values.map { _ in nil } }
            return values.map { v in v.map { $0 / best } }
        }
    }

    /// Each value divided by a reference value (nil if the reference is not
    /// positive).
    public static func ratios(_ values: [Double?], to reference: Double?) -> [Double?] {
        guard let r = reference, r > 0 else { return values.map { _ in nil } }
        return values.map { $0.map { $0 / r } }
    }
}

/// Min, median and max of a set of samples.
public struct Summary: Codable, Equatable, Sendable {
    public var median: Double
    public var min: Double
    public var max: Double

    public init(median: Double, min: Double, max: Double) {
        self.median = median
        self.min = min
        self.max = max
    }

    public init?(_ xs: [Double]) {
        guard let med = Stats.median(xs), let lo = xs.min(), let hi = xs.max() else { return nil }
        self.init(median: med, min: lo, max: hi)
    }
}
