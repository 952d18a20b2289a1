import Foundation

/// A failure reported in one line, with an exit status.
public struct ToolError: Error, Equatable {
    public var message: String
    public var exitCode: Int32

    public init(_ message: String, exitCode: Int32 = 1) {
        self.message = message
        self.exitCode = exitCode
    }
}

/// The `aethalloc-cli` entry point.
public enum AethAllocTool {
    /// Runs the tool with a full argv (program name first) and returns the
    /// exit status. Never traps on bad input: every error is one line on
    /// stderr.
    public static func main(_ argv: [String], console: Console = .standard(), locator: Locator? = nil) -> Int32 {
        let args = Array(argv.dropFirst())
        var commandName: String?
        do {
            let command = try Arguments.parse(args)
            switch command {
            case .help(let topic):
                if args.isEmpty {
                    // No command at all is a usage error: help on stderr.
                    for line in Help.general.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
                        console.errLine(String(line))
                    }
                    return 2
                }
                console.out(Help.text(for: topic))
                return 0
            case .run(let o):
                commandName = "run"
                return try RunCommand.run(o, locator: locator ?? .current(), console: console)
            case .ab(let o):
                commandName = "ab"
                let (allocators, notices) = try (locator ?? .current()).resolve(o.allocators)
                for n in notices { console.errLine("aethalloc-cli ab: \(n)") }
                return try ABCommand.run(o, allocators: allocators, console: console)
            case .bench(let o):
                commandName = "bench"
                return try BenchCommand.run(o, invocation: argv, locator: locator ?? .current(), console: console)
            case .stat(let o):
                commandName = "stat"
                return try StatCommand.run(o, console: console)
            case .metrics(let o):
                commandName = "metrics"
                return try MetricsCommand.run(o, console: console)
            case .install(let o):
                commandName = "install"
                return try InstallCommand.run(o, locator: locator ?? .current(), console: console)
            }
        } catch let e as UsageError {
            console.errLine(e.line)
            return 2
        } catch let e as ToolError {
            console.endProgress()
            console.errLine("aethalloc-cli\(commandName.map { " " + $0 } ?? ""): \(e.message)")
            return e.exitCode
        } catch {
            console.endProgress()
            console.errLine("aethalloc-cli\(commandName.map { " " + $0 } ?? ""): \(error)")
            return 1
        }
    }
}

/// `aethalloc-cli run`.
public enum RunCommand {
    public static func run(_ o: RunOptions, locator: Locator, console: Console) throws -> Int32 {
        guard let lib = locator.variantPath(o.variant) else {
            throw ToolError(locator.missingVariantMessage(o.variant), exitCode: 2)
        }
        var spec = ChildSpec(argv: o.command, environment: ProcessInfo.processInfo.environment, preload: lib)
        spec.stdin = .inherit
        spec.stdout = .inherit
        spec.stderr = .inherit
        spec.ignoreInterrupts = true
        let result: ChildResult
        do {
            result = try runChild(spec)
        } catch let e as SpawnError {
            throw ToolError(e.message, exitCode: e.exitCode)
        }
        if case .signaled = result.status {
            console.errLine("aethalloc-cli run: \(o.command[0]) was killed by \(result.status.description) under \(o.variant) (\(lib))")
        }
        return result.status.shellCode
    }
}
