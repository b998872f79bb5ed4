# Sourced by hack/test.sh and hack/demo.sh: checks what must be there before anything is built,
# and stops at once with what is missing and how to get it. LXD and busybox-static are
# installed by hack/lxd-cluster.sh; the Python packages the tests use go into a virtual
# environment under target/ (Debian's own Python is externally managed, PEP 668).

prerequisites_fail() {
  printf 'lxd-operator: %s\n' "$*" >&2
  exit 1
}

# The Rust toolchain the workspace needs (rust-version in Cargo.toml) and kubectl.
check_toolchain() {
  command -v cargo >/dev/null 2>&1 ||
    prerequisites_fail "cargo is missing: install Rust with rustup (https://rustup.rs), then run this again"
  local needed have
  needed=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
  have=$(rustc --version | awk '{print $2}')
  if [ -n "$needed" ] && [ "$(printf '%s\n%s\n' "$needed" "$have" | sort -V | head -n 1)" != "$needed" ]; then
    prerequisites_fail "Rust $needed or newer is needed, this is $have: rustup update stable"
  fi
  command -v kubectl >/dev/null 2>&1 ||
    prerequisites_fail "kubectl is missing: install it (https://kubernetes.io/docs/tasks/tools/), any version from 1.28"
}

# A virtual environment in target/python with the packages the tests drive; exports
# LXD_OPERATOR_PYTHON, the interpreter the tests run.
python_env() {
  local venv=$PWD/target/python
  command -v python3 >/dev/null 2>&1 ||
    prerequisites_fail "python3 is missing: apt-get install python3 python3-venv"
  if [ ! -x "$venv/bin/python3" ]; then
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
      rm -rf "$venv"
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get install -y -q python3-venv >/dev/null || prerequisites_fail "cannot install python3-venv with apt-get"
        python3 -m venv "$venv" || prerequisites_fail "python3 -m venv $venv failed"
      else
        prerequisites_fail "python3 cannot make a virtual environment: apt-get install python3-venv (as root)"
      fi
    fi
  fi
  # Helm's own library renders and lints the chart (there is no helm binary); the official
  # Kubernetes Python client is one of the API server's clients under test.
  "$venv/bin/python3" -c "import helm_python" 2>/dev/null ||
    "$venv/bin/python3" -m pip install --quiet helm-python-sdk ||
    prerequisites_fail "pip cannot install helm-python-sdk into $venv (is PyPI reachable?)"
  "$venv/bin/python3" -c "import kubernetes" 2>/dev/null ||
    "$venv/bin/python3" -m pip install --quiet kubernetes==37.0.2 ||
    prerequisites_fail "pip cannot install kubernetes==37.0.2 into $venv (is PyPI reachable?)"
  # schemathesis fuzzes the API server from its OpenAPI document (tests/apiserver_fuzz.rs).
  "$venv/bin/python3" -c "import schemathesis" 2>/dev/null ||
    "$venv/bin/python3" -m pip install --quiet schemathesis==4.32.5 ||
    prerequisites_fail "pip cannot install schemathesis==4.32.5 into $venv (is PyPI reachable?)"
  export LXD_OPERATOR_PYTHON=$venv/bin/python3
}
