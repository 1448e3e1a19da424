# Shared set-up for scripts/run, scripts/test and scripts/bench. Sourced, not run.
# Everything here is idempotent: it installs or starts only what is missing.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
# One set of extras for every script (run, test, bench, cluster): one install, never redone
# because another script wanted a different set.
EXTRAS="dev,libvirt,vsphere,xenserver,hyperv,thespian,bench"
export DEBIAN_FRONTEND=noninteractive

log() { printf '==> %s\n' "$*" >&2; }

is_root() { [ "$(id -u)" = 0 ]; }

_apt_updated=""
# apt_install PKG... : install the Debian packages that are not installed yet (root only).
apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! is_root; then
        log "missing Debian packages: ${missing[*]} (run as root, or install them yourself)"
        return 1
    fi
    if [ -z "$_apt_updated" ]; then
        log "apt-get update"
        apt-get update -qq >/dev/null
        _apt_updated=1
    fi
    log "apt-get install ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

find_python() {
    local c
    for c in python3.11 python3 python; do
        if command -v "$c" >/dev/null 2>&1 &&
            "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$c"; return 0
        fi
    done
    log "Python >= 3.11 is required"; return 1
}

# ensure_venv EXTRAS : create or reuse .venv and install the project with those extras.
# Reinstalls only when pyproject.toml or the extras change.
ensure_venv() {
    local extras="$1" py stamp want
    py="$(find_python)"
    if [ ! -x "$VENV/bin/python" ]; then
        if ! "$py" -m venv "$VENV" 2>/dev/null; then
            rm -rf "$VENV"
            apt_install python3-venv
            "$py" -m venv "$VENV"
        fi
    fi
    stamp="$VENV/.cloudcore-installed"
    want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1) $extras"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        log "installing cloudcore[$extras] into .venv"
        "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
        "$VENV/bin/python" -m pip install -q -e "$ROOT[$extras]"
        echo "$want" > "$stamp"
    fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port PORT SECONDS NAME
wait_port() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        port_open "$1" && return 0
        sleep 0.1
    done
    log "$3 did not open 127.0.0.1:$1 within $2 s"; return 1
}

# ensure_storage_tools: tgt (tgtd, tgtadm) for the iSCSI target, libiscsi-bin (iscsi-inq,
# iscsi-readcapacity16) and QEMU's iSCSI block driver (qemu-block-extra) for the initiator side.
# The storage tests start their own tgtd on a loopback port and stop it; the packaged service is
# left alone (Debian enables it, but a container without systemd never starts it).
ensure_storage_tools() {
    apt_install tgt libiscsi-bin qemu-utils qemu-block-extra
}

ensure_postgres() {
    port_open 5432 && return 0
    apt_install postgresql
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start
    wait_port 5432 30 PostgreSQL
}

ensure_redis() {
    port_open 6379 && return 0
    apt_install redis-server
    log "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
    wait_port 6379 30 Redis
}

ensure_rabbitmq() {
    port_open 5672 && return 0
    apt_install rabbitmq-server
    log "starting RabbitMQ"
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 rabbitmq-server -detached
    wait_port 5672 90 RabbitMQ
}

# ensure_dhcp: dnsmasq (the network actor's DHCP server), iproute2 (namespaces, bridges, taps)
# and QEMU with its iPXE ROMs, for the DHCP integration test's diskless guests.
ensure_dhcp() {
    apt_install dnsmasq-base iproute2 qemu-system-x86 ipxe-qemu
}

# ensure_libvirt_build: what pip needs to build libvirt-python from source (it has no wheels).
ensure_libvirt_build() {
    local py inc
    apt_install libvirt-dev pkg-config gcc
    py="$(find_python)"
    inc="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
    [ -f "$inc/Python.h" ] || apt_install python3-dev
}

