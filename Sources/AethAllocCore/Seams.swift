// Seams.swift: what a variant decides, said once.
//
// Each `variants/<name>/Variant.swift` defines `enum Variant` with these
// members, all compile-time constants, and the core reads each in one place,
// so the optimiser removes the branches a variant does not take:
//
//   name           what aethalloc_variant() returns (StaticString)
//   Cache          the caching policy, a `CachePolicy` (ThreadCache.swift):
//                  MagazineCache (MagazineCache.swift) or SimpleCache
//                  (SimpleCache.swift)
//   statsEnabled   whether Stats.swift counts; when false every Stats call
//                  compiles to nothing (the fast paths gain no instruction)
//   hardened       the checks of Hardening.swift (live-block bitmap, pages
//                  hand out no live block, zero on free, guard pages or NULL)
//   injectsFaults  whether Platform.swift consults the test fault plan and
//                  clock; true only in the hosted white-box build
//
// A policy's requirements on the rest of the core are part of the policy,
// not further seams: both policies keep every node that other threads may
// read (magazines, batch descriptors) in the never-unmapped metadata arena,
// so every variant may unmap empty segments.
