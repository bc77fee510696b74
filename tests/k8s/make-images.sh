#!/usr/bin/env bash
# Build the local images the Kubernetes end-to-end tests use and load them into the test
# cluster's containerd (no registry is reachable there).
#
#   tests/k8s/make-images.sh K8S_DIR      # K8S_DIR: the folder with `up` and `image` (shared/k8s)
#
# docker.io/library/busybox:1.36: the preloaded local/busybox:1.35, tagged.
# docker.io/library/python:3.11-slim: a stand-in for the example pipeline's image, built from
# this host's Debian python3.11 (interpreter, its shared libraries, the standard library without
# its tests) and a static busybox for /bin/sh and the usual tools. Idempotent: an image that is
# already loaded is kept (delete it with `K8S_DIR/ctr images rm NAME` to rebuild).
set -euo pipefail
k8s=${1:?usage: $0 K8S_DIR}
# busybox:1.36 (the example's report task, and the executor's default helper image) is the
# cluster's preloaded static busybox under another name
if ! "$k8s/ctr" images ls -q | grep -x docker.io/library/busybox:1.36 >/dev/null; then
  "$k8s/ctr" images tag docker.io/local/busybox:1.35 docker.io/library/busybox:1.36 >&2
fi
name=docker.io/library/python:3.11-slim
if "$k8s/ctr" images ls -q | grep -x "$name" >/dev/null; then
  echo "make-images: $name already loaded" >&2
  exit 0
fi
py=$(readlink -f /usr/bin/python3)
[ -x "$py" ] || { echo "make-images: /usr/bin/python3 is missing (apt-get install python3)" >&2; exit 1; }
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
ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root/bin" "$root/usr/bin" "$root/usr/lib" "$root/tmp" "$root/etc" "$root/proc" "$root/sys" "$root/dev"
chmod 1777 "$root/tmp"
cp "$py" "$root/usr/bin/python$ver"
ln -s "python$ver" "$root/usr/bin/python3"
ln -s "python$ver" "$root/usr/bin/python"
tar -C /usr/lib -cf - --exclude="python$ver/test" --exclude="python$ver/idlelib" --exclude="python$ver/tkinter" \
  --exclude="python$ver/ensurepip" --exclude="python$ver/lib2to3" "python$ver" | tar -C "$root/usr/lib" -xf -
libs() { ldd "$1" 2>/dev/null | grep -oE '/[^ ]+' || true; }
{ libs "$py"; for so in /usr/lib/python"$ver"/lib-dynload/*.so; do libs "$so"; done; } | sort -u | while read -r lib; do
  [ -e "$lib" ] || continue
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cp "$bb" "$root/bin/busybox"
for applet in $("$bb" --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
ln -sf /bin/busybox "$root/usr/bin/env"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
"$k8s/image" "$name" --rootfs "$root" --cmd '["python3"]'
