#!/usr/bin/env bash
# Installs what mailintake needs on a fresh machine, then leaves the environment in .venv.
#   scripts/bootstrap.sh          Python packages (uv, then the locked workspace)
#   scripts/bootstrap.sh test     also Dovecot and PostgreSQL (apt-get, when root)
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v uv >/dev/null 2>&1; then
  UV=$(command -v uv)
else
  if [ ! -x .tools/bin/uv ]; then
    echo "bootstrap: installing uv into .tools/" >&2
    python3 -m venv .tools
    .tools/bin/pip install --quiet --disable-pip-version-check uv
  fi
  UV=.tools/bin/uv
fi

echo "bootstrap: syncing Python packages from uv.lock" >&2
"$UV" sync --frozen --quiet

if [ "${1:-}" = "test" ]; then
  missing=()
  command -v dovecot >/dev/null 2>&1 || missing+=(dovecot-imapd dovecot-pop3d)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "bootstrap: please install ${missing[*]} (needs root)" >&2
      exit 1
    fi
    echo "bootstrap: installing ${missing[*]} with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
