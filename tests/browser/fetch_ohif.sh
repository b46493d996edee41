#!/usr/bin/env bash
# Installs what tests/test_ohif_display.py needs under build/ohif (ignored by git, never committed):
# playwright-core (tests/browser/package-lock.json) and, for each version in ohif-versions.txt, the prebuilt
# static OHIF v3 that the npm package @ohif/app ships in dist/ (npm pack, integrity checked). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=build/ohif
mkdir -p "$OUT/node"
LOCK=tests/browser/package-lock.json
STAMP="$OUT/node/.installed-$(cat tests/browser/package.json "$LOCK" | cksum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ]; then
  cp tests/browser/package.json "$LOCK" "$OUT/node/"
  (cd "$OUT/node" && npm ci --silent --no-audit --no-fund)
  rm -f "$OUT"/node/.installed-* && touch "$STAMP"
fi
grep -v '^#' tests/browser/ohif-versions.txt | while read -r version integrity; do
  [ -f "$OUT/$version/package/dist/index.html" ] && continue
  rm -rf "$OUT/$version" && mkdir -p "$OUT/$version"
  got=$(cd "$OUT/$version" && npm pack --silent --json "@ohif/app@$version" | node -e \
    'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s)[0].integrity))')
  if [ "$got" != "$integrity" ]; then
    echo "@ohif/app@$version integrity $got, expected $integrity" >&2; rm -rf "${OUT:?}/$version"; exit 1
  fi
  tar -xzf "$OUT/$version"/ohif-app-*.tgz -C "$OUT/$version" && rm "$OUT/$version"/ohif-app-*.tgz
  echo "OHIF $version in $OUT/$version/package/dist"
done
