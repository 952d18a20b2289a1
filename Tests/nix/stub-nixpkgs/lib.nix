# A stand-in for nixpkgs' `lib`, written for these tests: only the functions
# the flake uses, with the same names and arguments. The option types carry a
# `check` and a `description`; evalModules is the small evaluator in
# modules.nix.
let
  inherit (builtins)
    all
    attrNames
    compareVersions
    concatStringsSep
    elem
    isAttrs
    isBool
    isList
    isString
    listToAttrs
    ;

  lib = rec {
    # attribute sets and lists
    genAttrs =
      names: f:
      listToAttrs (
        map (n: {
          name = n;
          value = f n;
        }) names
      );
    mapAttrsToList = f: attrs: map (n: f n attrs.${n}) (attrNames attrs);
    optional = cond: x: if cond then [ x ] else [ ];
    optionals = cond: xs: if cond then xs else [ ];
    optionalAttrs = cond: attrs: if cond then attrs else { };

    # strings (escapeRegex is for the tests' own use)
    inherit concatStringsSep;
    optionalString = cond: s: if cond then s else "";
    concatMapStringsSep = sep: f: xs: concatStringsSep sep (map f xs);
    escapeShellArg = s: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] (toString s) + "'";
    escapeRegex =
      let
        special = [ "\\" "." "*" "+" "?" "(" ")" "[" "]" "{" "}" "|" "^" "$" ];
      in
      builtins.replaceStrings special (map (c: "\\" + c) special);

    # versions
    versionAtLeast = v: minimum: compareVersions v minimum >= 0;
    getVersion = drv: (builtins.parseDrvName (drv.name or drv)).version;

    # options and their definitions
    mkOption = args: args // { _type = "option"; };
    mkEnableOption = name: mkOption {
      type = types.bool;
      default = false;
      example = true;
      description = "Whether to enable ${name}.";
    };
    literalExpression = text: {
      _type = "literalExpression";
      inherit text;
    };
    mkIf = condition: content: {
      _type = "if";
      inherit condition content;
    };
    mkMerge = contents: {
      _type = "merge";
      inherit contents;
    };
    mkOverride = priority: content: {
      _type = "override";
      inherit priority content;
    };
    mkDefault = mkOverride 1000;

    types = rec {
      mkType = name: description: check: {
        _type = "option-type";
        inherit name description check;
      };
      anything = mkType "anything" "anything" (_: true);
      bool = mkType "bool" "boolean" isBool;
      str = mkType "str" "string" isString;
      package = mkType "package" "package" (x: isAttrs x && x.type or null == "derivation");
      enum =
        values:
        mkType "enum" "one of ${concatMapStringsSep ", " builtins.toJSON values}" (x: elem x values)
        // {
          inherit values;
        };
      listOf = t: mkType "listOf" "list of ${t.description}" (x: isList x && all t.check x);
      attrsOf = t: mkType "attrsOf" "attribute set of ${t.description}" (x: isAttrs x && all t.check (builtins.attrValues x));
      nullOr = t: mkType "nullOr" "null or ${t.description}" (x: x == null || t.check x);
    };

    evalModules = import ./modules.nix lib;
  };
in
lib
