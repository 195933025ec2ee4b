#!/usr/bin/env bash
# Makes test/fixtures/nix/*.json: what `nix eval --json` prints for environment.persistence of
# each test/fixtures/nix/*.nix module (but eval.nix), evaluated by the real Nix with the real
# nix-community/impermanence NixOS module and the real nixpkgs lib, through the same `--apply`
# expression the README gives (examples/nixos-export.nix).
#
#   apt-get install nix-bin        # Debian's Nix (2.8 on bookworm): only evaluates, builds nothing
#   scripts/nix-fixtures.sh IMPERMANENCE_CHECKOUT NIXPKGS_LIB_CHECKOUT
#
# IMPERMANENCE_CHECKOUT holds nixos.nix (github.com/nix-community/impermanence);
# NIXPKGS_LIB_CHECKOUT holds lib/ (nixpkgs, or github.com/nix-community/nixpkgs.lib). Neither is
# part of this repository; the JSON they produce is committed, with the commits it came from.
set -euo pipefail
imp=$(realpath "$1")
nixlib=$(realpath "$2")
here=$(cd "$(dirname "$0")/.." && pwd)
fixtures=$here/test/fixtures/nix
export NIX_STATE_DIR=${NIX_STATE_DIR:-$(mktemp -d)}

# The users each module's homes belong to, as users.users would say (examples/root/etc/passwd).
declare -A users=(
  [seed]='{ bird = { home = "/home/bird"; group = "bird"; }; alice = { home = "/home/alice"; group = "alice"; }; colord = { home = "/var/lib/colord"; group = "colord"; }; }'
  [wide]='{ carol = { home = "/srv/carol"; group = "carol"; }; }'
)

for name in "${!users[@]}"; do
  nix-instantiate --eval --strict --json -E "
    (import $here/examples/nixos-export.nix)
      (import $fixtures/eval.nix {
        impermanence = $imp; nixpkgsLib = $nixlib;
        module = $fixtures/$name.nix; users = ${users[$name]};
      })" 2> >(grep -v "build-users-group" >&2) > "$fixtures/$name.json.new"
  mv "$fixtures/$name.json.new" "$fixtures/$name.json"
  echo "$fixtures/$name.json"
done
echo "impermanence $(git -C "$imp" rev-parse HEAD 2>/dev/null || echo '(not a git checkout)'), nixpkgs lib $(cat "$nixlib/lib/.version")"
