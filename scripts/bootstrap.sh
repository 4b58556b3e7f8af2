#!/usr/bin/env bash
# Create .venv with the distributor installed in it; `bootstrap.sh test` adds the test tools.
# On a bare Debian or Ubuntu machine python3 has no venv module: install python3-venv when
# running as root, or say what to install.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
        echo "bootstrap: python3 has no venv module; run 'sudo apt-get install python3-venv' first" >&2
        exit 1
    fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
extras=""
[ "${1:-}" = "test" ] && extras="[test]"

# The preview page's browser test drives Debian's Chromium (playwright never downloads one).
if [ "${1:-}" = "test" ] && [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ||
        echo "bootstrap: could not install chromium; the preview browser test will be skipped" >&2
fi

# SpamAssassin scores the email the distributor builds (`spamassassin -L`: local rules, no network).
if [ "${1:-}" = "test" ] && ! command -v spamassassin >/dev/null && [ "$(id -u)" = 0 ] &&
    command -v apt-get >/dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq spamassassin >/dev/null; } ||
        echo "bootstrap: could not install spamassassin; the spam score test will be skipped" >&2
fi

# The DKIM and DNS check tests ask a real DNS server (dnsmasq, started by the tests on a loopback
# port); the bounce mailbox tests read a real IMAP server (dovecot, started by the tests with a
# throwaway config). Only the binaries are needed: the packages' own services are never started.
if [ "${1:-}" = "test" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null &&
    { [ ! -x /usr/sbin/dnsmasq ] || [ ! -x /usr/sbin/dovecot ]; }; then
    { apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsmasq-base dovecot-imapd >/dev/null; } ||
        echo "bootstrap: could not install dnsmasq-base and dovecot-imapd; the DNS and IMAP tests will be skipped" >&2
fi

# The PostgreSQL ledger's tests start a throwaway cluster (initdb and pg_ctl on a loopback port);
# only the server programs are needed: the package's own cluster is never used.
if [ "${1:-}" = "test" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null &&
    ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } ||
        echo "bootstrap: could not install postgresql; the PostgreSQL ledger tests will be skipped" >&2
fi

.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras}"
