# The source trees of the derivations, filtered out of the flake's directory
# so that build products (.build*), result links, and edits to the Nix files
# and docs do not change the libraries' inputs.
{ root }:

let
  # `path` relative to root, e.g. "Sources/CAethAlloc/platform.c".
  relative = path: builtins.substring (builtins.stringLength (toString root) + 1) (-1) (toString path);
  topLevel = rel: builtins.head (builtins.split "/" rel);

  # Build products, VCS data and `nix build` result links: never inputs.
  isJunk = rel: builtins.match "\\.build.*|\\.git|\\.swiftpm|result(-.*)?|results" (topLevel rel) != null;

  # What `swift build` reads. Tests/ is there because SwiftPM rejects a
  # manifest whose test targets' directories are missing; Tests/nix is not
  # part of any target.
  buildParts = [ "Package.swift" "Sources" "variants" "include" "Tests" ];
in
rec {
  keepForBuild =
    rel: builtins.elem (topLevel rel) buildParts && !isJunk rel && builtins.match "Tests/nix(/.*)?" rel == null;
  keepForTests = rel: !isJunk rel;

  build = builtins.path {
    name = "aethalloc-source";
    path = root;
    filter = path: _type: keepForBuild (relative path);
  };

  # Everything the checks read: the package, the benches, Tests/nix and the flake.
  tests = builtins.path {
    name = "aethalloc-source-tests";
    path = root;
    filter = path: _type: keepForTests (relative path);
  };
}
