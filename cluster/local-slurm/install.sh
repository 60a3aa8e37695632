#!/usr/bin/env bash
# Install the Debian 12 packages for a local single-node SLURM 22.05 (idempotent).
# Checks dpkg first; runs `apt-get update` and `apt-get install` only when a package is missing.
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "local-slurm: installing ${missing[*]}"
as_root apt-get -o DPkg::Lock::Timeout=600 update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
  --no-install-recommends "${missing[@]}"
