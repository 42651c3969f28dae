#!/bin/sh
# The browser tests drive Debian's Chromium (/usr/bin/chromium; never a downloaded browser).
# `make test` calls this first: it installs the package when it is missing and this user can
# (root with apt-get); otherwise it says so, and the browser tests skip (or fail under CI=true).
[ -x /usr/bin/chromium ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser tests (apt-get)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null && exit 0
  echo "could not install chromium with apt-get" >&2
else
  echo "/usr/bin/chromium is missing: apt-get install chromium (as root) to run the browser tests" >&2
fi
exit 0
