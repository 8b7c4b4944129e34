#!/usr/bin/env bash
# Installs the Debian packages the test suite runs for real: the Mosquitto
# broker, iproute2, iptables and nftables for the kernel tests, the CNI plugins that
# build pods, iperf3 and tcpdump; for the ipip and ipsec tests, which run
# inside user-mode-linux (this kernel has neither module), UML itself, kmod's
# modprobe, a C compiler for UML's xstate shim, and strongSwan's charon with
# its standard plugins; for the wireguard tests wireguard-go (they run on it,
# as a host whose kernel has no WireGuard does) and wireguard-tools' wg;
# systemd's systemd-analyze, which checks the units in examples/systemd;
# Chromium's headless shell, which the dashboard's tests drive as a person
# would. Only what is missing is installed.
set -euo pipefail
PACKAGES=(mosquitto iproute2 iptables nftables iputils-ping containernetworking-plugins iperf3 tcpdump
  user-mode-linux kmod gcc libc6-dev util-linux
  strongswan-charon strongswan-libcharon strongswan-swanctl libstrongswan-standard-plugins wireguard-go wireguard-tools systemd
  chromium-headless-shell)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "the tests need these Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing Debian packages for the tests: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
