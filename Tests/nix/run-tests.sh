#!/usr/bin/env bash
# Offline tests of the Nix flake (flake.nix, nix/). Nothing is fetched or
# built: nixpkgs is the stub in Tests/nix/stub-nixpkgs, and the store is
# Nix's `dummy://` store, so only evaluation happens.
#
#   1. every Nix file parses (nix-instantiate --parse);
#   2. the flake's outputs, evaluated against the stub, have the structure
#      the tests in eval.nix expect (packages per variant and their library
#      paths, lib.withAethAlloc, the apps, the NixOS module's options and the
#      LD_PRELOAD it puts in systemd units, the deployment targets, the
#      devShell, the checks);
#   3. wrong inputs fail with the intended messages (too old a Swift, an
#      unknown variant, ...);
#   4. nix/variants.nix lists exactly Package.swift's library products;
#   5. the deployment targets state why they chose their variant.
#
# Both systems of the flake, x86_64-linux and aarch64-linux, are evaluated:
# the packages, apps, devShell and checks of each, and the ARM gateway
# (nixosConfigurations.gateway-arm) with the aarch64 packages.
#
# Prints one PASS/FAIL line per test and a summary; exits 1 if any failed,
# 2 if nix-instantiate is missing. Needs nix-instantiate (Debian: nix-bin).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if ! command -v nix-instantiate >/dev/null 2>&1; then
    echo "FAIL: nix-instantiate not found on PATH; install Nix (Debian: apt-get install -y nix-bin)"
    exit 2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# Keep Nix away from the real store, the user's config and channels.
export HOME="$tmp/home" XDG_CACHE_HOME="$tmp/cache" XDG_CONFIG_HOME="$tmp/config"
export NIX_STATE_DIR="$tmp/state" NIX_PATH="" NIX_REMOTE=""
mkdir -p "$HOME"

nix_eval() {
    timeout 120 nix-instantiate --store dummy:// "$@"
}

passed=0
failed=0
pass() {
    echo "PASS $1"
    passed=$((passed + 1))
}
fail() {
    echo "FAIL $1"
    if [ -n "${2-}" ]; then printf '%s\n' "$2" | head -n 40 | sed 's/^/    /'; fi
    failed=$((failed + 1))
}

echo "== nix-instantiate: $(nix-instantiate --version)"

# 1. Parse.
echo "== parse"
while IFS= read -r file; do
    rel="${file#"$root"/}"
    if out="$(nix_eval --parse "$file" 2>&1 >/dev/null)"; then
        pass "parse $rel"
    else
        fail "parse $rel" "$out"
    fi
done < <(find "$root/flake.nix" "$root/nix" "$here" -name '*.nix' -type f | sort)

# 2. Structure (Tests/nix/eval.nix).
echo "== evaluate the flake's outputs against the stub nixpkgs"
if json="$(nix_eval --eval --strict --json "$here/eval.nix" 2>"$tmp/eval.err")"; then
    # A JSON list of strings without quotes or backslashes (eval.nix
    # replaces them): one line per element.
    lines="$(printf '%s' "$json" | sed -e 's/^\[//' -e 's/\]$//' -e 's/","/\n/g' -e 's/^"//' -e 's/"$//')"
    if [ -z "$lines" ]; then
        fail "eval.nix returned no tests" "$json"
    fi
    while IFS= read -r line; do
        [ -n "$line" ] || continue
        case "$line" in
            "PASS "*) pass "${line#PASS }" ;;
            "FAIL "*) fail "${line#FAIL }" ;;
            *) fail "unexpected line from eval.nix" "$line" ;;
        esac
    done <<<"$lines"
else
    fail "evaluate Tests/nix/eval.nix" "$(cat "$tmp/eval.err")"
fi

# 3. Evaluation errors: the expression must fail and say what is wrong.
echo "== errors with their messages"
expect_error() {
    local name="$1" expr="$2"
    shift 2
    local out
    if out="$(nix_eval --eval --strict -E "$expr" 2>&1)"; then
        fail "$name" "evaluated without an error: $out"
        return
    fi
    for pattern in "$@"; do
        if ! grep -qF -- "$pattern" <<<"$out"; then
            fail "$name" "the error does not say \"$pattern\":
$out"
            return
        fi
    done
    pass "$name"
}
h="import $here/harness.nix"

expect_error "swift 5.10.1: the build says Swift >= 6.3 is needed and what to do" \
    "($h { swiftVersion = \"5.10.1\"; }).self.packages.x86_64-linux.aethalloc-cli.nativeBuildInputs" \
    "AethAlloc needs Swift >= 6.3" "this nixpkgs' swift is 5.10.1" "overlays.default" "lib.withAethAlloc" "README.md"
