# Shared by scripts/serve and scripts/test: install what is missing, idempotently.
# Sourced, not run. Needs: python3 (>= 3.11) with venv; root or sudo for apt-get.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HSMKMS_VENV:-$ROOT/.venv}"

_as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_softhsm() {
    if command -v softhsm2-util >/dev/null 2>&1; then return 0; fi
    echo "scripts: installing SoftHSM2 (Debian package softhsm2)" >&2
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 >/dev/null
}

ensure_hsm_tools() {
    # The second token and the network HSM of the tests: NSS's softoken (libnss3) with
    # certutil (libnss3-tools), and p11-kit's server and client module (p11-kit,
    # p11-kit-modules), which export SoftHSM2 over a socket (tests/resilience/test_p11kit_*).
    local want=()
    [ -e /usr/lib/x86_64-linux-gnu/libsoftokn3.so ] || want+=(libnss3)
    command -v certutil >/dev/null 2>&1 || want+=(libnss3-tools)
    command -v p11-kit >/dev/null 2>&1 || want+=(p11-kit)
    [ -e /usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so ] || want+=(p11-kit-modules)
    [ "${#want[@]}" -eq 0 ] && return 0
    echo "scripts: installing ${want[*]} (Debian packages)" >&2
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >/dev/null
}

ensure_postgresql() {
    # The tests' throwaway PostgreSQL clusters (tests/postgres.py) need the server binaries.
    if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then return 0; fi
    echo "scripts: installing PostgreSQL (Debian package postgresql)" >&2
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    # Debian starts a cluster of its own on port 5432; the tests make theirs, on free ports.
    _as_root service postgresql stop >/dev/null 2>&1 || true
}

ensure_venv() {
    local extras="${1:-}"
    local stamp="$VENV/.hsmkms-installed${extras:+-$extras}"
    local want
    want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
    if [ ! -x "$VENV/bin/python" ]; then
        echo "scripts: creating $VENV" >&2
        python3 -m venv "$VENV"
    fi
    echo "scripts: installing hsmkms${extras:+[$extras]} into $VENV" >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install -q -e "$ROOT${extras:+[$extras]}"
    echo "$want" > "$stamp"
}

ensure_node_deps() {
    local dir="$ROOT/tests/js"
    [ -f "$dir/package.json" ] || return 0
    command -v npm >/dev/null 2>&1 || {
        echo "scripts: installing Node.js and npm (Debian packages nodejs, npm)" >&2
        _as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    }
    if [ ! -d "$dir/node_modules" ] || [ "$dir/package.json" -nt "$dir/node_modules" ]; then
        echo "scripts: installing the JavaScript test client (npm)" >&2
        (cd "$dir" && { [ -f package-lock.json ] && npm ci --silent --no-audit --no-fund \
            || npm install --silent --no-audit --no-fund; }) >/dev/null
        touch "$dir/node_modules"
    fi
}
