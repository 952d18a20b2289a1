# The structural tests of the flake, evaluated against the stub nixpkgs.
# Evaluates to a list of lines, "PASS <test>" or "FAIL <test>: <why>";
# run-tests.sh prints them and counts. Tests that expect an evaluation error
# are in run-tests.sh.
let
  h = import ./harness.nix { };
  old = import ./harness.nix { swiftVersion = "5.10.1"; };
  inherit (h) self pkgs flake;
  system = h.system;
  p = self.packages.${system};
  aeth = import ../../nix/aethalloc.nix { };

  inherit (builtins)
    attrNames
    concatMap
    elem
    all
    filter
    tryEval
    deepSeq
    ;

  # Spelled out here, not taken from the flake, so the tests check the names.
  libFile = v: if v == "magazine" then "libaethalloc.so" else "libaethalloc-${v}.so";
  pkgName = v: if v == "magazine" then "aethalloc" else "aethalloc-${v}";
  # The variants of nix/variants.nix (run-tests.sh checks them against
  # Package.swift's products); everything derived from them is checked
  # below.
  variants = attrNames (import ../../nix/variants.nix);
  variantPackages = map pkgName variants;

  show = x: builtins.toJSON x;
  hasInfix = needle: haystack: builtins.match ".*${h.lib.escapeRegex needle}.*" haystack != null;
  namesOf = map (d: d.pname or d.name);

  check = name: ok: why: { inherit name ok why; };
  eq = name: actual: expected: check name (actual == expected) "expected ${show expected}, got ${show actual}";
  contains = name: haystack: needle: check name (hasInfix needle haystack) "${show needle} not in ${show haystack}";
  lacks = name: haystack: needle: check name (!hasInfix needle haystack) "${show needle} in ${show haystack}";
  includes = name: list: wanted: check name (all (w: elem w list) wanted) "expected ${show wanted} in ${show list}";
  fails = name: value: check name (!(tryEval (deepSeq value value)).success) "evaluated without an error";

  nixos = configuration: (h.evalNixos configuration).config;
  preloadOf = config: service: config.systemd.services.${service}.environment.LD_PRELOAD;

  # The same flake with one more line in nix/variants.nix.
  extended =
    let
      aeth' = import ../../nix/aethalloc.nix {
        variants = import ../../nix/variants.nix // {
          extra = "a test variant";
        };
      };
      packagesFor =
        pkgs:
        import ../../nix/packages.nix {
          inherit pkgs;
          aeth = aeth';
          sources = {
            build = "/src";
            tests = "/src";
          };
        };
    in
    {
      packages = (packagesFor pkgs).packages;
      config =
        (h.lib.evalModules {
          modules = [
            ./stub-nixpkgs/nixos-base.nix
            (import ../../nix/module.nix {
              aeth = aeth';
              inherit packagesFor;
            })
            {
              services.aethalloc = {
                enable = true;
                variant = "extra";
                services = [ "sshd" ];
              };
            }
          ];
          specialArgs = {
            inherit pkgs;
          };
        }).config;
    };

  sources = import ../../nix/source.nix { root = ../..; };

  suricataMetrics = self.lib.withAethAlloc {
    package = pkgs.suricata;
    variant = "metrics";
    environment.AETHALLOC_STATS = "1";
  };
  outside = self.lib.withAethAlloc {
    package = pkgs.suricata;
    library = "/opt/aethalloc/lib/libaethalloc.so";
    programs = [ "suricata" ];
  };
  # Any directory does for evaluation: only the store path of its
  # libaethalloc*.so files is computed.
  prebuilt = self.lib.prebuilt {
    inherit pkgs;
    dir = ./stub-nixpkgs;
  };

  gateway = self.nixosConfigurations.gateway.config;
  gatewayArm = self.nixosConfigurations.gateway-arm.config;
  pa = self.packages.aarch64-linux;
  workstation = self.nixosConfigurations.workstation.config;

  tests = [
    # The flake's shape.
    (eq "inputs: only nixpkgs, nixos-unstable" flake.inputs {
      nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    })
    (eq "outputs takes { self, nixpkgs }" (builtins.functionArgs flake.outputs) {
      self = false;
      nixpkgs = false;
    })
    (eq "output names" (attrNames (removeAttrs self [ "outPath" ])) [
      "apps"
      "checks"
      "devShells"
      "lib"
      "nixosConfigurations"
      "nixosModules"
      "overlays"
      "packages"
    ])
    (eq "systems: aarch64-linux and x86_64-linux" (map attrNames [
      self.packages
      self.apps
      self.devShells
      self.checks
    ]) (map (_: [ "aarch64-linux" "x86_64-linux" ]) [ 1 2 3 4 ]))
    (includes "variants: at least magazine, metrics, simple" variants [
      "magazine"
      "metrics"
      "simple"
    ])
    (eq "lib.variantNames" self.lib.variantNames variants)
    (eq "lib.minimumSwift is 6.3" self.lib.minimumSwift "6.3")
    (eq "packages: one per variant, default, the tool, the example" (attrNames p) (
      builtins.sort builtins.lessThan (
        variantPackages
        ++ [
          "aethalloc-cli"
          "default"
          "suricata-aeth"
        ]
      )
    ))
    (eq "packages.default is magazine" [ p.default.outPath p.default.variant ] [
      p.aethalloc.outPath
      "magazine"
    ])
  ]

  # One package per variant, each with its library.
  ++ concatMap (
    v:
    let
      pkg = p.${pkgName v};
      n = pkgName v;
    in
    [
      (eq "${n}: passthru.variant" pkg.variant v)
      (eq "${n}: passthru.libraryPath" pkg.libraryPath "${pkg}/lib/${libFile v}")
      (contains "${n}: installs $out/lib/${libFile v}" pkg.installPhase "$out/lib/${libFile v}")
      (contains "${n}: copies it from the SwiftPM build" pkg.installPhase "${p.aethalloc-cli}/lib/${libFile v}")
      (contains "aethalloc-cli: installs ${libFile v}" p.aethalloc-cli.installPhase ''"$bin/${libFile v}"'')
    ]
  ) variants

  # The SwiftPM build.
  ++ (
    let
      b = p.aethalloc-cli;
    in
    [
      (contains "aethalloc-cli: swift-build -c release" b.buildPhase "swift-build -c release")
      (includes "aethalloc-cli: nixpkgs' swift, swiftpm, lld" (namesOf b.nativeBuildInputs) [
        "swift"
        "swiftpm"
        "lld"
        "make-wrapper"
      ])
      (contains "aethalloc-cli: installs bin/aethalloc-cli" b.installPhase ''"$out/bin/aethalloc-cli"'')
      (contains "aethalloc-cli: finds the variants in its lib/" b.installPhase "--set-default AETHALLOC_LIB_DIR \"$out/lib\"")
      (eq "aethalloc-cli: tests are a check, not part of the build" b.doCheck false)
      (eq "aethalloc-cli: passthru.swiftVersion" b.swiftVersion "6.3.1")
      (eq "aethalloc-cli: meta.mainProgram" b.meta.mainProgram "aethalloc-cli")
    ]
  )

  # Both systems: what each build runs and installs. x86_64-linux: one
  # `swift build -c release` of everything. aarch64-linux (native): SwiftPM
  # builds only the tool, variants/build-aarch64 the four libraries (no
  # Embedded standard library for aarch64-unknown-linux-gnu). Neither passes
  # an x86-only flag (Package.swift adds -mcx16 on x86-64 itself).
  ++ concatMap (
    sys:
    let
      ps = self.packages.${sys};
      b = ps.aethalloc-cli;
      arm = sys == "aarch64-linux";
      phases = b.buildPhase + b.installPhase;
      # On aarch64-linux the build phase has `armNeedle`; elsewhere it lacks `otherNeedle`.
      armOrNot = armName: armNeedle: otherName: otherNeedle:
        if arm then contains armName b.buildPhase armNeedle else lacks otherName b.buildPhase otherNeedle;
    in
    [
      (eq "${sys}: the same packages" (attrNames ps) (attrNames p))
      (eq "${sys}: every package built for ${sys}" (map (n: ps.${n}.system) (attrNames ps)) (
        map (_: sys) (attrNames ps)
      ))
      (check "${sys}: meta.platforms of every package" (all (
        n: elem sys ps.${n}.meta.platforms or [ sys ]
      ) (attrNames ps)) "a package without ${sys} in meta.platforms")
      (eq "${sys}: passthru.aarch64" b.aarch64 arm)
      (contains "${sys}: swift-build -c release" b.buildPhase "swift-build -c release")
      (armOrNot "${sys}: SwiftPM builds only the tool" "swift-build -c release -j \"$NIX_BUILD_CORES\" --product aethalloc-cli"
        "${sys}: SwiftPM builds every product" "--product")
      (armOrNot "${sys}: variants/build-aarch64 builds the libraries" "bash variants/build-aarch64"
        "${sys}: no variants/build-aarch64" "build-aarch64")
      (armOrNot "${sys}: with the native cc, not the Debian cross gcc" "AARCH64_CC=cc SWIFTC=swiftc"
        "${sys}: no AARCH64_CC" "AARCH64_CC")
      (armOrNot "${sys}: against glibc's and the kernel's headers of ${sys}"
        "cp -rs --no-preserve=mode ${h.stub.legacyPackages.${sys}.glibc.dev}/include/. ${h.stub.legacyPackages.${sys}.linuxHeaders}/include/. "
        "${sys}: no AARCH64_SYSROOT" "AARCH64_SYSROOT")
      (armOrNot "${sys}: the script reads that sysroot" "AARCH64_SYSROOT=\"$TMPDIR/sysroot\""
        "${sys}: no sysroot" "sysroot")
      (lacks "${sys}: no -mcx16 in the build" phases "-mcx16")
      (lacks "${sys}: no -march=x86 flag in the build" phases "-march=x86")
      (contains "${sys}: installs bin/aethalloc-cli" b.installPhase ''"$out/bin/aethalloc-cli"'')
      (eq "${sys}: apps.default runs its aethalloc-cli" self.apps.${sys}.default.program "${b}/bin/aethalloc-cli")
      (eq "${sys}: suricata-aeth preloads its magazine" ps.suricata-aeth.aethalloc.library "${ps.aethalloc}/lib/libaethalloc.so")
      (eq "${sys}: devShell built for ${sys}" self.devShells.${sys}.default.system sys)
      (eq "${sys}: checks" (attrNames self.checks.${sys}) (
        builtins.sort builtins.lessThan (
          variantPackages
          ++ [
            "aethalloc-cli"
            "default"
            "nix-eval"
          ]
          ++ (if arm then [ ] else [ "tests" ])
        )
      ))
    ]
    ++ map (
      v:
      let
        f = libFile v;
        dir = if arm then "$PWD/.build/aarch64/release" else "$bin";
      in
      (contains "${sys}: aethalloc-cli installs ${f} from ${dir}" b.installPhase ''"${dir}/${f}"'')
    ) variants
    ++ map (
      v:
      (contains "${sys}: ${pkgName v} copies ${libFile v} from the ${sys} build" ps.${pkgName v}.installPhase
        "${b}/lib/${libFile v}"
      )
    ) variants
  ) [ "x86_64-linux" "aarch64-linux" ]

  # Too old a Swift: the packages can still be listed, instantiating the
  # build fails (its message is checked in run-tests.sh).
  ++ [
    (eq "swift 5.10.1: packages still listed" (attrNames old.self.packages.${system}) (attrNames p))
    (eq "swift 5.10.1: package names evaluate" old.self.packages.${system}.aethalloc.name "aethalloc-0.1.0")
    (fails "swift 5.10.1: the build's inputs throw" old.self.packages.${system}.aethalloc-cli.nativeBuildInputs)
  ]

  # Adding a variant is one line in nix/variants.nix.
  ++ [
    (includes "one more variant: its package" (attrNames extended.packages) [ "aethalloc-extra" ])
    (eq "one more variant: its library" extended.packages.aethalloc-extra.libraryPath
      "${extended.packages.aethalloc-extra}/lib/libaethalloc-extra.so"
    )
    (contains "one more variant: the build installs it" extended.packages.aethalloc-cli.installPhase
      "libaethalloc-extra.so"
    )
    (eq "one more variant: the module accepts it" (preloadOf extended.config "sshd")
      "${extended.packages.aethalloc-extra}/lib/libaethalloc-extra.so"
    )
  ]

  # The sources the derivations see.
  ++ [
    (eq "source: the build keeps what swift build reads"
      (map sources.keepForBuild [
        "Package.swift"
        "Sources/AethAllocCore/Segment.swift"
        "variants/magazine/Variant.swift"
        "include/aethalloc.h"
        "Tests/AethAllocTests/CoreTests.swift"
      ])
      [
        true
        true
        true
        true
        true
      ]
    )
    (eq "source: the build drops build products, Nix files, docs"
      (map sources.keepForBuild [
        ".build/release/libaethalloc.so"
        ".build-tsan/debug.yaml"
        ".git/HEAD"
        "flake.nix"
        "nix/module.nix"
        "Tests/nix/run-tests.sh"
        "docs/nix.md"
        "result"
      ])
      [
        false
        false
        false
        false
        false
        false
        false
        false
      ]
    )
    (eq "source: the checks keep Tests/nix and the flake, drop .build"
      (map sources.keepForTests [
        "Tests/nix/run-tests.sh"
        "flake.nix"
        "benches/packet_churn.c"
        ".build/release/libaethalloc.so"
      ])
      [
        true
        true
        true
        false
      ]
    )
  ]

  # lib.withAethAlloc and the example app.
  ++ [
    (eq "withAethAlloc: wraps the package" (namesOf suricataMetrics.paths) [ "suricata" ])
    (includes "withAethAlloc: with makeWrapper" (namesOf suricataMetrics.nativeBuildInputs) [ "make-wrapper" ])
    (contains "withAethAlloc: LD_PRELOAD of the variant" suricataMetrics.postBuild
      "wrapProgram \"$prog\" --prefix LD_PRELOAD : '${p.aethalloc-metrics}/lib/libaethalloc-metrics.so'"
    )
    (contains "withAethAlloc: every program in bin/" suricataMetrics.postBuild ''for prog in "$out"/bin/*; do'')
    (contains "withAethAlloc: environment" suricataMetrics.postBuild "--set-default 'AETHALLOC_STATS' '1'")
    (eq "withAethAlloc: name" suricataMetrics.name "suricata-with-aethalloc-metrics-7.0.7")
    (eq "withAethAlloc: passthru" suricataMetrics.aethalloc {
      variant = "metrics";
      library = "${p.aethalloc-metrics}/lib/libaethalloc-metrics.so";
    })
    (eq "withAethAlloc: keeps meta.mainProgram" suricataMetrics.meta.mainProgram "suricata")
    (contains "withAethAlloc: a library built outside Nix" outside.postBuild
      "--prefix LD_PRELOAD : '/opt/aethalloc/lib/libaethalloc.so'"
    )
    (contains "withAethAlloc: only the named programs" outside.postBuild ''for prog in "$out"/bin/'suricata'; do'')
    (eq "withAethAlloc: default variant magazine" p.suricata-aeth.aethalloc.library "${p.aethalloc}/lib/libaethalloc.so")
    (eq "apps.suricata-aeth" self.apps.${system}.suricata-aeth {
      type = "app";
      program = "${p.suricata-aeth}/bin/suricata";
      meta.description = "Suricata with AethAlloc (magazine) preloaded";
    })
    (eq "apps.default runs aethalloc-cli" self.apps.${system}.default.program "${p.aethalloc-cli}/bin/aethalloc-cli")
    (contains "lib.prebuilt: copies the libraries" prebuilt.buildCommand ''install -m755 "$f" "$out/lib/"'')
    (contains "lib.prebuilt: from the filtered directory" prebuilt.buildCommand "-aethalloc-prebuilt-libraries/libaethalloc*.so")
    (eq "lib.prebuilt: the variant's library" (prebuilt.libraryPathFor "simple") "${prebuilt}/lib/libaethalloc-simple.so")
    (eq "overlays.default" ((self.overlays.default pkgs pkgs).aethallocPackages.aethalloc-simple.variant) "simple")
    (
      let
        # A nixpkgs whose swift is 5.10.1, with an earlier overlay that sets
        # a newer swift and swiftpm.
        final = old.pkgs // {
          swift = old.pkgs.swift // {
            version = "6.3.3";
          };
          swiftpm = old.pkgs.swiftpm // {
            version = "6.3.3";
          };
        };
        build = (old.self.overlays.default final old.pkgs).aethallocPackages.aethalloc-cli;
      in
      eq "overlays.default: builds with the overlaid swift" [
        build.swiftVersion
        (tryEval (deepSeq build.nativeBuildInputs true)).success
      ] [ "6.3.3" true ]
    )
  ]

  # nixosModules.default.
  ++ (
    let
      on = nixos {
        services.aethalloc = {
          enable = true;
          services = [
            "suricata"
            "unbound"
          ];
        };
      };
      simple = nixos {
        services.aethalloc = {
          enable = true;
          variant = "simple";
          services = [ "nginx" ];
          userServices = [ "pipewire" ];
          extraEnvironment.AETHALLOC_PURGE_DELAY_MS = "0";
        };
      };
      off = nixos {
        services.aethalloc = {
          enable = false;
          services = [ "suricata" ];
        };
      };
      prebuiltPath = nixos {
        services.aethalloc = {
          enable = true;
          package = null;
          libraryPath = "/opt/aethalloc/lib/libaethalloc.so";
          services = [ "suricata" ];
        };
      };
      oldSwift =
        (old.evalNixos {
          services.aethalloc = {
            enable = true;
            package = null;
            libraryPath = "/opt/aethalloc/lib/libaethalloc.so";
            services = [ "suricata" ];
          };
        }).config;
      opts = (h.evalNixos { }).options.services.aethalloc;
    in
    [
      (eq "module: options" (attrNames opts) [
        "enable"
        "extraEnvironment"
        "libraryPath"
        "package"
        "services"
        "userServices"
        "variant"
      ])
      (eq "module: variant is an enum of the variants" (map opts.variant.type.check (variants ++ [ "bogus" ])) (
        map (_: true) variants ++ [ false ]
      ))
      (eq "module: defaults" (nixos { }).services.aethalloc.variant "magazine")
      (eq "module: LD_PRELOAD of a listed service" (preloadOf on "suricata") "${p.aethalloc}/lib/libaethalloc.so")
      (eq "module: every listed service" (attrNames on.systemd.services) [
        "suricata"
        "unbound"
      ])
      (eq "module: environment.systemPackages" (map (d: d.outPath) on.environment.systemPackages) [ p.aethalloc.outPath ])
      (eq "module: no warning with services" on.warnings [ ])
      (eq "module: variant simple" (preloadOf simple "nginx") "${p.aethalloc-simple}/lib/libaethalloc-simple.so")
      (eq "module: user services" simple.systemd.user.services.pipewire.environment {
        LD_PRELOAD = "${p.aethalloc-simple}/lib/libaethalloc-simple.so";
        AETHALLOC_PURGE_DELAY_MS = "0";
      })
      (eq "module: extraEnvironment" simple.systemd.services.nginx.environment.AETHALLOC_PURGE_DELAY_MS "0")
      (eq "module: package follows variant" (map (d: d.outPath) simple.environment.systemPackages) [
        p.aethalloc-simple.outPath
      ])
      (eq "module: disabled: no unit touched" [ off.systemd.services off.systemd.user.services ] [ { } { } ])
      (eq "module: disabled: nothing installed" off.environment.systemPackages [ ])
      (eq "module: libraryPath outside the store" (preloadOf prebuiltPath "suricata") "/opt/aethalloc/lib/libaethalloc.so")
      (eq "module: package = null installs nothing" prebuiltPath.environment.systemPackages [ ])
      (eq "module: works with an old Swift and a prebuilt library" (preloadOf oldSwift "suricata")
        "/opt/aethalloc/lib/libaethalloc.so"
      )
      (eq "module: warns when no service is listed"
        (builtins.length (nixos { services.aethalloc.enable = true; }).warnings)
        1
      )
    ]
  )

  # The deployment targets.
  ++ [
    (eq "gateway: magazine" gateway.services.aethalloc.variant "magazine")
    (eq "gateway: suricata and unbound" (map (preloadOf gateway) [ "suricata" "unbound" ]) [
      "${p.aethalloc}/lib/libaethalloc.so"
      "${p.aethalloc}/lib/libaethalloc.so"
    ])
    (eq "gateway: suricata enabled" gateway.services.suricata.enable true)
    (eq "gateway: hostName" gateway.networking.hostName "gateway")
    (eq "workstation: magazine" workstation.services.aethalloc.variant "magazine")
    (eq "workstation: NetworkManager" (preloadOf workstation "NetworkManager") "${p.aethalloc}/lib/libaethalloc.so")
    (eq "workstation: pipewire (user)" workstation.systemd.user.services.pipewire.environment.LD_PRELOAD
      "${p.aethalloc}/lib/libaethalloc.so"
    )
    (eq "nixosModules" (attrNames self.nixosModules) [
      "default"
      "gateway"
      "gateway-arm"
      "workstation"
    ])
    (eq "nixosConfigurations" (attrNames self.nixosConfigurations) [
      "gateway"
      "gateway-arm"
      "workstation"
    ])
    (eq "gateway-arm: hostPlatform aarch64-linux" gatewayArm.nixpkgs.hostPlatform "aarch64-linux")
    (eq "gateway-arm: magazine, as gateway" gatewayArm.services.aethalloc.variant "magazine")
    (eq "gateway-arm: suricata and unbound preload the aarch64 library"
      (map (preloadOf gatewayArm) [ "suricata" "unbound" ])
      [
        "${pa.aethalloc}/lib/libaethalloc.so"
        "${pa.aethalloc}/lib/libaethalloc.so"
      ]
    )
    (check "gateway-arm: not the x86-64 library" (preloadOf gatewayArm "suricata" != preloadOf gateway "suricata")
      "both preload ${preloadOf gateway "suricata"}"
    )
    (eq "gateway-arm: the library built for aarch64-linux" (map (d: d.system) gatewayArm.environment.systemPackages) [
      "aarch64-linux"
    ])
    (eq "gateway: the library built for x86_64-linux" (map (d: d.system) gateway.environment.systemPackages) [
      "x86_64-linux"
    ])
    (eq "gateway-arm: suricata enabled, both uplinks" (map (i: i.interface) gatewayArm.services.suricata.settings.af-packet) [
      "wan0"
      "wan1"
    ])
    (eq "gateway-arm: hostName" gatewayArm.networking.hostName "gateway-arm")
    (eq "nixosModules.gateway-arm imports the module" (
      (h.stub.lib.nixosSystem { modules = [ self.nixosModules.gateway-arm ]; }).config.services.aethalloc.services
    ) [ "suricata" "unbound" ])
    (eq "nixosModules.gateway imports the module" (
      (h.stub.lib.nixosSystem { modules = [ self.nixosModules.gateway ]; }).config.services.aethalloc.services
    ) [ "suricata" "unbound" ])
  ]

  # devShell and checks.
  ++ (
    let
      shell = self.devShells.${system}.default;
      oldShell = old.self.devShells.${system}.default;
      checks = self.checks.${system};
    in
    [
      (includes "devShell: peers and bench tools" (namesOf shell.packages) [
        "jemalloc"
        "mimalloc"
        "gperftools"
        "valgrind"
        "hyperfine"
        "python3"
      ])
      (includes "devShell: swift 6.3.1 included" (namesOf shell.packages) [
        "swift"
        "swiftpm"
      ])
      (check "devShell: an old swift left out" (!elem "swift" (namesOf oldShell.packages)) "swift in the shell")
      (contains "devShell: says the swift is too old" oldShell.shellHook "older than 6.3")
      (eq "devShell: peer library paths" shell.JEMALLOC_LIB "${pkgs.jemalloc}/lib/libjemalloc.so")
      (eq "checks: tests, nix-eval and every package" (attrNames checks) (
        builtins.sort builtins.lessThan (
          variantPackages
          ++ [
            "aethalloc-cli"
            "default"
            "nix-eval"
            "tests"
          ]
        )
      ))
      (eq "checks.tests runs the tests" checks.tests.doCheck true)
      (contains "checks.tests: swift test" checks.tests.checkPhase "swift-test")
      (contains "checks.tests: after swift build -c release" checks.tests.buildPhase "swift-build -c release")
      (includes "checks.tests: the programs the tests run" (namesOf checks.tests.nativeBuildInputs) [
        "python3"
        "git"
        "nix"
      ])
      (contains "checks.nix-eval: runs Tests/nix/run-tests.sh" checks.nix-eval.buildCommand "Tests/nix/run-tests.sh")
    ]
  );

  # No quotes or backslashes in the lines, so run-tests.sh can split the JSON
  # list with sed: toJSON's \n becomes " | ", its \" and " become '.
  clean =
    s:
    builtins.replaceStrings
      [ "\\n" "\\\"" "\\\\" "\"" "\\" "\n" ]
      [ " | " "'" "/" "'" "/" " | " ]
      s;
in
map (t: if t.ok then "PASS ${t.name}" else "FAIL ${t.name}: ${clean t.why}") tests
