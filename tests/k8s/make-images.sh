#!/usr/bin/env bash
# Build the local images the Kubernetes end-to-end tests use and load them into the test
# cluster's containerd (no registry is reachable there).
#
#   tests/k8s/make-images.sh K8S_DIR      # K8S_DIR: the folder with `up` and `image` (shared/k8s)
#
# None of these is the real image: they are stand-ins built from this host's Debian packages,
# under the names the tests and Tekton's examples use, so that the same manifests run on pods
# as with the local executor (which runs steps with the host's tools).
#
# docker.io/library/busybox:1.36 (the executor's default helper image) and busybox:latest:
#   the cluster's preloaded static busybox (local/busybox:1.35), tagged.
# mirror.gcr.io/busybox (and the digests Tekton's examples pin), cgr.dev/chainguard/busybox@…
#   and Tekton's `nop` image (tenon runs `true` in it): Debian's static busybox and its applets.
# docker.io/library/python:3.11-slim: this host's Debian python3.11 (interpreter, its shared
#   libraries, the standard library without its tests) and a static busybox for /bin/sh and the
#   usual tools.
# docker.io/library/alpine:latest, mirror.gcr.io/alpine (and the pinned digest): NOT Alpine
#   (no musl, no apk): Debian's static busybox as /bin/sh and every applet, as in Alpine.
# docker.io/library/bash:latest, mirror.gcr.io/bash (and the pinned digest): the alpine stand-in
#   plus Debian's bash at /usr/local/bin/bash (where the official image has it; no /bin/bash).
# docker.io/library/ubuntu:latest, mirror.gcr.io/ubuntu (and the pinned digest): NOT Ubuntu: a
#   merged-/usr tree with Debian's bash, dash (/bin/sh), coreutils, grep, sed, findutils, mawk,
#   tar, gzip, diffutils, debianutils, hostname, util-linux, ncurses-bin and procps binaries and the
#   libraries they link (no apt, no dpkg database).
# A name with a digest (`repo@sha256:…`) is a plain containerd name here: the kubelet finds it
# locally (pull policy IfNotPresent) and never checks the digest against the content.
#
# Needs: ctr (K8S_DIR/ctr), busybox-static, python3, git, and the Debian packages above (all in a
# default Debian; .ci/run installs busybox-static and python3). Idempotent: an image that is
# already loaded is kept (delete it with `K8S_DIR/ctr images rm NAME` to rebuild).
set -euo pipefail
k8s=${1:?usage: $0 K8S_DIR}
loaded=$("$k8s/ctr" images ls -q)
have() { grep -Fx "$1" >/dev/null <<<"$loaded"; }
# tag SOURCE NAME...: give the loaded image SOURCE each NAME that is not loaded yet
tag() {
  local src=$1 n
  shift
  for n in "$@"; do
    have "$n" || "$k8s/ctr" images tag "$src" "$n" >/dev/null
  done
}
tag docker.io/local/busybox:1.35 docker.io/library/busybox:1.36 docker.io/library/busybox:latest

# A static busybox: Debian's busybox-static installs /bin/busybox. `ldd` exits 1 for a static
# binary, so its verdict is read from its output, never from its exit status (this script runs
# under pipefail: `ldd | grep` failed on every machine where the image was not loaded yet).
static_busybox() {
  local out
  out=$(ldd "$1" 2>&1 || true)
  case $out in *"not a dynamic"*|*"statically linked"*) return 0 ;; *) return 1 ;; esac
}
bb=
for cand in /bin/busybox /usr/bin/busybox "$(command -v busybox || true)"; do
  if [ -n "$cand" ] && [ -x "$cand" ] && static_busybox "$cand"; then bb=$cand; break; fi
