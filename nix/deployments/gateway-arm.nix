# Deployment target: the multi-WAN gateway of gateway.nix on an aarch64
# board (an Ampere or Graviton server, a Raspberry Pi 4 or later, a Jetson).
# The same services and the same variant; nixpkgs.hostPlatform makes the
# module preload the aarch64 build of the library (ARMv8.0, so a Cortex-A72
# runs it; README, ARM machines). Import it together with
# aethalloc.nixosModules.default (the flake's nixosConfigurations.gateway-arm
# does, on placeholder hardware).
{ ... }:

{
  imports = [ ./gateway.nix ];

  # Why magazine: as on x86-64 (gateway.nix): capture threads allocate,
  # worker threads free, and the magazine variant hands freed blocks between
  # them as whole magazines without a lock per block. The measurements behind
  # this choice come from `aethalloc-cli bench`, run on x86-64 and under
  # qemu; none were made on ARM hardware yet, and no numbers are quoted here.
  # gateway.nix sets variant = "magazine";

  nixpkgs.hostPlatform = "aarch64-linux";
}