# ensure_libvirt: libvirtd, virtlogd, virsh, QEMU and qemu-img for the libvirt integration tests.
# The tests start the daemons themselves when they are not running, and stop only those.
ensure_libvirt() {
    ensure_libvirt_build
    apt_install libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils
    # Debian's udev rule gives /dev/kvm to group kvm, mode 0660, so QEMU (running as libvirt-qemu)
    # can use KVM. Containers without udev leave it root-only: QEMU then falls back to TCG and
    # libvirt re-probes QEMU on every domain definition (~35 s each). Do what the rule does.
    if [ -c /dev/kvm ] && is_root && getent group kvm >/dev/null &&
        [ "$(stat -c %G /dev/kvm)" != kvm ]; then
        log "giving /dev/kvm to group kvm (mode 0660), as Debian's udev rule does"
        chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
    fi
}

# ensure_vcsim: build VMware's vCenter simulator (vcsim) offline from Debian's govmomi sources
# and print the binary's path. The binary is cached outside the clone, under a name hashed from
# scripts/vcsim/main.go and the Go and govmomi package versions, so it is built once per change
# (about 60 s on 2 cores), not once per run. VCSIM_CACHE overrides the cache directory.
ensure_vcsim() {
    local src="$ROOT/scripts/vcsim/main.go" cache key bin work
    apt_install golang-go golang-github-vmware-govmomi-dev >&2 || return 1
    cache="${VCSIM_CACHE:-/var/cache/cloudcore}"
    if ! mkdir -p "$cache" 2>/dev/null || [ ! -w "$cache" ]; then
        cache="${XDG_CACHE_HOME:-$HOME/.cache}/cloudcore"
        mkdir -p "$cache"
    fi
    key="$({ cat "$src"; go version; dpkg-query -W -f='${Version}' golang-github-vmware-govmomi-dev; } |
        sha256sum | cut -c1-16)"
    bin="$cache/vcsim-$key"
    if [ ! -x "$bin" ]; then
        log "building vcsim offline from Debian's govmomi into $bin"
        work="$(mktemp -d)"
        mkdir -p "$work/src/cloudcore-vcsim"
        cp "$src" "$work/src/cloudcore-vcsim/main.go"
        if ! (cd "$work/src/cloudcore-vcsim" &&
            GO111MODULE=off GOPATH="$work:/usr/share/gocode" \
                GOCACHE="$cache/gocache" go build -o "$bin.tmp" . >&2); then
            rm -rf "$work"; log "vcsim build failed"; return 1
        fi
        mv "$bin.tmp" "$bin"
        rm -rf "$work"
    fi
    echo "$bin"
}

# ensure_web_assets: the web console's front-end packages (htmx, its SSE extension, noVNC) from
# the npm registry, as cloudcore/app/web/package-lock.json pins them, installed with `npm ci`
# into a cache outside the clone, keyed by the lock file's hash. Prints the node_modules
# directory, which the gateway serves under /ui/assets (CLOUDCORE_UI__ASSETS_DIR).
# WEB_ASSETS_CACHE overrides the cache directory.
ensure_web_assets() {
    local web="$ROOT/cloudcore/app/web" cache key dir
    command -v npm >/dev/null 2>&1 || apt_install nodejs npm >&2 || return 1
    cache="${WEB_ASSETS_CACHE:-/var/cache/cloudcore}"
    if ! mkdir -p "$cache" 2>/dev/null || [ ! -w "$cache" ]; then
        cache="${XDG_CACHE_HOME:-$HOME/.cache}/cloudcore"
        mkdir -p "$cache"
    fi
    key="$(cat "$web/package.json" "$web/package-lock.json" | sha256sum | cut -c1-16)"
    dir="$cache/web-$key"
    if [ ! -f "$dir/.installed" ]; then
        log "installing the web console's npm packages into $dir"
        rm -rf "$dir" && mkdir -p "$dir"
        cp "$web/package.json" "$web/package-lock.json" "$dir/"
        if ! (cd "$dir" && npm ci --omit=dev --no-audit --no-fund --loglevel=error >&2); then
            rm -rf "$dir"; log "npm ci failed for the web console"; return 1
        fi
        touch "$dir/.installed"
    fi
    echo "$dir/node_modules"
}

# ensure_browser: Debian's chromium, which the web console's browser tests drive through
# Playwright (executable /usr/bin/chromium; Playwright's own browser download is not used).
ensure_browser() {
    apt_install chromium fonts-dejavu-core
}
