# A small module evaluator, written for these tests (not nixpkgs' module
# system): enough of its behaviour to evaluate the AethAlloc module and the
# deployment targets with their real semantics.
#
#   - modules are functions, attribute sets or paths, with `imports`;
#     `{ options; config; }` or a bare attribute set of config;
#   - declared options get their definitions merged (lists concatenated),
#     fall back to `default`, and are checked against their type: a wrong
#     value is an evaluation error naming the option, as in NixOS;
#   - an undeclared name under a node whose children are all options (e.g.
#     services.aethalloc.typo) is an error; other undeclared config (the rest
#     of NixOS: systemd.services, services.suricata, ...) is merged
#     free-form: attribute sets recursively, lists concatenated, other
#     values must agree. The names of an attribute set do not depend on
#     mkIf conditions, so a free-form value whose definitions are all
#     switched off is an error when read (nixos-base.nix declares the
#     NixOS options that are read, with their defaults); the names of an
#     attrsOf option, such as systemd.services, do follow the conditions;
#   - mkIf, mkMerge and mkOverride/mkDefault/mkForce; an mkIf is pushed into
#     the attributes below it, so conditions are only evaluated at leaves and
#     a module may read its own options (`mkIf cfg.enable { ... }`).
#
# evalModules { modules; specialArgs ? { }; } returns { config; options; }.
lib:

{
  modules,
  specialArgs ? { },
}:

let
  inherit (builtins)
    all
    attrNames
    concatLists
    concatMap
    filter
    foldl'
    head
    isAttrs
    isFunction
    isList
    length
    listToAttrs
    ;

  showPath = path: builtins.concatStringsSep "." path;
  isOption = x: isAttrs x && x._type or null == "option";
  isDerivation = x: isAttrs x && x.type or null == "derivation";
  kind = d: if isAttrs d then d._type or null else null;
  unique =
    names:
    attrNames (
      listToAttrs (
        map (n: {
          name = n;
          value = null;
        }) names
      )
    );

  args = {
    inherit config options lib;
  } // specialArgs;

  # Every module, imports included, as { options; config; }.
  collect =
    module:
    let
      value = if builtins.isPath module || builtins.isString module then import module else module;
      result = if isFunction value then value args else value;
      explicit = result ? options || result ? config;
    in
    [
      {
        options = result.options or { };
        config =
          if explicit then
            result.config or { }
          else
            removeAttrs result [
              "imports"
              "_file"
              "key"
            ];
      }
    ]
    ++ concatMap collect (result.imports or [ ]);
  collected = concatMap collect modules;

  mergeOptions =
    path: a: b:
    if isOption a || isOption b then
      throw "The option `${showPath path}' is declared twice."
    else
      a
      // builtins.mapAttrs (n: v: if a ? ${n} then mergeOptions (path ++ [ n ]) a.${n} v else v) b;
  options = foldl' (mergeOptions [ ]) { } (map (m: m.options) collected);

  # The definitions of a node's attributes: mkMerge flattened, mkIf and
  # mkOverride pushed into each attribute.
  pushDown =
    path: d:
    let
      k = kind d;
    in
    if k == "merge" then
      concatMap (pushDown path) d.contents
    else if k == "if" then
      map (builtins.mapAttrs (_: lib.mkIf d.condition)) (pushDown path d.content)
    else if k == "override" then
      map (builtins.mapAttrs (_: lib.mkOverride d.priority)) (pushDown path d.content)
    else if isAttrs d && !isDerivation d && k == null then
      [ d ]
    else
      throw "`${showPath path}' is an attribute set of options, but is defined as a value.";

  # Whether a definition is an attribute set (a node) rather than a value.
  isNodeDef =
    d:
    let
      k = kind d;
    in
    if k == "if" || k == "override" then
      isNodeDef d.content
    else if k == "merge" then
      all isNodeDef d.contents
    else
      isAttrs d && !isDerivation d && k == null;

  # The values of a leaf, with their priorities; false mkIfs drop out.
  discharge =
    d:
    let
      k = kind d;
    in
    if k == "merge" then
      concatMap discharge d.contents
    else if k == "if" then
      (if d.condition then discharge d.content else [ ])
    else if k == "override" then
      map (v: v // { priority = d.priority; }) (discharge d.content)
    else
      [
        {
          value = d;
          priority = 100;
        }
      ];

  # The definitions with the highest priority (lowest number).
  strongest =
    defs:
    let
      best = foldl' (p: d: if d.priority < p then d.priority else p) 10000 defs;
    in
    map (d: d.value) (filter (d: d.priority == best) defs);

  mergeValues =
    path: values:
    if all isList values then
      concatLists values
    else if all (v: v == head values) values then
      head values
    else
      throw "The option `${showPath path}' has conflicting definition values.";

  evalOption =
    path: opt: defs:
    let
      given = concatMap discharge defs;
      withDefault =
        if length given > 0 then
          given
        else if opt ? default then
          [
            {
              value = opt.default;
              priority = 1500;
            }
          ]
        else
          throw "The option `${showPath path}' is used but not defined.";
      values = strongest withDefault;
      # attrsOf: its names follow the definitions that are switched on (as
      # in NixOS); below them the values merge free-form.
      merged = if opt.type.name or "" == "attrsOf" then evalNode path null values else mergeValues path values;
    in
    if opt.type.check merged then
      merged
    else
      throw "The option `${showPath path}' is not of type `${opt.type.description}'. Definition value: ${builtins.toJSON merged}";

  evalNode =
    path: opts: defs:
    if isOption opts then
      evalOption path opts defs
    else if opts == null && !(all isNodeDef defs) then
      let
        given = concatMap discharge defs;
      in
      if length given > 0 then
        mergeValues path (strongest given)
      else
        throw "`${showPath path}' is used, but every definition of it is switched off by mkIf."
    else
      let
        attrDefs = concatMap (pushDown path) defs;
        declared = if opts == null then [ ] else attrNames opts;
        names = unique (declared ++ concatMap attrNames attrDefs);
        optionsOnly = opts != null && opts != { } && all isOption (builtins.attrValues opts);
        defsOf = n: map (d: d.${n}) (filter (d: d ? ${n}) attrDefs);
        child =
          n:
          if opts != null && opts ? ${n} then
            evalNode (path ++ [ n ]) opts.${n} (defsOf n)
          else if optionsOnly then
            throw "The option `${showPath (path ++ [ n ])}' does not exist."
          else
            evalNode (path ++ [ n ]) null (defsOf n);
      in
      listToAttrs (
        map (n: {
          name = n;
          value = child n;
        }) names
      );

  config = evalNode [ ] options (map (m: m.config) collected);
in
{
  inherit config options;
}
