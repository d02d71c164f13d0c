#!/bin/sh
# The workspace's dependency skeleton for the Dockerfile's cache layer: every Cargo.toml,
# Cargo.lock, and an empty stand-in for every build target (src/lib.rs, src/main.rs,
# src/bin/*.rs, benches/*.rs, fuzz_targets/*.rs), so `cargo build` of the skeleton compiles
# the dependencies alone. Its output changes only when a manifest, the lock file or the set of
# targets does, so the layer built from it is reused across source changes.
#
#   skeleton.sh SOURCE_DIR DEST_DIR
#
# Checked by .ci/deploy-checks (`cargo metadata --locked --offline` of the skeleton).
set -eu
src=$1
dest=$2
mkdir -p "$dest"
cd "$src"
find . -path ./target -prune -o -path '*/node_modules' -prune -o -path ./.git -prune -o \
    \( -name Cargo.toml -o -name Cargo.lock \) -type f -print |
while read -r file; do
    mkdir -p "$dest/$(dirname "$file")"
    cp "$file" "$dest/$file"
done
find . -path ./target -prune -o -path '*/node_modules' -prune -o -path ./.git -prune -o \
    \( -path '*/src/lib.rs' -o -path '*/src/main.rs' -o -path '*/src/bin/*.rs' \
       -o -path '*/benches/*.rs' -o -path '*/fuzz_targets/*.rs' \) -type f -print |
while read -r file; do
    dir=$(dirname "$file")
    # Only targets of a package: a crate root next to (or under) a manifest's src/.
    mkdir -p "$dest/$dir"
    case "$file" in
        */src/lib.rs) : > "$dest/$file" ;;
        *) echo 'fn main() {}' > "$dest/$file" ;;
    esac
done
