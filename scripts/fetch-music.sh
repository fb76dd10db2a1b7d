#!/usr/bin/env bash
# Fetch the real, human-made, freely licensed music of Debian's game-music packages into a
# folder, without installing anything: `apt-get download` + `dpkg-deb -x`, then only the
# music files (and each package's copyright file) are kept, one subfolder per package.
#
#   bash scripts/fetch-music.sh DEST [PACKAGE ...]      (default: the fifteen to train on)
#   FETCH_MUSIC_DEBS=DIR bash scripts/fetch-music.sh ... takes the .deb files from DIR instead
#
# The fifteen in PACKAGES may be trained on; wesnoth-1.16-music is the held-out probe set,
# fetched only when named (`bash scripts/fetch-music.sh music/probe wesnoth-1.16-music`).
# Debian's other music packages are kept for evaluation: do not add them here. Which of
# them each shipped ear heard, and which none heard, is in README.md ("Real music to train
# and probe on"). Game packages that also hold sound effects, voices, maps and pictures
# give only their music folder; Frets on Fire songs come as stems (song.ogg, guitar.ogg,
# rhythm.ogg), which are mixed into one mix.wav per song here, stems removed.
set -euo pipefail

PACKAGES=(warzone2100-music ufoai-music hyperrogue-music
  planetblupi-music-ogg asc-music drascula-music fb-music-high
  colobot-common-sounds hedgewars-data widelands-data supertuxkart-data boswars-data
  xmoto-data fretsonfire-songs-muldjord fretsonfire-songs-sectoid)
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
  [colobot-common-sounds]=usr/share/games/colobot/music
  [hedgewars-data]=usr/share/games/hedgewars/Data/Music
  [widelands-data]=usr/share/games/widelands/data/music
  [supertuxkart-data]=usr/share/games/supertuxkart/data/music
  [boswars-data]=usr/share/games/boswars/intro   # its one piece of music, the intro theme
  [xmoto-data]=usr/share/games/xmoto/Textures/Musics
  [fretsonfire-songs-muldjord]=usr/share/games/fretsonfire/data/songs/muldjord
  [fretsonfire-songs-sectoid]=usr/share/games/fretsonfire/data/songs/sectoid
)
# music files; anything else in a music folder (pictures, notes, MIDI charts, text) stays behind
MUSIC_EXT='.*\.\(ogg\|oga\|opus\|mp3\|flac\|wav\|xm\|mod\|it\|s3m\)$'

if [ $# -lt 1 ]; then
  echo "usage: bash scripts/fetch-music.sh DEST [PACKAGE ...]" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
# the project's environment decodes the stems (PyAV); scripts/setup.sh makes it
PY=${PYTHON:-$here/../.venv/bin/python}; [ -x "$PY" ] || PY=python3
dest=$(realpath -m "$1"); shift
[ -n "${FETCH_MUSIC_DEBS:-}" ] && FETCH_MUSIC_DEBS=$(realpath "$FETCH_MUSIC_DEBS")
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
if [ -n "${FETCH_MUSIC_DEBS:-}" ]; then
  # packages downloaded before (`apt-get download` into that folder): no network needed
  for pkg in "${PACKAGES[@]}"; do
    cp "$FETCH_MUSIC_DEBS/${pkg}"_*.deb . 2>/dev/null \
      || { echo "fetch-music: error: no ${pkg}_*.deb in $FETCH_MUSIC_DEBS" >&2; exit 1; }
  done
elif ! apt-get download "${PACKAGES[@]}" >/dev/null 2>apt.err; then
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
    (cd "$src" && find . -type f -iregex "$MUSIC_EXT" -exec cp --parents {} "$out/" \;)
  fi
  if [[ "$pkg" == fretsonfire-songs-* ]]; then
    # one song a folder, as stems: mix them into one track (decoded by ffmpeg inside PyAV)
    "$PY" "$here/mix_stems.py" "$out" || { echo "fetch-music: error: mixing $pkg's stems failed" >&2; exit 1; }
  fi
  n=$(find "$out" -type f ! -name copyright | wc -l)
  echo "fetch-music: $pkg ($(dpkg-deb -f "$deb" Version)): $n files in $out"
done