done
[ -n "$bb" ] || { echo "make-images: a static busybox is needed (apt-get install busybox-static)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# new_root DIR: the skeleton every stand-in shares (users, /tmp, mount points)
new_root() {
  mkdir -p "$1/bin" "$1/usr/bin" "$1/usr/lib" "$1/tmp" "$1/etc" "$1/root" "$1/proc" "$1/sys" "$1/dev"
  chmod 1777 "$1/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$1/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$1/etc/group"
}
# add_busybox DIR: the static busybox as /bin/busybox, every applet a link to it
add_busybox() {
  cp "$bb" "$1/bin/busybox"
  for applet in $("$bb" --list); do
    [ -e "$1/bin/$applet" ] || ln -s busybox "$1/bin/$applet"
  done
  ln -sf /bin/busybox "$1/usr/bin/env"
}
# add_libs DIR FILE...: the shared libraries (and the loader) FILEs link, at the same paths
add_libs() {
  local root=$1 lib
  shift
  for f in "$@"; do ldd "$f" 2>/dev/null | grep -oE '/[^ ]+' || true; done | sort -u | while read -r lib; do
    [ -e "$lib" ] || continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}
# load NAME ROOT CMD: import ROOT as NAME
load() { "$k8s/image" "$1" --rootfs "$2" --cmd "$3"; }

name=docker.io/library/python:3.11-slim
if have "$name"; then
  echo "make-images: $name already loaded" >&2
else
  py=$(readlink -f /usr/bin/python3)
  [ -x "$py" ] || { echo "make-images: /usr/bin/python3 is missing (apt-get install python3)" >&2; exit 1; }
  ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  root=$work/python
  new_root "$root"
  cp "$py" "$root/usr/bin/python$ver"
  ln -s "python$ver" "$root/usr/bin/python3"
  ln -s "python$ver" "$root/usr/bin/python"
  tar -C /usr/lib -cf - --exclude="python$ver/test" --exclude="python$ver/idlelib" --exclude="python$ver/tkinter" \
    --exclude="python$ver/ensurepip" --exclude="python$ver/lib2to3" "python$ver" | tar -C "$root/usr/lib" -xf -
  add_libs "$root" "$py" /usr/lib/python"$ver"/lib-dynload/*.so
  add_busybox "$root"
  load "$name" "$root" '["python3"]'
fi

# The kubelet reports at most 5 names per image in the node's status (where the tests look
# for them), so the pinned busybox names get an image of their own: the same static busybox
# and applets, without the preloaded image's extras.
if have mirror.gcr.io/busybox:latest; then
  echo "make-images: mirror.gcr.io/busybox:latest already loaded" >&2
else
  root=$work/busybox
  new_root "$root"
  add_busybox "$root"
  load mirror.gcr.io/busybox:latest "$root" '["sh"]'
fi
tag mirror.gcr.io/busybox:latest \
  mirror.gcr.io/busybox@sha256:b3255e7dfbcd10cb367af0d409747d511aeb66dfac98cf30e97e87e4207dd76f \
  mirror.gcr.io/busybox@sha256:1303dbf110c57f3edf68d9f5a16c082ec06c4cf7604831669faf2c712260b5a0 \
  cgr.dev/chainguard/busybox@sha256:6202d571cc9c86302d4bd1eef6d2235d2b81b7dfc509cf7eee621f4d73175807 \
  ghcr.io/tektoncd/pipeline/nop-8eac7c133edad5df719dc37b36b62482@sha256:5a587635b5b355d51def6380ba344ff42a52fa7c60013f405df3bba80b0702e4

if have docker.io/library/alpine:latest; then
  echo "make-images: docker.io/library/alpine:latest already loaded" >&2
else
  root=$work/alpine
  new_root "$root"
  add_busybox "$root"
  printf 'NAME="tenon test stand-in for alpine (Debian static busybox)"\nID=alpine\n' >"$root/etc/os-release"
  load docker.io/library/alpine:latest "$root" '["/bin/sh"]'
fi
tag docker.io/library/alpine:latest mirror.gcr.io/alpine:latest \
  mirror.gcr.io/alpine@sha256:25109184c71bdad752c8312a8623239686a9a2071e8825f20acb8f2198c3f659

if have docker.io/library/bash:latest; then
  echo "make-images: docker.io/library/bash:latest already loaded" >&2
else
  root=$work/bash
  new_root "$root"
  add_busybox "$root"
  mkdir -p "$root/usr/local/bin"
  cp -L /usr/bin/bash "$root/usr/local/bin/bash"
  add_libs "$root" /usr/bin/bash
  load docker.io/library/bash:latest "$root" '["bash"]'
fi
tag docker.io/library/bash:latest mirror.gcr.io/bash:latest \
  mirror.gcr.io/bash@sha256:e320b40b14abc61f053286705070342c46034a549a276b798e64541457c4af92

if have docker.io/library/ubuntu:latest; then
  echo "make-images: docker.io/library/ubuntu:latest already loaded" >&2
else
  root=$work/ubuntu
  mkdir -p "$root/usr/bin" "$root/usr/sbin" "$root/usr/lib" "$root/usr/lib64"
  ln -s usr/bin "$root/bin"
  ln -s usr/sbin "$root/sbin"
  ln -s usr/lib "$root/lib"
  ln -s usr/lib64 "$root/lib64"
  new_root "$root"
  bins=()
  for pkg in bash dash coreutils grep sed findutils mawk tar gzip diffutils debianutils hostname util-linux ncurses-bin procps; do
    dpkg -s "$pkg" >/dev/null 2>&1 || { echo "make-images: Debian package $pkg is missing (apt-get install $pkg)" >&2; exit 1; }
    while read -r f; do
      [ -f "$f" ] || continue
      dest=/usr/${f#/usr/}
      cp -L "$f" "$root$dest"
      bins+=("$f")
    done < <(dpkg -L "$pkg" | grep -E '^/(usr/)?s?bin/[^/]+$')
  done
  ln -sf dash "$root/usr/bin/sh"
  ln -sf mawk "$root/usr/bin/awk"
  add_libs "$root" "${bins[@]}"
  printf 'NAME="tenon test stand-in for ubuntu (Debian binaries)"\nID=ubuntu\n' >"$root/etc/os-release"
  load docker.io/library/ubuntu:latest "$root" '["/bin/bash"]'
fi
tag docker.io/library/ubuntu:latest mirror.gcr.io/ubuntu:latest \
  mirror.gcr.io/ubuntu@sha256:0d39fcc8335d6d74d5502f6df2d30119ff4790ebbb60b364818d5112d9e3e932

# docker.io/local/git:debian: Debian's git (git, its helper programs in /usr/lib/git-core, the
# templates) and a static busybox for /bin/sh: the in-cluster git server of tests/k8s_deploy.rs
# (`git daemon`, which runs from /usr/lib/git-core, serving and receiving pushes).
name=docker.io/local/git:debian
if have "$name"; then
  echo "make-images: $name already loaded" >&2
else
  command -v git >/dev/null || { echo "make-images: git is missing (apt-get install git)" >&2; exit 1; }
  root=$work/git
  new_root "$root"
  add_busybox "$root"
  cp -L /usr/bin/git "$root/usr/bin/git"
  mkdir -p "$root/usr/lib/git-core" "$root/usr/share/git-core"
  cp -a /usr/lib/git-core/. "$root/usr/lib/git-core/"
  cp -a /usr/share/git-core/templates "$root/usr/share/git-core/"
  add_libs "$root" /usr/bin/git /usr/lib/git-core/git-daemon /usr/lib/git-core/git-remote-http
  load "$name" "$root" '["git"]'
fi
