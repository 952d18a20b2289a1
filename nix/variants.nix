# The AethAlloc variants, one line each: the name `aethalloc_variant()`
# returns = what the variant is for.
#
# Everything else follows from the name (nix/aethalloc.nix): the SwiftPM
# product and the Nix package are `aethalloc` for magazine and
# `aethalloc-<name>` otherwise, the library is `lib<product>.so`. The
# packages, the NixOS module's `variant` enum, `lib.withAethAlloc` and the
# checks all read this table, so adding a variant to the flake is one line
# here (plus its product in Package.swift; Tests/nix/run-tests.sh checks
# that the two agree).
{
  magazine = "the default: per-thread magazines and a lock-free depot; freed blocks move between threads as whole magazines";
  simple = "per-thread free lists and a global pool; for A/B tests of the caching strategy";
  metrics = "as magazine, with counters and live statistics (aethalloc_get_metrics, AETHALLOC_STATS=1)";
  hardened = "as magazine, with checks: double frees and interior pointers abort, encoded free lists, freed blocks zeroed, guard pages";
}
