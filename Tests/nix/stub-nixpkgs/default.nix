# A stub of the nixpkgs flake for offline tests: `lib` (lib.nix, with the
# evaluator in modules.nix and lib.nixosSystem) and
# `legacyPackages.{x86_64,aarch64}-linux` (pkgs.nix). Written for these tests; no code
# is taken from nixpkgs. `swiftVersion` is the version of its `swift`.
{
  swiftVersion ? "6.3.1",
}:

let
  baseLib = import ./lib.nix;
  systems = [
    "x86_64-linux"
    "aarch64-linux"
  ];
  legacyPackages = baseLib.genAttrs systems (
    system:
    import ./pkgs.nix {
      inherit lib swiftVersion system;
    }
  );
  lib = baseLib // {
    # lib.nixosSystem of the nixpkgs flake: the modules evaluated with the
    # stub evaluator, NixOS's options that are read declared by
    # nixos-base.nix, and as `pkgs` the package set of
    # nixpkgs.hostPlatform (x86_64-linux if unset), as NixOS does. The
    # modules are evaluated twice: once to read nixpkgs.hostPlatform, then
    # with that system's packages.
    nixosSystem =
      {
        modules,
        specialArgs ? { },
        ...
      }:
      let
        evalWith =
          pkgs:
          baseLib.evalModules {
            modules = [ ./nixos-base.nix ] ++ modules;
            specialArgs = {
              inherit pkgs;
            } // specialArgs;
          };
        first = evalWith legacyPackages.x86_64-linux;
        system = first.config.nixpkgs.hostPlatform or "x86_64-linux";
      in
      evalWith legacyPackages.${system};
  };
in
{
  inherit lib;
  inherit legacyPackages;
  outPath = toString ./.;
}
