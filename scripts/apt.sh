# Sourced by scripts/servers.sh and scripts/browser.sh (which define `log`, `die` and
# `meta`, the folder for logs): Debian packages installed on demand.

apt_install() {  # apt_install LOG PACKAGE...: apt-get install, refreshing the lists once if needed
  local logfile="$meta/apt-$1.log"; shift
  log "installing Debian's $*"
  if ! { apt-get install -y --no-install-recommends "$@" \
    || { apt-get update && apt-get install -y --no-install-recommends "$@"; }; } \
    >"$logfile" 2>&1; then
    tail -n 20 "$logfile" >&2
    die "apt-get install $* failed"
  fi
}
