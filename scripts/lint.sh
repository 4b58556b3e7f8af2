#!/usr/bin/env bash
# Lint: ruff over the whole checkout, mypy over the package as installed (distributor with
# distributor.channels). Settings are in pyproject.toml; exits non-zero when either finds something.
#
# channels/ becomes distributor.channels only when installed ([tool.setuptools.package-dir]), and
# mypy does not follow the editable install's import hook, so it checks a tree of links laid out as
# the wheel is: distributor/ holds a link to each entry of the checkout's distributor/, plus
# channels -> channels/. Its messages name the checkout's files (channels/..., distributor/...).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
python=${PYTHON:-$root/.venv/bin/python}

"$python" -m ruff check .
ruff_status=$?

tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir "$tree/distributor"
for entry in distributor/*; do
    ln -s "$root/$entry" "$tree/distributor/"
done
ln -s "$root/channels" "$tree/distributor/channels"
(cd "$tree" && "$python" -m mypy --config-file "$root/pyproject.toml" --cache-dir "$root/.mypy_cache" \
    -p distributor) | sed -e "s#^distributor/channels/#channels/#"
mypy_status=${PIPESTATUS[0]}

exit $(( ruff_status || mypy_status ))
