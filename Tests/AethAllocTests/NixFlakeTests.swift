// The Nix flake (flake.nix, nix/), tested offline by Tests/nix/run-tests.sh:
// every Nix file parses, and the flake's outputs, evaluated against the stub
// nixpkgs in Tests/nix/stub-nixpkgs, have the packages, library paths,
// wrappers, NixOS module options and systemd LD_PRELOAD environment that
// the Nix section of README.md describes. Nothing is fetched or built.
//
// Needs nix-instantiate on PATH (Debian: `apt-get install -y nix-bin`); skipped
// without it (.ci/run installs it and fails on any skipped test).

import Foundation
import Testing

@Suite("Nix flake")
struct NixFlakeTests {
    /// `<root>/Tests/nix/run-tests.sh`; this file is `<root>/Tests/AethAllocTests/NixFlakeTests.swift`.
    static let script: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // AethAllocTests
        .deletingLastPathComponent()  // Tests
        .appendingPathComponent("nix/run-tests.sh")

    @Test(
        "flake.nix and nix/ parse and evaluate against the stub nixpkgs (Tests/nix/run-tests.sh)",
        .enabled(if: BBProcess.find("nix-instantiate") != nil, "nix-instantiate is not installed (Debian package nix-bin)"))
    func flakeEvaluates() async throws {
        let result = try await BBProcess.run("bash", [Self.script.path], timeout: .seconds(300))

        for line in result.stdoutLines where line.hasPrefix("FAIL") {
            Issue.record("Tests/nix/run-tests.sh: \(line)")
        }
        #expect(result.succeeded, "Tests/nix/run-tests.sh failed\n\(result.report)")

        // The summary line proves that the tests ran: "nix flake tests: N passed, 0 failed".
        let summary = result.stdoutLines.last(where: { $0.hasPrefix("nix flake tests: ") }) ?? ""
        let passed = summary.split(separator: " ").dropFirst(3).first.flatMap { Int($0) } ?? 0
        #expect(
            summary.hasSuffix(" 0 failed") && passed >= 100,
            "expected at least 100 passing Nix tests and none failing, got \"\(summary)\"\n\(result.report)")
    }
}
