# A stand-in for nixpkgs' package set, written for these tests. A
# "derivation" is the attribute set it was made from, plus its passthru,
# `type = "derivation"`, `system` and a fake store path derived from its
# name; nothing is ever built. callPackage fills a function's arguments from
# this set, as nixpkgs' does.
{
  lib,
  swiftVersion,
  system ? "x86_64-linux",
}:

let
  fakeHash = name: builtins.substring 0 32 (builtins.hashString "sha256" name);

  mkDerivation =
    args:
    let
      name = args.name or "${args.pname}-${args.version}";
    in
    args
    // (args.passthru or { })
    // {
      type = "derivation";
      inherit name system;
      # The system is part of the hash, as in a real store path.
      outPath = "/nix/store/${fakeHash "${system}/${name}"}-${name}";
      drvAttrs = args;
    };

  tool =
    pname: version: extra:
    mkDerivation (
      {
        inherit pname version;
      }
      // extra
    );

  stdenv = {
    inherit mkDerivation;
    hostPlatform = {
      inherit system;
      isAarch64 = system == "aarch64-linux";
      isx86_64 = system == "x86_64-linux";
    };
  };

  pkgs = {
    inherit lib stdenv;
    stdenvNoCC = stdenv;
    inherit system;

    callPackage =
      fn: overrides:
      let
        f = if builtins.isFunction fn then fn else import fn;
      in
      f (builtins.intersectAttrs (builtins.functionArgs f) pkgs // overrides);

    runCommand =
      name: env: script:
      mkDerivation (
        env
        // {
          inherit name;
          buildCommand = script;
        }
      );

    writeShellScriptBin =
      name: text:
      mkDerivation {
        inherit name text;
        meta.mainProgram = name;
      };

    symlinkJoin =
      args:
      mkDerivation (
        args
        // {
          buildCommand = "lndir each of paths into $out, then run postBuild";
        }
      );

    mkShell = args: mkDerivation ({ name = "nix-shell"; } // args);

    makeWrapper = tool "make-wrapper" "0" { };

    swift = tool "swift" swiftVersion { };
    swiftpm = tool "swiftpm" swiftVersion { };
    swiftPackages = {
      inherit stdenv;
      inherit (pkgs) swift swiftpm;
    };
    lld = tool "lld" "19.1.0" { };
    glibc = tool "glibc" "2.40" { dev = tool "glibc-dev" "2.40" { }; };
    linuxHeaders = tool "linux-headers" "6.10" { };

    jemalloc = tool "jemalloc" "5.3.0" { };
    mimalloc = tool "mimalloc" "2.1.7" { };
    gperftools = tool "gperftools" "2.15" { };
    valgrind = tool "valgrind" "3.23.0" { };
    hyperfine = tool "hyperfine" "1.18.0" { };
    python3 = tool "python3" "3.12.0" { };
    git = tool "git" "2.47.0" { };
    sqlite = tool "sqlite" "3.46.0" { };
    nix = tool "nix" "2.24.0" { };
    suricata = tool "suricata" "7.0.7" { meta.mainProgram = "suricata"; };
  };
in
pkgs
