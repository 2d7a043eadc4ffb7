#!/usr/bin/env bash
# The official Python SDKs against a real OCA server: installs them into a virtualenv
# under target/ (once), then runs tests/sdk with pytest. Needs the debug binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/sdk-venv
if [ ! -x "$venv/bin/python" ] || ! cmp -s tests/sdk/requirements.txt "$venv/requirements.txt"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
  cp tests/sdk/requirements.txt "$venv/requirements.txt"
fi
export OCA_BIN="$PWD/target/debug/oca" OCA_AGENT_BIN="$PWD/target/debug/oca-agent"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/sdk "$@"
