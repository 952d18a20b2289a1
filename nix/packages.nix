# The packages for one nixpkgs instance: one per variant and the tool
# (`packages`), and the test suite (`tests`). The flake's outputs, the
# overlay, the NixOS module and lib.withAethAlloc all call this with the
# `pkgs` they have, so an overlay that replaces `swift` applies to each.
{
  pkgs,
  aeth,
  sources,
}:

let
  inherit (pkgs) lib;

  buildWith =
    args:
    pkgs.callPackage ./package.nix (
      {
        # The top-level swift and swiftpm, so that an overlay setting them
        # is enough; the stdenv nixpkgs builds Swift packages with.
        inherit (pkgs) swift swiftpm;
        stdenv = pkgs.swiftPackages.stdenv or pkgs.stdenv;
        inherit aeth;
        src = sources.build;
      }
      // args
    );

  # `swift build -c release`: every library and bin/aethalloc-cli.
  build = buildWith { };

  # One variant: only its library, copied out of the build, so a service's
  # closure holds that .so (which links only libc) and nothing else.
  variantPackage =
    variant:
    let
      file = aeth.libraryFile variant;
      drv = pkgs.stdenvNoCC.mkDerivation {
        pname = aeth.packageName variant;
        inherit (aeth) version;
        dontUnpack = true;
        dontBuild = true;
        installPhase = ''
          runHook preInstall
          install -Dm755 ${build}/lib/${file} $out/lib/${file}
          runHook postInstall
        '';
        passthru = {
          inherit variant build;
          libraryFile = file;
          # What LD_PRELOAD names.
          libraryPath = "${drv}/lib/${file}";
        };
        meta = {
          description = "AethAlloc, variant ${variant}: ${aeth.variants.${variant}}; preload $out/lib/${file}";
          platforms = [
            "x86_64-linux"
            "aarch64-linux"
          ];
        };
      };
    in
    drv;

  variantPackages = builtins.listToAttrs (
    map (variant: {
      name = aeth.packageName variant;
      value = variantPackage variant;
    }) aeth.variantNames
  );
in
{
  packages = variantPackages // {
    default = variantPackages.${aeth.packageName aeth.defaultVariant};
    aethalloc-cli = build;
  };

  # `swift build -c release && swift test` in a derivation, with the
  # programs the tests run and nix for Tests/nix/run-tests.sh.
  tests = buildWith {
    runTests = true;
    src = sources.tests;
    testTools = with pkgs; [
      python3
      git
      sqlite
      nix
    ];
  };
}