expect_error "swift 5.10.1 on aarch64-linux: the same message" \
    "($h { swiftVersion = \"5.10.1\"; }).self.packages.aarch64-linux.aethalloc-cli.nativeBuildInputs" \
    "AethAlloc needs Swift >= 6.3" "this nixpkgs' swift is 5.10.1" "overlays.default" "lib.withAethAlloc" "README.md"
expect_error "swift 6.2.4 is too old too" \
    "($h { swiftVersion = \"6.2.4\"; }).self.packages.x86_64-linux.aethalloc-cli.nativeBuildInputs" \
    "AethAlloc needs Swift >= 6.3"
expect_error "module: an unknown variant is rejected" \
    "(($h { }).evalNixos { services.aethalloc = { enable = true; variant = \"bogus\"; services = [ \"sshd\" ]; }; }).config.systemd.services.sshd.environment.LD_PRELOAD" \
    "services.aethalloc.variant' is not of type" 'one of ' '"magazine"' '"simple"'
expect_error "module: services must be a list" \
    "(($h { }).evalNixos { services.aethalloc = { enable = true; services = \"sshd\"; }; }).config.services.aethalloc.services" \
    "services.aethalloc.services' is not of type" "list of string"
expect_error "module: package = null needs libraryPath" \
    "(($h { }).evalNixos { services.aethalloc = { enable = true; package = null; services = [ \"sshd\" ]; }; }).config.systemd.services.sshd.environment.LD_PRELOAD" \
    "set services.aethalloc.libraryPath"
expect_error "withAethAlloc: an unknown variant is rejected" \
    "let h = $h { }; in (h.self.lib.withAethAlloc { package = h.pkgs.suricata; variant = \"bogus\"; }).postBuild" \
    'withAethAlloc: unknown AethAlloc variant "bogus"' "known: " "magazine"

# 4. The variant table agrees with Package.swift: a dynamic library product
#    `aethalloc` or `aethalloc-<name>` for every variant, and no other.
echo "== nix/variants.nix and Package.swift"
products="$(tr '\n' ' ' <"$root/Package.swift" |
    grep -oE '\.library\( *name: *"aethalloc[^"]*" *, *type: *\.dynamic' |
    sed -E 's/.*name: *"([^"]*)".*/\1/' | sort | tr '\n' ' ')"
if packages="$(nix_eval --eval --strict --json -E \
    "let a = import $root/nix/aethalloc.nix { }; in map a.packageName a.variantNames" 2>&1)"; then
    packages="$(printf '%s' "$packages" | tr -d '[]"' | tr ',' '\n' | sort | tr '\n' ' ')"
    if [ -n "$products" ] && [ "$products" = "$packages" ]; then
        pass "the variants are Package.swift's library products: $products"
    else
        fail "the variants are Package.swift's library products" \
            "Package.swift: ${products:-none found}
nix/variants.nix: $packages
add or remove the variant's line in nix/variants.nix"
    fi
else
    fail "the variants are Package.swift's library products" "$packages"
fi

# 5. The deployment targets give their reason.
echo "== deployment targets"
for target in gateway workstation; do
    file="$root/nix/deployments/$target.nix"
    if grep -q 'variant = "magazine";' "$file" && grep -q '# Why magazine:' "$file" &&
        grep -q 'aethalloc-cli bench' "$file"; then
        pass "$target.nix: chooses magazine, says why, and where the numbers come from"
    else
        fail "$target.nix: chooses magazine, says why, and where the numbers come from" "$(grep -n 'variant\|Why\|bench' "$file")"
    fi
done

# The ARM gateway is gateway.nix on aarch64-linux, and says so.
file="$root/nix/deployments/gateway-arm.nix"
if grep -q 'imports = \[ ./gateway.nix \];' "$file" && grep -q '^  nixpkgs.hostPlatform = "aarch64-linux";' "$file" &&
    grep -q '# Why magazine:' "$file" && grep -q 'aethalloc-cli bench' "$file"; then
    pass "gateway-arm.nix: gateway.nix on aarch64-linux, says why magazine and where the numbers come from"
else
    fail "gateway-arm.nix: gateway.nix on aarch64-linux, says why magazine and where the numbers come from" \
        "$(grep -n 'imports\|hostPlatform\|Why\|bench' "$file")"
fi

echo "nix flake tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
