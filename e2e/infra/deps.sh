#!/usr/bin/env bash
# Installs what a fresh machine of our kind lacks to build and run Switchboard
# (idempotent: installs only missing packages). Used by .ci/run, `make test` and
# `make demo`.
#   - Debian packages: librdkafka is built from source (cmake, curl, ssl, zlib),
#     Kafka's jars are resolved with Maven, shellcheck lints our scripts.
#   - rustup components for `make test`.
#   - with --node, also what the real worker node needs (e2e/infra/node.sh):
#     runc, the CNI plugins, iptables, iproute2, jq. Not installed otherwise.
#   - with --images, what `make images` needs (e2e/infra/images.sh): buildah,
#     mmdebstrap, runc.
# Go, Java and Rust themselves come with the machine.
set -euo pipefail

apt_packages=(cmake libcurl4-openssl-dev libssl-dev zlib1g-dev openssl pkg-config
  build-essential curl maven shellcheck python3)
for opt in "$@"; do
  case "$opt" in
  --node) apt_packages+=(runc containernetworking-plugins iptables iproute2 jq) ;;
  --images) apt_packages+=(buildah mmdebstrap runc jq) ;;
  *) echo "deps: unknown option $opt (--node, --images)" >&2; exit 2 ;;
  esac
done
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}"
fi
for component in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component"
done
