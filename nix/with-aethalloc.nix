# lib.withAethAlloc: a package whose programs run on an AethAlloc variant.
#
#   aethalloc.lib.withAethAlloc { package = pkgs.suricata; variant = "magazine"; }
#
# is a symlinkJoin of `package` in which every program in bin/ (or only
# those named in `programs`) is a makeWrapper wrapper that puts the variant's
# library first in LD_PRELOAD. Arguments:
#
#   package      the package to wrap (required)
#   variant      one of aethalloc.lib.variantNames (default "magazine")
#   pkgs         the nixpkgs that builds AethAlloc and the wrappers (default:
#                this flake's nixpkgs for `package.system`)
#   aethalloc    a package holding lib/<library file>: this flake's package
#                for the variant (default), one built with another Swift
#                (`.override`), or aethalloc.lib.prebuilt
#   library      the .so to preload, overriding `aethalloc`: a path (copied
#                into the store) or a string such as
#                "/opt/aethalloc/lib/libaethalloc.so" for a library built
#                outside Nix with a swift.org toolchain
#   programs     names in bin/ to wrap (default: all of them)
#   environment  variables set in the wrappers unless already set, e.g.
#                { AETHALLOC_STATS = "1"; } with the metrics variant
{
  aeth,
  packagesFor,
  pkgsFor,
}:

{
  package,
  variant ? aeth.defaultVariant,
  pkgs ? pkgsFor package.system,
  aethalloc ? null,
  library ? null,
  programs ? null,
  environment ? { },
}:

let
  inherit (pkgs) lib;
  checked = aeth.checkVariant "withAethAlloc" variant;
  aethallocPackage = if aethalloc != null then aethalloc else (packagesFor pkgs).packages.${aeth.packageName checked};
  preload = if library != null then "${library}" else "${aethallocPackage}/lib/${aeth.libraryFile checked}";

  targets =
    if programs == null then
      ''"$out"/bin/*''
    else
      lib.concatMapStringsSep " " (p: ''"$out"/bin/${lib.escapeShellArg p}'') programs;
  onMissing =
    if programs == null then
      "continue"
    else
      ''{ echo "withAethAlloc: ''${prog#"$out"/} is not a program of ${package.name}" >&2; exit 1; }'';
  wrapperFlags = lib.concatStringsSep " " (
    [ "--prefix LD_PRELOAD : ${lib.escapeShellArg preload}" ]
    ++ lib.mapAttrsToList (name: value: "--set-default ${lib.escapeShellArg name} ${lib.escapeShellArg value}") environment
  );
in
pkgs.symlinkJoin {
  name =
    if package ? pname && package ? version then
      "${package.pname}-with-${aeth.packageName checked}-${package.version}"
    else
      "${package.name}-with-${aeth.packageName checked}";
  paths = [ package ];
  nativeBuildInputs = [ pkgs.makeWrapper ];
  postBuild = ''
    wrapped=0
    for prog in ${targets}; do
      if [ -d "$prog" ] || [ ! -x "$prog" ]; then ${onMissing}; fi
      wrapProgram "$prog" ${wrapperFlags}
      wrapped=$((wrapped + 1))
    done
    if [ "$wrapped" -eq 0 ]; then
      echo "withAethAlloc: ${package.name} has no program in bin/ to wrap" >&2
      exit 1
    fi
  '';
  passthru = {
    unwrapped = package;
    aethalloc = {
      variant = checked;
      library = preload;
    };
  };
  meta = {
    description = "${package.name} with AethAlloc (${checked}) preloaded";
  } // lib.optionalAttrs ((package.meta or { }) ? mainProgram) { inherit (package.meta) mainProgram; };
}
