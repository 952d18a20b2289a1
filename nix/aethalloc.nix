# Facts shared by the flake, the packages and the NixOS module: the variant
# table and the names derived from it. Plain Nix, no nixpkgs.
{
  variants ? import ./variants.nix,
}:

rec {
  inherit variants;

  # Sorted, as builtins.attrNames returns them.
  variantNames = builtins.attrNames variants;

  defaultVariant = "magazine";

  # The oldest Swift that builds AethAlloc: the variants are compiled in
  # Embedded mode and export their C entry points with `@c` (Swift 6.3).
  minimumSwift = "6.3";

  # No release has been tagged yet.
  version = "0.1.0";

  # The SwiftPM product and Nix package of a variant.
  packageName = variant: if variant == "magazine" then "aethalloc" else "aethalloc-${variant}";

  # The library that LD_PRELOAD names, under the package's lib/.
  libraryFile = variant: "lib${packageName variant}.so";

  # `variant` if it is one, else an error naming `who` and the known variants.
  checkVariant =
    who: variant:
    if builtins.isString variant && builtins.hasAttr variant variants then
      variant
    else
      throw "${who}: unknown AethAlloc variant ${builtins.toJSON variant} (known: ${builtins.concatStringsSep ", " variantNames})";
}
