#!/usr/bin/env bash
# Builds the samplerd container image on a machine with neither a Docker engine nor a registry:
#   1. installs podman, buildah, debootstrap and runc from Debian if they are missing;
#   2. makes the base image `debian:bookworm-slim` without a pull: `debootstrap --variant=minbase bookworm`
#      from the Debian mirror this machine's apt uses, then `podman import` of its tar (the tar is cached
#      under the build dir, and an existing local debian:bookworm-slim is reused as is);
#   3. `podman build` of deploy/docker/Dockerfile with the flags these machines need (runc, low ulimits,
#      no pull, host network for apt).
# Prints the time of each phase and the image size.
#
#   deploy/docker/build-image.sh [--tag samplerd:dev] [--jobs 2] [--rebuild-base] [--no-cache] [--git REV]
#
# --git REV builds the committed tree of REV (git archive) instead of the work tree.
#
# Environment: DEPLOY_BUILD_DIR (default build-deploy) holds the cached base tar.
set -euo pipefail
cd "$(dirname "$0")/../.."

tag=samplerd:dev
jobs=2
rebuild_base=0
no_cache=()
git_rev=""
while (($#)); do
  case "$1" in
    --tag) tag=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --rebuild-base) rebuild_base=1; shift ;;
    --no-cache) no_cache=(--no-cache); shift ;;
    --git) git_rev=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "build-image.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

base_tag=debian:bookworm-slim
cache_dir=${DEPLOY_BUILD_DIR:-build-deploy}/image-cache
mkdir -p "$cache_dir"
cache_dir=$(cd "$cache_dir" && pwd)
# Global podman flags: runc (crun's cgroup handling fails in these sandboxes) and no systemd.
podman=(podman --runtime runc --cgroup-manager cgroupfs)
limits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

phase_start=$SECONDS
phase() { echo "build-image: $1 took $((SECONDS - phase_start)) s"; phase_start=$SECONDS; }

# --- 1. tools ---------------------------------------------------------------------------------------------
missing=()
for p in podman buildah debootstrap runc; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "build-image: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi
phase "tools"

# --- 2. base image ----------------------------------------------------------------------------------------
# Prints "URI SUITE" for every enabled Debian source of this machine (one-line .list and deb822 .sources).
apt_sources() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } print $i, $(i + 1) }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'function flush() { if (types ~ /(^| )deb( |$)/ && enabled != "no")
                              for (u in uris) for (s in suites) print uris[u], suites[s];
                            types = ""; enabled = ""; delete uris; delete suites }
         /^[ \t]*$/ { flush(); next }
         /^#/ { next }
         { key = tolower($1); sub(/:$/, "", key); $1 = "" }
         key == "types" { types = $0 }
         key == "enabled" { enabled = tolower($2) }
         key == "uris" { split($0, a, " "); for (k in a) uris[k] = a[k] }
         key == "suites" { split($0, b, " "); for (k in b) suites[k] = b[k] }
         END { flush() }' "$f"
  done
}

make_base_tar() {
  local tar=$1 mirror security rootfs
  mirror=$(apt_sources | awk '$2 == "bookworm" { print $1; exit }')
  security=$(apt_sources | awk '$2 == "bookworm-security" { print $1; exit }')
  if [ -z "$mirror" ]; then
    echo "build-image: no 'bookworm' suite in this machine's apt sources; cannot choose a debootstrap mirror" >&2
    exit 1
  fi
  echo "build-image: debootstrap --variant=minbase bookworm from $mirror"
  rootfs=$(mktemp -d "$cache_dir/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  $SUDO debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$cache_dir/debootstrap.log" 2>&1 || {
    tail -20 "$cache_dir/debootstrap.log" >&2; exit 1; }
  # The image's apt uses the same mirror (with updates and security where this machine has them).
  rm -f "$rootfs/etc/apt/sources.list"
  {
    echo "Types: deb"
    echo "URIs: $mirror"
    echo "Suites: bookworm bookworm-updates"
    echo "Components: main"
    echo "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
    if [ -n "$security" ]; then
      echo
      echo "Types: deb"
      echo "URIs: $security"
      echo "Suites: bookworm-security"
      echo "Components: main"
      echo "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
    fi
  } > "$rootfs/etc/apt/sources.list.d/debian.sources"
  # What the slim images drop: package caches, lists, docs and the host's resolver and hostname.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
         "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* "$rootfs/etc/resolv.conf" "$rootfs/etc/hostname"
  $SUDO tar -C "$rootfs" --numeric-owner -cf "$tar.tmp" .
  mv "$tar.tmp" "$tar"
  rm -rf "$rootfs"
  trap - EXIT
}

if ((rebuild_base)) || ! "${podman[@]}" image exists "$base_tag"; then
  base_tar="$cache_dir/debian-bookworm-minbase.tar"
  if ((rebuild_base)) || [ ! -s "$base_tar" ]; then
    make_base_tar "$base_tar"
    phase "debootstrap"
  else
    echo "build-image: reusing cached $base_tar"
  fi
  "${podman[@]}" import --change 'CMD ["/bin/bash"]' "$base_tar" "$base_tag" > /dev/null
  phase "import of $base_tag"
else
  echo "build-image: reusing local image $base_tag"
fi

# --- 3. image ---------------------------------------------------------------------------------------------
context=.
if [ -n "$git_rev" ]; then
  context=$(mktemp -d "$cache_dir/context.XXXXXX")
  trap 'rm -rf "$context"' EXIT
  git archive "$git_rev" | tar -x -C "$context"
  echo "build-image: building $(git rev-parse --short "$git_rev") (git archive), not the work tree"
fi
"${podman[@]}" build --pull=never --network host "${limits[@]}" "${no_cache[@]}" \
  --build-arg "JOBS=$jobs" --ignorefile "$context/deploy/docker/Dockerfile.dockerignore" \
  -f "$context/deploy/docker/Dockerfile" -t "$tag" "$context"
phase "podman build"
[ "$context" = . ] || { rm -rf "$context"; trap - EXIT; }
echo "build-image: $tag is $("${podman[@]}" image inspect --format '{{.Size}}' "$tag" \
  | awk '{ printf "%.1f MB", $1 / 1e6 }')"
