#!/usr/bin/env bash
# Packs the datasets a GPU call carries into .data/ (git-ignored), xz-compressed, and checks that
# the call's working tree (tracked files + .data + .xla_cache) stays within the device's 64 MiB.
#
#   bash scripts/pack_data.sh            # from the repository root; installs nothing
#
# Sources: Fashion-MNIST IDX files (/usr/share/datasets/fashion-mnist, `apt-get install
# dataset-fashion-mnist`, or $LOPT_FASHION_MNIST_DIR), the fortunes (/usr/share/games/fortunes or
# $LOPT_FORTUNES_DIR) and WordNet's data.{noun,verb,adj,adv} (/usr/share/wordnet or $LOPT_WORDNET_DIR).
# xz packs them 14% smaller than gzip (Fashion-MNIST 26.4 -> 22.6 MB for the training images), the
# room the compiled bucket programs (.xla_cache, ~11 MB) need beside the data; lopt reads .xz, .gz
# and plain files alike (lopt.tasks.datasets.compressed). Existing files in .data/ are kept unless
# they are older than their source.
set -euo pipefail
FASHION="${LOPT_FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
FORTUNES="${LOPT_FORTUNES_DIR:-/usr/share/games/fortunes}"
WORDNET="${LOPT_WORDNET_DIR:-/usr/share/wordnet}"
for dir in "$FASHION" "$FORTUNES" "$WORDNET"; do
    case "$(realpath -m "$dir")/" in "$(realpath -m .data)"/*) echo "$dir is inside .data/: unset the LOPT_*_DIR variables first" >&2; exit 2;; esac
done
mkdir -p .data/fashion .data/fortunes .data/wordnet
grep -qx '.data/' .git/info/exclude 2>/dev/null || echo '.data/' >> .git/info/exclude

pack() {  # pack SOURCE TARGET.xz: decompress a plain or .gz SOURCE and write it xz-compressed
    local src="$1" dst="$2"
    if [ -f "$dst" ] && [ "$dst" -nt "$src" ]; then return; fi
    if [[ "$src" == *.gz ]]; then zcat "$src"; else cat "$src"; fi | xz -9e -T0 > "$dst.part"
    mv "$dst.part" "$dst"
}

for stem in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    src=""
    for cand in "$FASHION/$stem" "$FASHION/$stem.gz"; do [ -f "$cand" ] && src="$cand"; done
    [ -n "$src" ] || { echo "no $stem[.gz] in $FASHION: apt-get install -y dataset-fashion-mnist" >&2; exit 1; }
    pack "$src" ".data/fashion/$stem.xz"
    rm -f ".data/fashion/$stem.gz"  # an older gzip packing of the same file, now packed as .xz
done
for part in noun verb adj adv; do
    [ -f "$WORDNET/data.$part" ] || { echo "no $WORDNET/data.$part: apt-get install -y wordnet-base" >&2; exit 1; }
    pack "$WORDNET/data.$part" ".data/wordnet/data.$part.xz"
    rm -f ".data/wordnet/data.$part.gz"
done
[ -d "$FORTUNES" ] || { echo "no $FORTUNES: apt-get install -y fortunes-min fortunes" >&2; exit 1; }
cp -ru "$FORTUNES/." .data/fortunes/

tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- | tail -1 | cut -f1)
data=$(du -sb .data | cut -f1)
cache=$( [ -d .xla_cache ] && du -sb .xla_cache | cut -f1 || echo 0)
total=$((tree + data + cache))
printf 'a device call carries %.1f MiB: tree %.1f + .data %.1f + .xla_cache %.1f (limit 64)\n' \
    "$(echo "$total/1048576" | bc -l)" "$(echo "$tree/1048576" | bc -l)" "$(echo "$data/1048576" | bc -l)" \
    "$(echo "$cache/1048576" | bc -l)"
if [ "$total" -gt $((64 * 1048576)) ]; then
    echo "over 64 MiB: carry .data alone (the programs then compile on the GPU, ~100 s)" >&2
fi
