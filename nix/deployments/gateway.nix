# Deployment target: a multi-WAN gateway. Suricata inspects the traffic of
# both uplinks and Unbound resolves names for the LAN; both run on AethAlloc.
# Import it together with aethalloc.nixosModules.default (the flake's
# nixosConfigurations.gateway does, on placeholder hardware). Routing between
# the uplinks is the kernel's and is not configured here.
{ ... }:

{
  services.aethalloc = {
    enable = true;
    # Why magazine: a gateway hands packets from thread to thread (Suricata's
    # capture threads allocate, its worker threads free) and is judged by its
    # tail latency. The magazine variant moves freed blocks between threads
    # as whole magazines through a lock-free depot, so neither side takes a
    # lock or walks a list per block, and a thread's fast paths have no
    # atomics. The measurements behind this choice come from
    # `aethalloc-cli bench` (producer_consumer, tail_latency, packet_churn);
    # no numbers are quoted here.
    variant = "magazine";
    services = [
      "suricata"
      "unbound"
    ];
  };

  services.suricata = {
    enable = true;
    settings.af-packet = [
      {
        interface = "wan0";
        cluster-id = "98";
        cluster-type = "cluster_flow";
        defrag = "yes";
      }
      {
        interface = "wan1";
        cluster-id = "99";
        cluster-type = "cluster_flow";
        defrag = "yes";
      }
    ];
  };

  services.unbound.enable = true;
}
