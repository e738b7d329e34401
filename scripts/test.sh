#!/usr/bin/env bash
# Run every test: unit tests under Pulumi mocks, promtool and amtool checks, and live tests
# against Debian's Prometheus, Alertmanager, blackbox exporter and Caddy on 127.0.0.1.
# Installs what is missing first: the Debian packages (needs root or sudo) and a virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."

debian_packages=(prometheus prometheus-alertmanager prometheus-blackbox-exporter caddy hey)
missing=()
for package in "${debian_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Debian's packages start their services where an init system runs; the tests start their own.
for service in prometheus prometheus-alertmanager prometheus-blackbox-exporter caddy; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
        echo "note: the system's $service service is running; the tests use their own free ports" >&2
    fi
done

if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt

exec .venv/bin/python -m pytest "$@"
