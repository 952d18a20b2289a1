# The NixOS options that the AethAlloc module writes and the tests read
# without a definition, declared with NixOS's types and defaults. (The rest
# of NixOS that the deployment targets set is merged free-form.)
{ lib, ... }:

{
  options = {
    environment.systemPackages = lib.mkOption {
      type = lib.types.listOf lib.types.package;
      default = [ ];
    };
    systemd.services = lib.mkOption {
      type = lib.types.attrsOf lib.types.anything;
      default = { };
    };
    systemd.user.services = lib.mkOption {
      type = lib.types.attrsOf lib.types.anything;
      default = { };
    };
    warnings = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
    };
  };
}
