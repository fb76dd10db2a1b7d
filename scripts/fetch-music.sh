#!/usr/bin/env bash
# Fetch the real, human-made, freely licensed music of Debian's game-music packages into a
# folder, without installing anything: `apt-get download` + `dpkg-deb -x`, then only the
# music files (and each package's copyright file) are kept, one subfolder per package.
#
#   bash scripts/fetch-music.sh DEST [PACKAGE ...]      (default: all eight packages below)
#
# These eight may be trained on. Debian's other music packages are kept for evaluation:
# do not add them here. Which of them the shipped model heard, and which it never heard
# (the probe set), is in README.md ("The shipped ear").
set -euo pipefail

PACKAGES=(wesnoth-1.16-music warzone2100-music ufoai-music hyperrogue-music
  planetblupi-music-ogg asc-music drascula-music fb-music-high)
# where each package keeps its music (game sound effects next to it are left out)
declare -A MUSIC_DIRS=(
  [wesnoth-1.16-music]=usr/share/games/wesnoth/1.16/data/core/music
  [warzone2100-music]=usr/share/games/warzone2100/music
  [ufoai-music]=usr/share/games/ufoai/base   # music inside 0music.pk3, a zip archive
  [hyperrogue-music]=usr/share/hyperrogue/music
  [planetblupi-music-ogg]=usr/share/planetblupi/music
  [asc-music]=usr/share/games/asc/music
  [drascula-music]=usr/share/scummvm/drascula/audio
  [fb-music-high]=usr/share/games/frozen-bubble/snd
)

if [ $# -lt 1 ]; then
  echo "usage: bash scripts/fetch-music.sh DEST [PACKAGE ...]" >&2
  exit 2
fi
dest=$(realpath -m "$1"); shift
[ $# -gt 0 ] && PACKAGES=("$@")
for pkg in "${PACKAGES[@]}"; do
  if [ -z "${MUSIC_DIRS[$pkg]+x}" ]; then
    echo "fetch-music: error: $pkg is not one of the packages this script may fetch (${!MUSIC_DIRS[*]})" >&2
    exit 2
  fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest"
cd "$work"
if ! apt-get download "${PACKAGES[@]}" >/dev/null 2>apt.err; then
  # the package lists may be missing or stale on a fresh machine
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q >/dev/null
  apt-get download "${PACKAGES[@]}" >/dev/null 2>apt.err \
    || { echo "fetch-music: error: apt-get download failed: $(grep -m1 '^E:' apt.err)" >&2; exit 1; }
fi
for pkg in "${PACKAGES[@]}"; do
  deb=$(ls "$pkg"_*.deb)
  dpkg-deb -x "$deb" "x-$pkg"
  out="$dest/$pkg"
  rm -rf "$out"
  mkdir -p "$out"
  cp "x-$pkg/usr/share/doc/$pkg/copyright" "$out/copyright"
  src="x-$pkg/${MUSIC_DIRS[$pkg]}"
  if [ "$pkg" = ufoai-music ]; then
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$src/0music.pk3" "$out"
  else
    cp -r "$src/." "$out/"
  fi
  n=$(find "$out" -type f ! -name copyright | wc -l)
  echo "fetch-music: $pkg ($(dpkg-deb -f "$deb" Version)): $n files in $out"
done
