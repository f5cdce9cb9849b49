#!/usr/bin/env bash
# Installs the Python Bitrix24 clients the emulator is tested against (b24pysdk, fast_bitrix24, at
# the versions pinned in crates/b24-emulator/tests/python/requirements.txt) into a venv under the
# cargo target directory, and prints that venv's python; .ci/run exports it as B24ACT_TEST_PYTHON.
# Only PyPI is contacted. The venv is reused while the requirements are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=crates/b24-emulator/tests/python/requirements.txt
venv="${CARGO_TARGET_DIR:-target}/python-sdks"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]] || ! cmp -s "$requirements" "$venv/requirements.txt"; then
    rm -rf "$venv"
    "$python" -m venv "$venv" >&2
    # Quiet, no prompts, no self-update check, and bounded: a stalled index fails the run.
    timeout 600 "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input \
        --timeout 60 --retries 2 --requirement "$requirements" >&2
    cp "$requirements" "$venv/requirements.txt"
fi
# A relative CARGO_TARGET_DIR is made absolute: the tests run in each crate's directory.
echo "$(cd "$venv" && pwd)/bin/python"
