# A stub of the nixpkgs flake for offline tests: `lib` (lib.nix, with the
# evaluator in modules.nix and lib.nixosSystem) and
# `legacyPackages.x86_64-linux` (pkgs.nix). Written for these tests; no code
# is taken from nixpkgs. `swiftVersion` is the version of its `swift`.
{
  swiftVersion ? "6.3.1",
}:

let
  baseLib = import ./lib.nix;
  pkgs = import ./pkgs.nix {
    inherit lib swiftVersion;
  };
  lib = baseLib // {
    # lib.nixosSystem of the nixpkgs flake: the modules evaluated with the
    # stub evaluator, NixOS's options that are read declared by
    # nixos-base.nix, and this package set as `pkgs`.
    nixosSystem =
      {
        modules,
        specialArgs ? { },
        ...
      }:
      baseLib.evalModules {
        modules = [ ./nixos-base.nix ] ++ modules;
        specialArgs = {
          inherit pkgs;
        } // specialArgs;
      };
  };
in
{
  inherit lib;
  legacyPackages.x86_64-linux = pkgs;
  outPath = toString ./.;
}
