# nixosModules.default: preload an AethAlloc variant into chosen systemd
# services.
#
#   services.aethalloc = {
#     enable = true;
#     variant = "magazine";
#     services = [ "suricata" "unbound" ];
#   };
#
# sets systemd.services.<name>.environment.LD_PRELOAD (and the same for
# `userServices` in systemd.user.services) to the variant's library and adds
# the package to environment.systemPackages.
{ aeth, packagesFor }:

{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) mkOption types;
  cfg = config.services.aethalloc;

  # LD_PRELOAD and the extra variables of every listed unit.
  unitEnvironment = {
    environment = cfg.extraEnvironment // {
      LD_PRELOAD = cfg.libraryPath;
    };
  };
in
{
  options.services.aethalloc = {
    enable = lib.mkEnableOption "AethAlloc, preloaded (LD_PRELOAD) into the systemd services listed in services.aethalloc.services";

    variant = mkOption {
      type = types.enum aeth.variantNames;
      default = aeth.defaultVariant;
      example = "metrics";
      description = ''
        The AethAlloc variant to preload: ${lib.concatMapStringsSep "; " (v: "`${v}`: ${aeth.variants.${v}}") aeth.variantNames}.
      '';
    };

    package = mkOption {
      type = types.nullOr types.package;
      default = (packagesFor pkgs).packages.${aeth.packageName cfg.variant};
      defaultText = lib.literalExpression "aethalloc.packages.\${system}.\${packageName variant}, built with this system's pkgs";
      description = ''
        The package holding lib/<library of the variant> (libaethalloc.so for
        magazine, libaethalloc-<variant>.so otherwise). The default is built
        with this system's pkgs, so an overlay that provides a newer `swift`
        applies. Use `aethalloc.lib.prebuilt` for libraries built outside Nix,
        or null (and set `libraryPath`) to install nothing.
      '';
    };

    libraryPath = mkOption {
      type = types.str;
      default =
        if cfg.package != null then
          "${cfg.package}/lib/${aeth.libraryFile cfg.variant}"
        else
          throw "services.aethalloc: with package = null, set services.aethalloc.libraryPath to the library to preload";
      defaultText = lib.literalExpression ''"''${package}/lib/libaethalloc.so" (libaethalloc-<variant>.so for the other variants)'';
      example = "/opt/aethalloc/lib/libaethalloc.so";
      description = ''
        The library put in LD_PRELOAD. Set it to use a library that is not in
        `package`, such as one built with a swift.org toolchain.
      '';
    };

    services = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "suricata"
        "unbound"
      ];
      description = "System services (systemd.services.<name>) that run on AethAlloc.";
    };

    userServices = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "pipewire"
        "wireplumber"
      ];
      description = "User services (systemd.user.services.<name>) that run on AethAlloc.";
    };

    extraEnvironment = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = {
        AETHALLOC_STATS = "1";
        AETHALLOC_PURGE_DELAY_MS = "0";
      };
      description = ''
        Further variables for the listed services, e.g. AETHALLOC_STATS=1
        (the metrics variant prints its summary to the journal at exit) or
        AETHALLOC_PURGE_DELAY_MS.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    systemd.services = lib.genAttrs cfg.services (_: unitEnvironment);
    systemd.user.services = lib.genAttrs cfg.userServices (_: unitEnvironment);
    environment.systemPackages = lib.optional (cfg.package != null) cfg.package;
    warnings = lib.optional (
      cfg.services == [ ] && cfg.userServices == [ ]
    ) "services.aethalloc is enabled but lists no services: nothing is preloaded";
  };
}
