# Sourced by the scripts that need Debian packages: one way to install them.
#   debian_install WHO PACKAGE...   installs those not installed yet (as root, or with sudo)
# Debian starts some daemons when it installs their package (Mosquitto on 1883, Prometheus on
# 9090); the tests and the demo start their own on ports of their choosing, so those are
# stopped again.

debian_install() {
  local who=$1
  shift
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  echo "$who: installing Debian packages: ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  for p in "${missing[@]}"; do
    case "$p" in
      mosquitto | prometheus) $sudo service "$p" stop >/dev/null 2>&1 || true ;;
    esac
  done
}
