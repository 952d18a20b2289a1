{
  description = "AethAlloc: a malloc replacement for Linux in Embedded Swift, injected with LD_PRELOAD";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  # Layout (each file says what it holds):
  #   nix/variants.nix     the variants, one line each
  #   nix/aethalloc.nix    names derived from them, the minimum Swift version
  #   nix/package.nix      the SwiftPM build (swift build -c release) and tests
  #   nix/packages.nix     one package per variant plus aethalloc-cli
  #   nix/source.nix       the source trees the derivations see
  #   nix/with-aethalloc.nix, nix/prebuilt.nix   lib.withAethAlloc, lib.prebuilt
  #   nix/module.nix       nixosModules.default (services.aethalloc)
  #   nix/deployments/     the gateway, gateway-arm (aarch64) and workstation targets
  # Tests/nix/run-tests.sh evaluates these outputs offline against a stub
  # nixpkgs; see the Nix section of README.md for what that does and does not verify.
  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      aeth = import ./nix/aethalloc.nix { };
      sources = import ./nix/source.nix { root = ./.; };

      # x86-64 (cmpxchg16b, 47-bit user addresses) and aarch64 (ARMv8.0,
      # 48-bit user addresses, 4/16/64 KiB pages): README, ARM machines.
      # On aarch64-linux the variant libraries are built as
      # variants/build-aarch64 builds them (nix/package.nix).
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});

      packagesFor = pkgs: import ./nix/packages.nix { inherit pkgs aeth sources; };

      withAethAlloc = import ./nix/with-aethalloc.nix {
        inherit aeth packagesFor;
        pkgsFor = system: nixpkgs.legacyPackages.${system};
      };

      # The example service app (`nix run .#suricata-aeth`): Suricata on the
      # magazine variant.
      suricataAeth =
        pkgs:
        withAethAlloc {
          inherit pkgs;
          package = pkgs.suricata;
          variant = "magazine";
        };

      nixosSystemWith =
        name: deployment:
        lib.nixosSystem {
          modules = [
            self.nixosModules.default
            deployment
            ./nix/deployments/example-machine.nix
            { networking.hostName = name; }
          ];
        };
    in
    {
      lib = {
        inherit withAethAlloc;
        prebuilt = import ./nix/prebuilt.nix { inherit aeth; };
        inherit (aeth)
          variants
          variantNames
          defaultVariant
          minimumSwift
          packageName
          libraryFile
          ;
      };

      # For a nixpkgs with another `swift`/`swiftpm` (e.g. a newer toolchain
      # from an earlier overlay): pkgs.aethallocPackages.<package> and
      # pkgs.aethalloc (the default variant).
      overlays.default = final: _prev: {
        aethallocPackages = (packagesFor final).packages;
        aethalloc = (packagesFor final).packages.default;
      };

      packages = forAllSystems (
        _system: pkgs:
        (packagesFor pkgs).packages
        // {
          suricata-aeth = suricataAeth pkgs;
        }
      );

      apps = forAllSystems (
        system: _pkgs:
        let
          p = self.packages.${system};
        in
        {
          default = self.apps.${system}.aethalloc-cli;
          aethalloc-cli = {
            type = "app";
            program = "${p.aethalloc-cli}/bin/aethalloc-cli";
            meta.description = "aethalloc-cli run/ab/bench with every variant";
          };
          # nix run .#suricata-aeth -- --build-info
          suricata-aeth = {
            type = "app";
            program = "${p.suricata-aeth}/bin/suricata";
            meta.description = "Suricata with AethAlloc (magazine) preloaded";
          };
        }
      );

      nixosModules = {
        default = import ./nix/module.nix { inherit aeth packagesFor; };
        gateway = {
          imports = [
            self.nixosModules.default
            ./nix/deployments/gateway.nix
          ];
        };
        gateway-arm = {
          imports = [
            self.nixosModules.default
            ./nix/deployments/gateway-arm.nix
          ];
        };
        workstation = {
          imports = [
            self.nixosModules.default
            ./nix/deployments/workstation.nix
          ];
        };
      };

      # Complete example systems on placeholder hardware.
      nixosConfigurations = {
        gateway = nixosSystemWith "gateway" ./nix/deployments/gateway.nix;
        gateway-arm = nixosSystemWith "gateway-arm" ./nix/deployments/gateway-arm.nix;
        workstation = nixosSystemWith "workstation" ./nix/deployments/workstation.nix;
      };

      devShells = forAllSystems (
        _system: pkgs:
        let
          newEnough = lib.versionAtLeast (pkgs.swift.version or "0") aeth.minimumSwift;
        in
        {
          default = pkgs.mkShell {
            packages =
              (with pkgs; [
                # the peers of `aethalloc-cli ab/bench`
                jemalloc
                mimalloc
                gperftools
                # bench and analysis tools
                valgrind
                hyperfine
                python3
                lld
              ])
              # An older nixpkgs Swift would hide a swift.org toolchain on PATH.
              ++ lib.optionals newEnough [
                pkgs.swift
                pkgs.swiftpm
              ];
            JEMALLOC_LIB = "${pkgs.jemalloc}/lib/libjemalloc.so";
            MIMALLOC_LIB = "${pkgs.mimalloc}/lib/libmimalloc.so";
            TCMALLOC_LIB = "${pkgs.gperftools}/lib/libtcmalloc.so";
            shellHook = ''
              echo "AethAlloc dev shell: swift build -c release && swift test"
              echo "peers (aethalloc-cli ab --with glibc,magazine,\$JEMALLOC_LIB ...):"
              echo "  JEMALLOC_LIB=$JEMALLOC_LIB"
              echo "  MIMALLOC_LIB=$MIMALLOC_LIB"
              echo "  TCMALLOC_LIB=$TCMALLOC_LIB"
              ${lib.optionalString (!newEnough) ''
                echo "nixpkgs' swift (${pkgs.swift.version or "unknown"}) is older than ${aeth.minimumSwift}: put a swift.org toolchain >= ${aeth.minimumSwift} on PATH"
              ''}
            '';
          };
        }
      );

      checks = forAllSystems (
        system: pkgs:
        {
          # Tests/nix/run-tests.sh: this flake evaluated against the stub
          # nixpkgs, with nixpkgs' nix.
          nix-eval =
            pkgs.runCommand "aethalloc-nix-eval"
              {
                nativeBuildInputs = [ pkgs.nix ];
                src = sources.tests;
              }
              ''
                bash "$src/Tests/nix/run-tests.sh"
                touch "$out"
              '';
        }
        # swift build -c release && swift test, in the sandbox. Needs nixpkgs'
        # Swift >= 6.3, like the packages. x86-64 only: on aarch64 the suite's
        # `swift build` of the Embedded variants has no Embedded standard
        # library for aarch64-unknown-linux-gnu (README, ARM machines).
        // lib.optionalAttrs (system == "x86_64-linux") {
          tests = (packagesFor pkgs).tests;
        }
        # Every variant and the tool (`nix flake check` evaluates the
        # nixosConfigurations itself).
        // builtins.removeAttrs self.packages.${system} [ "suricata-aeth" ]
      );
    };
}
