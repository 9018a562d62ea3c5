#!/usr/bin/env bash
# What the browser test (pytest -m browser) needs: Debian's chromium and the Python playwright
# driver. Idempotent and non-interactive; `playwright install` is never used (it downloads its
# own browsers), Playwright drives /usr/bin/chromium through executable_path instead.
set -euo pipefail
export CI=true DEBIAN_FRONTEND=noninteractive

if [ ! -x /usr/bin/chromium ]; then
    apt-get update -q < /dev/null
    apt-get install -y -q chromium < /dev/null
fi

# playwright is a dev dependency: a synced environment has it.
cd "$(dirname "$0")/.."
uv sync -q --frozen < /dev/null
uv run python -c "import playwright.sync_api" < /dev/null
