# The SwiftPM build: `swift build -c release` once, which compiles every
# variant library and the aethalloc-cli tool (the README's build). With
# `runTests`, the same build followed by the README's `swift test`: the
# flake's `checks.<system>.tests`.
#
# On aarch64-linux (a native build) `swift build` cannot compile the
# Embedded variants: the toolchain has Embedded Swift's standard library for
# aarch64-none-none-elf only. There SwiftPM builds only aethalloc-cli, and
# variants/build-aarch64 builds the four libraries as it does on Debian
# (README, ARM machines), with the native cc and glibc's and the kernel's
# headers. No x86
# flag is passed on either system (Package.swift adds -mcx16 on x86-64 only).
{
  lib,
  stdenv,
  swift,
  swiftpm,
  lld,
  makeWrapper,
  glibc,
  linuxHeaders,
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

  aarch64 = stdenv.hostPlatform.isAarch64 or false;

  # Where the variant libraries are after the build phase.
  libDir = if aarch64 then "$PWD/.build/aarch64/release" else "$bin";
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

  buildPhase =
    if aarch64 then
      ''
        runHook preBuild
        # The tool, release mode; then the variant libraries, ARMv8.0.
        TERM=dumb swift-build -c release -j "$NIX_BUILD_CORES" --product aethalloc-cli
        # The script's "sysroot": glibc's headers and the kernel's (glibc's
        # include <linux/...>), one include/ as Debian's cross packages have.
        mkdir -p "$TMPDIR/sysroot/include"
        cp -rs --no-preserve=mode ${glibc.dev or glibc}/include/. ${linuxHeaders}/include/. "$TMPDIR/sysroot/include/"
        AARCH64_CC=cc SWIFTC=swiftc AARCH64_SYSROOT="$TMPDIR/sysroot" \
          AETHALLOC_AARCH64_OUT="$PWD/.build/aarch64/release" \
          bash variants/build-aarch64
        runHook postBuild
      ''
    else
      ''
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
        install -Dm755 -t "$out/lib" ${lib.concatMapStringsSep " " (f: ''"${libDir}/${f}"'') libraries}
        install -Dm755 "$bin/aethalloc-cli" "$out/bin/aethalloc-cli"
        # The tool looks for the variant libraries in $AETHALLOC_LIB_DIR first.
        wrapProgram "$out/bin/aethalloc-cli" --set-default AETHALLOC_LIB_DIR "$out/lib"
        runHook postInstall
      '';

  passthru = {
    inherit swiftVersion libraries aarch64;
    inherit (aeth) minimumSwift;
  };

  meta = {
    description =
      if runTests then
        "AethAlloc's test suite (swift build -c release && swift test)"
      else
        "AethAlloc's aethalloc-cli (run, ab, bench) with every variant library in lib/";
    # x86-64 (cmpxchg16b, 47-bit user addresses) and aarch64 (README, ARM
    # machines). The tests: x86-64 only (see above).
    platforms = if runTests then [ "x86_64-linux" ] else [ "x86_64-linux" "aarch64-linux" ];
  }
  // lib.optionalAttrs (!runTests) { mainProgram = "aethalloc-cli"; };
}
