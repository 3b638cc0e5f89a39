#!/usr/bin/env bash
# Make a headless browser available to the dashboard's browser tests.
#
#   scripts/browser.sh        prints the paths of chromium and chromedriver
#
# The browser and its WebDriver come from Debian's `chromium` and `chromium-driver`
# packages, installed with apt-get when missing and we are root (like scripts/servers.sh
# does for servers). Nothing is downloaded at test time: the tests drive
# /usr/bin/chromedriver explicitly, so Selenium Manager never fetches a browser.
# Exits non-zero when no browser can be had (the Makefile then fails the run only
# under CI=true; locally the browser tests skip with a message naming this script).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
meta="$root/.servers"
mkdir -p "$meta"

log() { echo "browser: $*" >&2; }
die() { log "$*"; exit 1; }
# shellcheck source=scripts/apt.sh
. "$root/scripts/apt.sh"

have() { command -v "$1" >/dev/null; }

if ! have chromium || ! have chromedriver; then
  if [[ $(id -u) -eq 0 ]] && have apt-get; then
    apt_install browser chromium chromium-driver
  fi
fi
have chromium || die "no chromium: install Debian's chromium package (as root: apt-get install chromium chromium-driver)"
have chromedriver || die "no chromedriver: install Debian's chromium-driver package (as root: apt-get install chromium-driver)"
echo "chromium: $(command -v chromium)"
echo "chromedriver: $(command -v chromedriver)"
