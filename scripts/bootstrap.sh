#!/usr/bin/env bash
# Installs what mailintake needs on a fresh machine, then leaves the environment in .venv.
#   scripts/bootstrap.sh          Python packages (uv, then the locked workspace)
#   scripts/bootstrap.sh test     also Dovecot, PostgreSQL and Chromium (the console's browser
#                                 tests) with apt-get, when root, and Cyrus IMAP unpacked into
#                                 .tools/mail-servers/ (apt-get download)
#   scripts/bootstrap.sh bench    as test, and mbsync (isync), which the benchmark compares with
#   scripts/bootstrap.sh compat   also Courier and GNU Mailutils, unpacked the same way
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
# Byte-code compiled once here, not at every start: each service is a process of its own, and
# where PYTHONDONTWRITEBYTECODE is set (many CI images) Python would compile every imported
# module again at each start, about 3 s of CPU per service. Up-to-date files are skipped.
.venv/bin/python -m compileall -q -j 0 .venv/lib shared/src services/*/src cli/src devstack/src \
  >/dev/null || echo "bootstrap: byte-code not compiled everywhere (starts are slower)" >&2

if [ "${1:-}" = "test" ] || [ "${1:-}" = "compat" ] || [ "${1:-}" = "bench" ]; then
  missing=()
  command -v dovecot >/dev/null 2>&1 || missing+=(dovecot-imapd dovecot-pop3d)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-dejavu-core)
  # The benchmark runs mbsync beside the pipeline, on the same mailbox.
  [ "${1:-}" = "bench" ] && { command -v mbsync >/dev/null 2>&1 || missing+=(isync); }
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
  # Cyrus, Courier and Mailutils conflict with Dovecot in apt: unpacked, never installed.
  # Without them the tests that need them fail, naming what to do.
  servers=cyrus
  [ "${1:-}" = "compat" ] && servers="courier mailutils"
  .venv/bin/python scripts/mail_servers.py $servers ||
    echo "bootstrap: continuing without $servers: their tests will fail" >&2
fi
