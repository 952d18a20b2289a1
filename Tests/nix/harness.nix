# The flake's outputs evaluated against the stub nixpkgs, as `nix` would
# after fetching the real one: flake.nix's `outputs` function called with
# `self` (its own result, plus the source path) and the stub as `nixpkgs`.
{
  swiftVersion ? "6.3.1",
  system ? "x86_64-linux",
}:

let
  stub = import ./stub-nixpkgs { inherit swiftVersion; };
  flake = import ../../flake.nix;
  self =
    flake.outputs {
      inherit self;
      nixpkgs = stub;
    }
    // {
      outPath = toString ../..;
    };
in
{
  inherit stub flake self system;
  inherit (stub) lib;
  pkgs = stub.legacyPackages.${system};

  # A NixOS configuration made of the AethAlloc module and `configuration`.
  evalNixos =
    configuration:
    stub.lib.nixosSystem {
      modules = [
        self.nixosModules.default
        configuration
      ];
    };
}
