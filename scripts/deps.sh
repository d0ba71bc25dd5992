#!/usr/bin/env bash
# Installs the Debian 12 packages that building, running and testing Engram need.
# Run as root. Does nothing (and needs no network) when everything is present.
set -euo pipefail

build_pkgs=(build-essential cmake pkg-config libgrpc-dev protobuf-c-compiler
            libprotobuf-c-dev libprotobuf-dev liblmdb-dev lmdb-utils libsodium-dev libcunit1-dev
            libmicrohttpd-dev libjson-c-dev libicu-dev libstemmer-dev)
# make package: cpack's Depends come from dpkg-shlibdeps (dpkg-dev), the
# package is checked with dpkg-deb.
build_pkgs+=(dpkg-dev)
# protoc builds the descriptor set engramd embeds (server reflection).
build_pkgs+=(protobuf-compiler)
test_pkgs=(python3 python3-grpcio python3-protobuf protobuf-compiler
           protobuf-compiler-grpc binutils python3-h2)
# tests/e2e/test_k8s_manifests.py renders deploy/k8s with `kubectl kustomize`:
# Debian's kubernetes-client (kubectl 1.20) unless some kubectl is on PATH
# already. A kubectl package, where one is installed, provides the same
# binary (/usr/bin/kubectl, which the two would clash over), and the
# manifests render alike with both.
command -v kubectl >/dev/null || test_pkgs+=(kubernetes-client)
# tests/e2e/test_k8s_manifests.py checks deploy/k8s against the API's types.
test_pkgs+=(python3-kubernetes)
# clients/python: the SDK installs offline into a venv (pip, setuptools and
# wheel from Debian; tests/test_install.py).
test_pkgs+=(python3-venv python3-pip python3-setuptools python3-wheel)
# tests/e2e/test_cli_habits.py runs the zsh completion script.
test_pkgs+=(zsh)
# The etcd unit suite and the failover tests run a real etcd (bench uses
# test_pkgs too).
test_pkgs+=(etcd-server etcd-client)
# clients/node (ctest node_sdk) and tools/buf (ctest proto_lint): Debian's nodejs and npm, only where no
# node/npm is on PATH (a NodeSource node bundles its own npm, which Debian's
# npm package would conflict with).
command -v node >/dev/null || test_pkgs+=(nodejs)
command -v npm >/dev/null || test_pkgs+=(npm)
# make bench: h2load and nghttp (nghttp2-client); Redis beside etcd
# (redis-server; redis-tools has redis-benchmark and redis-cli). mdb_stat
# (lmdb-utils) is in build_pkgs.
bench_pkgs=(nghttp2-client redis-server redis-tools)
# libFuzzer: clang 14, whose runtime (libclang_rt.fuzzer) Debian 12 ships in
# libclang-rt-14-dev, a recommendation only, so named here.
fuzz_pkgs=(clang libclang-rt-14-dev)

want=("${build_pkgs[@]}")
case "${1:-build}" in
  build) ;;
  test)  want+=("${test_pkgs[@]}" "${fuzz_pkgs[@]}") ;;
  bench) want+=("${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
  *) echo "usage: $0 [build|test|bench]" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "deps.sh: missing packages: ${missing[*]}; run as root or install them" >&2
  exit 1
fi
echo "deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
