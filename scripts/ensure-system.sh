#!/usr/bin/env bash
# Installs the Debian packages edgetwin's demo and tests need, only those that are missing.
# `apt-get update` runs at most once, and only when something has to be installed.
set -euo pipefail

packages=(
    python3-venv       # .venv on a stock Debian python3
    mosquitto          # the EventBus broker
    mosquitto-clients  # mosquitto_pub / mosquitto_sub, as users test with
    socat              # pty pairs for Modbus RTU tests
    dbus               # private dbus-daemon for the emulated BlueZ
    etcd-server        # storage for the real kube-apiserver, when one is present
    containerd         # Edged's container runtime
    runc
    busybox-static     # the tiny test image for containerd
)

missing=()
for pkg in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

# kubectl: the machine image ships one; Debian's (older) kubernetes-client is the fallback.
if ! command -v kubectl >/dev/null 2>&1 && ! dpkg-query -W -f='${Status}' kubernetes-client 2>/dev/null | grep -q "install ok installed"; then
    missing+=(kubernetes-client)
fi

# python3-venv is only needed when the interpreter in use cannot make a venv by itself.
if [[ " ${missing[*]} " == *" python3-venv "* ]] && python3 -c "import venv, ensurepip" 2>/dev/null; then
    missing=("${missing[@]/python3-venv}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
echo "edgetwin: installing Debian packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
