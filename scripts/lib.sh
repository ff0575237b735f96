# Shared helpers for the scripts in this folder; source it, do not run it.

# Fails with an install hint when a command is missing.
need() {
  local tool=$1 hint=$2
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "error: '$tool' is required: $hint" >&2
    exit 1
  fi
}

# Prints a step banner and runs the step, timing it.
step() {
  local name=$1
  shift
  local started=$SECONDS
  echo
  echo "==> $name"
  "$@"
  echo "<== $name ($((SECONDS - started)) s)"
}

# A free TCP port on the loopback interface.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Installs pinned PyPI packages under .tools/ and prints the folder whose bin/ holds their
# commands: a virtual environment when Python has the venv module, else a plain --target
# folder (Debian's python3 lacks venv unless python3-venv is installed).
tool_venv() {
  local venv=.tools/venv
  if [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >/dev/null 2>&1; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
    echo "$venv"
  else
    rm -rf "$venv"
    python3 -m pip install --quiet --disable-pip-version-check --target .tools/pip "$@"
    echo .tools/pip
  fi
}

# Installs Debian packages that provide the given commands, when any is missing. Needs root
# (CI machines run as root); otherwise says what to install.
ensure_packages() {
  local missing=()
  local pair command package
  for pair in "$@"; do
    command=${pair%%=*}
    package=${pair#*=}
    command -v "$command" >/dev/null 2>&1 || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: missing ${missing[*]}: run 'sudo apt-get install ${missing[*]}'" >&2
    exit 1
  fi
  echo "installing ${missing[*]} from the distribution's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
}
