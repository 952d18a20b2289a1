# The SwiftPM build: `swift build -c release` once, which compiles every
# variant library and the aethalloc-cli tool (the README's build). With
# `runTests`, the same build followed by the README's `swift test`: the
# flake's `checks.<system>.tests`.
{
  lib,
  stdenv,
  swift,
  swiftpm,
  lld,
  makeWrapper,
  # Swift >= 6 package sets ship Foundation with the toolchain; pass it here
  # for a toolchain that keeps it apart. Only aethalloc-cli uses it.
  Foundation ? null,
  src,
  aeth,
  runTests ? false,
  testTools ? [ ],
}:

let
  swiftVersion = swift.version or (lib.getVersion swift);

  # Forced when the derivation is instantiated (`nix build`, `nix flake
  # check`), not when it is only listed (`nix flake show`), so the message
  # appears where the build would fail and `.override { swift = ...; }` can
  # still replace the toolchain.
  checkedSwift =
    if lib.versionAtLeast swiftVersion aeth.minimumSwift then
      swift
    else
      throw ''
        AethAlloc needs Swift >= ${aeth.minimumSwift} (Embedded mode and the @c attribute), but this nixpkgs' swift is ${swiftVersion}.
        Either build the packages with a newer toolchain: an overlay that sets `swift` and `swiftpm` (then use `aethalloc.overlays.default`), or `.override { swift = ...; swiftpm = ...; }`;
        or build with a swift.org toolchain (`swift build -c release`) and preload that library: `aethalloc.lib.withAethAlloc { library = "/path/to/libaethalloc.so"; ... }`, `aethalloc.lib.prebuilt { inherit pkgs; dir = ./libs; }`, or the NixOS option `services.aethalloc.libraryPath`.
        See the Nix section of README.md.
      '';

  libraries = map aeth.libraryFile aeth.variantNames;
in
stdenv.mkDerivation {
  pname = if runTests then "aethalloc-tests" else "aethalloc-cli";
  inherit (aeth) version;
  inherit src;

  # lld: Package.swift links the variants with `-use-ld=lld`.
  nativeBuildInputs = [
    checkedSwift
    swiftpm
    lld
    makeWrapper
  ] ++ lib.optionals runTests testTools;
  buildInputs = lib.optional (Foundation != null) Foundation;

  buildPhase = ''
    runHook preBuild
    # Every variant library and the tool, release mode.
    TERM=dumb swift-build -c release -j "$NIX_BUILD_CORES"
    runHook postBuild
  '';

  doCheck = runTests;
  checkPhase = ''
    runHook preCheck
    export HOME="$TMPDIR"
    # The black-box tests preload .build/release/libaethalloc*.so, built above.
    TERM=dumb swift-test
    runHook postCheck
  '';

  installPhase =
    if runTests then
      ''
        runHook preInstall
        mkdir -p "$out"
        echo "swift build -c release && swift test: passed" > "$out/result"
        runHook postInstall
      ''
    else
      ''
        runHook preInstall
        bin="$(swift-build -c release --show-bin-path)"
        install -Dm755 -t "$out/lib" ${lib.concatMapStringsSep " " (f: ''"$bin/${f}"'') libraries}
        install -Dm755 "$bin/aethalloc-cli" "$out/bin/aethalloc-cli"
        # The tool looks for the variant libraries in $AETHALLOC_LIB_DIR first.
        wrapProgram "$out/bin/aethalloc-cli" --set-default AETHALLOC_LIB_DIR "$out/lib"
        runHook postInstall
      '';

  passthru = {
    inherit swiftVersion libraries;
    inherit (aeth) minimumSwift;
  };

  meta = {
    description =
      if runTests then
        "AethAlloc's test suite (swift build -c release && swift test)"
      else
        "AethAlloc's aethalloc-cli (run, ab, bench) with every variant library in lib/";
    # The allocator uses cmpxchg16b and 47-bit user addresses.
    platforms = [ "x86_64-linux" ];
  }
  // lib.optionalAttrs (!runTests) { mainProgram = "aethalloc-cli"; };
}
