# lib.prebuilt: the libraries of a build made outside Nix, as a package, for
# when nixpkgs' Swift is older than the minimum. Build with a swift.org
# toolchain (`swift build -c release`), copy .build/release/libaethalloc*.so
# into a directory next to your configuration, and:
#
#   aethalloc.lib.prebuilt { inherit pkgs; dir = ./aethalloc-libs; }
#
# Only the libaethalloc*.so files directly in `dir` are copied into the
# store. The result has the same lib/ layout as the flake's packages, so it
# can be the NixOS module's `package` or lib.withAethAlloc's `aethalloc`.
{ aeth }:

{
  pkgs,
  dir,
  version ? "prebuilt",
}:

let
  libraries = builtins.path {
    name = "aethalloc-prebuilt-libraries";
    path = dir;
    filter =
      path: type: type != "directory" && builtins.match "libaethalloc(-[a-z0-9]+)?\\.so" (baseNameOf path) != null;
  };
  drv =
    pkgs.runCommand "aethalloc-${version}"
      {
        passthru.libraryPathFor = variant: "${drv}/lib/${aeth.libraryFile (aeth.checkVariant "prebuilt" variant)}";
      }
      ''
        mkdir -p "$out/lib"
        for f in ${libraries}/libaethalloc*.so; do
          if [ ! -e "$f" ]; then
            echo "aethalloc.lib.prebuilt: no libaethalloc*.so in ${toString dir}" >&2
            exit 1
          fi
          install -m755 "$f" "$out/lib/"
        done
      '';
in
drv
