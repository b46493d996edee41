#!/usr/bin/env bash
# Base image of the CPU MAP: a minimal Debian 12 "bookworm" root filesystem (Python 3.11, as on our
# machines) made with mmdebstrap from Debian's own repositories, then loaded with `docker import`.
#
#   tools/base_image.sh TAG TARBALL      # e.g. spine-seg-base:bookworm build/image/base.tar
#
# An existing TARBALL is imported as it is (tools/build_image.py keys it by this script's content).
# No registry image is pulled. SOURCE_DATE_EPOCH is fixed, so the same package versions give the same
# tarball; DEBIAN_MIRROR (and DEBIAN_SECURITY_MIRROR) may point at a local mirror or a fixed
# snapshot.debian.org date for a bit-for-bit rebuild. The package list is written next to the tarball.
# Needs root (or an unprivileged user namespace) and `apt-get install mmdebstrap`.
set -euo pipefail

tag=${1:?usage: $0 TAG TARBALL}
tar=${2:?usage: $0 TAG TARBALL}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# python3-venv: the app's virtual environment; jq: the SDK's /var/holoscan/tools script reads app.json
# with it; tini: PID 1 that forwards SIGTERM (docker stop) to the app and reaps children.
packages=python3,python3-venv,ca-certificates,jq,tini

if [ ! -f "$tar" ]; then
  mkdir -p "$(dirname "$tar")"
  # minbase, no documentation or translations (the copyright files stay), apt lists removed afterwards
  SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1735689600} mmdebstrap --variant=minbase --format=tar \
    --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook='chroot "$1" dpkg-query -W -f "\${Package}=\${Version}\n" > "$1/.packages"' \
    --customize-hook="copy-out /.packages $(dirname "$tar")" --customize-hook='rm "$1/.packages"' \
    bookworm "$tar.partial" \
    "deb $mirror bookworm main" "deb $mirror bookworm-updates main" "deb $security bookworm-security main"
  mv "$tar.partial" "$tar"
  mv "$(dirname "$tar")/.packages" "$tar.packages"
fi

docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
  --message "Debian bookworm minbase + $packages (mmdebstrap)" "$tar" "$tag" >/dev/null
echo "$tag: $(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}') from $tar"
