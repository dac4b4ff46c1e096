#!/usr/bin/env bash
# Fetch the pinned front-end files of scripts/vendor-assets.lock with `npm pack` (npm checks
# each tarball against the registry's sha512 integrity), check each file's sha256 against the
# lock, and copy it into src/keepdesk/web/static/vendor/. The copies are committed, so builds,
# wheels and CI need neither npm nor the network.
#
#   scripts/vendor-assets.sh          fetch, verify, copy
#   scripts/vendor-assets.sh --check  fetch, verify, and exit 1 if a committed file differs
set -euo pipefail
cd "$(dirname "$0")/.."

lock=scripts/vendor-assets.lock
dest=src/keepdesk/web/static/vendor
check=0
case "${1:-}" in
  --check) check=1 ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

command -v npm >/dev/null || { echo "npm is needed to fetch front-end files (apt-get install npm)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest"

status=0
declare -A unpacked=()
while read -r package version inner saved sha; do
  case "$package" in ""|\#*) continue ;; esac
  spec="$package@$version"
  dir="$work/$package-$version"
  if [ -z "${unpacked[$spec]:-}" ]; then
    mkdir -p "$dir"
    # An exact version, never a range or a tag: `npm pack htmx.org` would fetch 4.x.
    tarball=$(cd "$dir" && npm pack --silent "$spec")
    tar -xzf "$dir/$tarball" -C "$dir"
    unpacked[$spec]=1
  fi
  file="$dir/$inner"
  [ -f "$file" ] || { echo "$spec has no $inner" >&2; exit 1; }
  got=$(sha256sum "$file" | cut -d' ' -f1)
  if [ "$sha" = "-" ]; then
    echo "$saved: sha256 $got (paste it into $lock)"
    status=1
  elif [ "$got" != "$sha" ]; then
    echo "$saved: $spec $inner has sha256 $got, the lock says $sha" >&2
    exit 1
  fi
  if [ "$check" = 1 ]; then
    if ! cmp -s "$file" "$dest/$saved"; then
      echo "$dest/$saved differs from $spec $inner (run make vendor)" >&2
      status=1
    fi
  else
    cp "$file" "$dest/$saved"
  fi
done < "$lock"

if [ "$check" = 1 ] && [ "$status" = 0 ]; then
  echo "web/static/vendor matches $lock"
fi
exit "$status"
