# Deployment target: a desktop workstation. NetworkManager and the user's
# PipeWire session run for days and should hold only the memory they use.
# Import it together with aethalloc.nixosModules.default (the flake's
# nixosConfigurations.workstation does, on placeholder hardware).
{ ... }:

{
  services.aethalloc = {
    enable = true;
    # Why magazine: on a workstation the processes live long and their RSS
    # must go back to the OS when they are idle. The magazine variant gives
    # memory back without any call: a page whose blocks are all free is
    # purged at once (AETHALLOC_PURGE_DELAY_MS=0, the default), a wholly free
    # segment is unmapped, and what each thread and each depot may cache is
    # bounded. For live statistics choose variant = "metrics" instead (the
    # same caching plus counters; with extraEnvironment.AETHALLOC_STATS = "1"
    # each service prints a summary to the journal at exit). `simple` is for
    # A/B tests of the caching strategy. The measurements behind this choice
    # come from `aethalloc-cli bench` (rss_reclaim, fragmentation); no
    # numbers are quoted here.
    variant = "magazine";
    services = [ "NetworkManager" ];
    userServices = [
      "pipewire"
      "wireplumber"
    ];
  };

  networking.networkmanager.enable = true;
  services.pipewire = {
    enable = true;
    wireplumber.enable = true;
  };
}
